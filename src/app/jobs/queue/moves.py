"""A worker's moves of its jobs in Redis, in fewer round trips than SAQ makes them.

SAQ takes a job with BLMOVE then GET, marks it active with SET then PUBLISH, finishes it with
MULTI then PUBLISH: six round trips a job. Here the same keys take the same values, SAQ's
pub/sub messages included (`queue.listen`/`apply` rely on them):

- take: one script moves the next jobs from the queued to the active list and returns their
  data, for every caller waiting at that moment at once;
- mark active, heartbeat, progress: SAQ's SET and its PUBLISH;
- finish: one script does SAQ's transaction and its PUBLISH;
- retry: one script does SAQ's transaction and its PUBLISH;
- read (`queue.job`, `Job.refresh`): behind the moves, so a read begun after a move was called
  sees it (SAQ's move is on the wire first; on two connections Redis may still read it later).

All of them ride on the queue's `CommandBatcher`, one ordered channel: the jobs of a worker
that reach the same step together share one round trip, and a later move of a job never
overtakes an earlier one.

A move whose reply was lost (the connection dropped) is sent again, so each must be safe to
run twice. SET and PUBLISH are (a listener may hear the status twice, as after redis-py's own
retry). The scripts carry a sequence number and keep the last one they applied in a guard
hash of their own (`saq:<queue>:moves:<id>`, one per queue object and process, expiring
`GUARD_TTL_MS` after its last move): a script sent again after it ran does nothing, so a
finish cannot undo the next run of a cron job's key, nor a retry re-queue a job another
worker took meanwhile. The take also records the ids it moved there: sent again, it returns
the same jobs (those still on the active list) instead of taking more; a take given up while
its reply is unknown becomes a give-back of whatever it took.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Final
from uuid import uuid4

import structlog
from saq.job import Status

from app.jobs.pipeline import Command, CommandBatcher, Script, Work
from app.jobs.queue.kept import KeptMove
from app.jobs.queue.scripts import FINISH, GIVE_BACK, GUARD_TTL_MS, RETRY, TAKE

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue.redis import RedisQueue

log = structlog.get_logger(__name__)

EMPTY: Final[object] = object()  # `take`: the queue had nothing to hand out
PAUSED: Final[object] = object()  # `take`: the queue's gate is closed (`gate.py`)
UNKNOWN: Final[object] = object()  # `take`: the queue's gate is absent


class _Take:
    """One script call for every caller waiting for a job when it is written; one take in
    flight at a time (the callers who come meanwhile wait for the next), so that the guard
    holds the ids of the only take whose reply may be lost."""

    replays = True
    patient = False  # a taker does not wait out an outage: its worker backs off

    def __init__(self, moves: JobMoves) -> None:
        self._moves = moves
        self._waiting: list[asyncio.Future[Any]] = []
        self.seq = 0

    def commands(self) -> list[Command]:
        if not self.seq:  # first written: the callers waiting now
            self._waiting, self._moves._waiting = self._moves._waiting, []
        self._waiting = [future for future in self._waiting if not future.done()]  # not cancelled
        if not self._waiting:
            self._moves._take_staged = False
            return []
        keys = [self._moves.queued, self._moves.active, *self._moves.gate]
        self.seq, command = self._moves.call(TAKE, keys, len(self._waiting))
        return [command]

    def resolve(self, replies: list[Any]) -> None:
        if isinstance(replies[0], Exception):
            self.fail(replies[0])
            return
        if isinstance(replies[0], bytes):  # the gate, not open: nobody gets a job
            held = UNKNOWN if replies[0] == b"unknown" else PAUSED
            for future in self._waiting:
                if not future.done():
                    future.set_result(held)
            self._staged_next()
            return
        taken = list(zip(replies[0][::2], replies[0][1::2], strict=True))
        waiting = [future for future in self._waiting if not future.done()]
        for future, job in zip(waiting, taken, strict=False):
            future.set_result(job)
        for future in waiting[len(taken) :]:
            future.set_result(EMPTY)
        unclaimed = taken[len(waiting) :]  # their callers were cancelled meanwhile
        if unclaimed:
            self._moves.put_back([job_id for job_id, _ in unclaimed])
        self._staged_next()

    def _staged_next(self) -> None:
        self._moves._take_staged = False
        if self._moves._waiting:  # callers who came while it was on the wire
            self._moves._take_staged = True
            self._moves._batcher.stage(_Take(self._moves))

    def fail(self, error: BaseException) -> None:
        waiting, self._moves._waiting = [*self._waiting, *self._moves._waiting], []
        self._moves._take_staged = False
        for future in waiting:  # those who came meanwhile would meet the same error
            if not future.done():
                future.set_exception(error)

    def expire(self, error: BaseException) -> Work | None:
        self.fail(error)
        # Written, its reply lost: whatever it took goes back (nothing, if it never ran).
        return _GiveBack(self._moves, [], take=self.seq) if self.seq else None


class _GiveBack:
    replays = True
    patient = True

    def __init__(self, moves: JobMoves, job_ids: list[bytes], *, take: int = 0) -> None:
        self._moves, self._job_ids, self._take = moves, job_ids, take

    def commands(self) -> list[Command]:
        keys = [self._moves.queued, self._moves.active]
        return [self._moves.call(GIVE_BACK, keys, self._take, *self._job_ids)[1]]

    def resolve(self, replies: list[Any]) -> None:
        if isinstance(replies[0], Exception):
            self.fail(replies[0])

    def fail(self, error: BaseException) -> None:
        # They stay on the active list, still queued: the sweep gives them back.
        log.warning("taken jobs not put back", count=len(self._job_ids), error=str(error))

    def expire(self, error: BaseException) -> Work | None:
        return self  # until Redis takes it


class JobMoves:
    """Take, mark, finish and retry `queue`'s jobs through `batcher`."""

    def __init__(self, queue: RedisQueue, batcher: CommandBatcher, gate: str | None = None) -> None:
        self._queue = queue
        self._batcher = batcher
        self.gate = [gate] if gate else []  # the take reads it (`gate.py`)
        self.queued = queue.namespace("queued")
        self.active = queue.namespace("active")
        self.incomplete = queue.namespace("incomplete")
        self._guard: tuple[int, str] | None = None  # (the process it belongs to, its key)
        self._seq = 0
        self._waiting: list[asyncio.Future[Any]] = []
        self._take_staged = False
        self._queued_wait: asyncio.Future[Any] | None = None

    @property
    def guard(self) -> str:
        """This process's guard. `workers run --workers N` builds the queue before it forks
        its processes: sharing one guard and counting from the same number, each would take
        the other's takes for its own replays and run their jobs too."""
        if self._guard is None or self._guard[0] != os.getpid():
            self._guard = (os.getpid(), self._queue.namespace(f"moves:{uuid4().hex}"))
            self._seq = 0
        return self._guard[1]

    def call(self, script: Script, keys: list[Any], *args: Any) -> tuple[int, Command]:
        """`script`'s command and its number, taken as it is written: numbers rise in the
        order Redis runs the scripts, which is what lets the guard tell a replay."""
        guard = self.guard
        self._seq += 1
        return self._seq, script.call([*keys, guard], [self._seq, GUARD_TTL_MS, *args])

    async def take(self) -> Job | object | None:
        """The next queued job, moved to the active list (`EMPTY` if there was none, `PAUSED`
        or `UNKNOWN` if the gate let none go; None if its data is gone, as SAQ's dequeue says
        it)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if not self._take_staged:
            self._take_staged = True
            self._batcher.stage(_Take(self))
        try:
            taken = await future
        except asyncio.CancelledError:
            # Cancelled as its job arrived (a worker stopping): the job goes back, not astray.
            handed = future.done() and not future.cancelled() and future.exception() is None
            if handed and future.result() not in (EMPTY, PAUSED, UNKNOWN):
                self.put_back([future.result()[0]])
            raise
        if taken is EMPTY or taken is PAUSED or taken is UNKNOWN:
            return taken  # a sentinel, as declared
        _, data = taken
        job: Job | None = self._queue.deserialize(data)
        return job

    async def wait_for_queued(self, seconds: float) -> bool:
        """Until the queue holds a job (False: `seconds` passed; 0: no limit). Only waits (SAQ's
        BLMOVE would take the job past the gate): a list moved onto itself head to head is left
        as it was. One wait at a time for all of the queue's takers, and a job wakes only the
        one who started it, as SAQ's BLMOVE hands a job to one taker: the others wait again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds if seconds else None
        while True:
            if self._queued_wait is None or self._queued_wait.done():
                left = 0.0 if deadline is None else max(deadline - loop.time(), 0.01)
                wait = self._queue.redis.blmove(self.queued, self.queued, left, "LEFT", "LEFT")  # type: ignore[arg-type]
                self._queued_wait = asyncio.ensure_future(wait)
                self._queued_wait.add_done_callback(_seen)
                return bool(await asyncio.shield(self._queued_wait))
            await asyncio.shield(self._queued_wait)
            if deadline is not None and loop.time() >= deadline:
                return False

    def put_back(self, job_ids: list[bytes]) -> None:
        """Jobs taken for callers that are gone: to the head of the queue, in their order."""
        self._batcher.stage(_GiveBack(self, job_ids))

    async def mark(self, job: Job, *, start: bool = False) -> None:
        """SAQ's `_update`: the job's data, then its status published. A `start` is kept until
        Redis takes it, as a finish is; a heartbeat or a progress is not (its task is told, as
        SAQ's own would be)."""
        commands = [
            ("SET", job.id, self._queue.serialize(job)),
            ("PUBLISH", job.id, Status(job.status).value),
        ]
        if start:
            await self._send(KeptMove(job, lambda: commands))
        else:
            await self._batcher.execute(*commands, replays=True)

    async def finish(self, job: Job) -> None:
        """SAQ's `_finish`: off the active list and the incomplete set, kept for its ttl."""
        keys = [self.active, self.incomplete, job.id]
        args = (job.ttl, self._queue.serialize(job), Status(job.status).value)
        await self._send(KeptMove(job, lambda: [self.call(FINISH, keys, *args)[1]]))

    async def retry(self, job: Job) -> None:
        """SAQ's `_retry`: back on the queue, or in the incomplete set until its delay is over."""
        delay = job.next_retry_delay()
        score = time.time() + delay if delay else job.scheduled
        keys = [self.active, self.queued, self.incomplete, job.id]
        args = (score, "0" if delay else "1", self._queue.serialize(job), Status(job.status).value)
        await self._send(KeptMove(job, lambda: [self.call(RETRY, keys, *args)[1]]))

    async def read(self, job_ids: list[str | bytes]) -> list[bytes | None]:
        """Jobs' data, behind the moves staged before (the channel closed, or another event
        loop's call, a task's `asyncio.run`: on a pool connection, as SAQ reads)."""
        if not job_ids:
            return []
        if self._batcher.loop is not asyncio.get_running_loop():
            return list(await self._queue.redis.mget(job_ids))
        [found] = await self._batcher.execute(("MGET", *job_ids), replays=True, patient=False)
        return list(found)

    async def _send(self, move: KeptMove) -> None:
        self._batcher.stage(move)
        await move.future


def _seen(wait: asyncio.Future[Any]) -> None:
    # The shared wait's error reaches its takers; with none left (a worker stopping), unlogged.
    if not wait.cancelled():
        wait.exception()
