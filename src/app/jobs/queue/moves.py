"""A worker's moves of its jobs in Redis, in fewer round trips than SAQ makes them.

SAQ takes a job with BLMOVE and then GETs it, marks it active with a SET and then a PUBLISH,
and finishes it with a MULTI and then a PUBLISH: six round trips a job. Here the same keys
take the same values, SAQ's pub/sub messages included (`queue.listen`/`apply` rely on them):

- take: one script moves the next jobs from the queued to the active list and returns their
  data, for every caller waiting at that moment at once;
- mark active: the SET and its PUBLISH, in the next pipeline;
- finish: one script does SAQ's transaction and its PUBLISH;
- retry: SAQ's transaction with its PUBLISH inside (rare: not shared).

All of them ride on the queue's `CommandBatcher`: the jobs of a worker that reach the same
step together share one round trip.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

import structlog
from saq.job import Status

from app.jobs.pipeline import Command, CommandBatcher, Script

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue.redis import RedisQueue

log = structlog.get_logger(__name__)

# KEYS: queued, active. ARGV: how many. Each job moved: its id, then its data (or nil).
_TAKE = Script("""
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    if not id then break end
    taken[#taken + 1] = id
    taken[#taken + 1] = redis.call('GET', id)
end
return taken
""")
# KEYS: queued, active. ARGV: job ids taken but not handed to anyone, in their order.
_PUT_BACK = Script("""
for i = #ARGV, 1, -1 do
    if redis.call('LREM', KEYS[2], 1, ARGV[i]) == 1 then
        redis.call('LPUSH', KEYS[1], ARGV[i])
    end
end
""")
# SAQ's `_finish` transaction, then its notify. KEYS: active, incomplete, the job's id.
# ARGV: its ttl (> 0 expire, 0 keep, < 0 delete), its data, its status.
_FINISH = Script("""
redis.call('LREM', KEYS[1], 1, KEYS[3])
redis.call('ZREM', KEYS[2], KEYS[3])
local ttl = tonumber(ARGV[1])
if ttl > 0 then
    redis.call('SETEX', KEYS[3], ARGV[1], ARGV[2])
elseif ttl == 0 then
    redis.call('SET', KEYS[3], ARGV[2])
else
    redis.call('DEL', KEYS[3])
end
redis.call('PUBLISH', KEYS[3], ARGV[3])
""")

EMPTY: Final[object] = object()  # `take`: the queue had nothing to hand out


class _Take:
    """One script call for every caller waiting for a job when the pipeline is built."""

    def __init__(self, moves: JobMoves) -> None:
        self._moves = moves
        self._waiting: list[asyncio.Future[Any]] = []

    def commands(self) -> list[Command]:
        waiting, self._moves._waiting = self._moves._waiting, []
        self._waiting = [future for future in waiting if not future.done()]  # not cancelled
        self._moves._take_staged = False
        if not self._waiting:
            return []
        return [_TAKE.call([self._moves.queued, self._moves.active], [len(self._waiting)])]

    def resolve(self, replies: list[Any]) -> None:
        if not replies:
            return
        if isinstance(replies[0], Exception):
            self.fail(replies[0])
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

    def fail(self, error: BaseException) -> None:
        for future in self._waiting:
            if not future.done():
                future.set_exception(error)


class _PutBack:
    def __init__(self, moves: JobMoves, job_ids: list[bytes]) -> None:
        self._moves, self._job_ids = moves, job_ids

    def commands(self) -> list[Command]:
        return [_PUT_BACK.call([self._moves.queued, self._moves.active], self._job_ids)]

    def resolve(self, replies: list[Any]) -> None:
        if isinstance(replies[0], Exception):
            self.fail(replies[0])

    def fail(self, error: BaseException) -> None:
        # They stay on the active list, still queued: the sweep gives them back.
        log.warning("taken jobs not put back", count=len(self._job_ids), error=str(error))


class JobMoves:
    """Take, mark active and finish `queue`'s jobs through `batcher`."""

    def __init__(self, queue: RedisQueue, batcher: CommandBatcher) -> None:
        self._queue = queue
        self._batcher = batcher
        self.queued = queue.namespace("queued")
        self.active = queue.namespace("active")
        self.incomplete = queue.namespace("incomplete")
        self._waiting: list[asyncio.Future[Any]] = []
        self._take_staged = False

    async def take(self) -> Job | object | None:
        """The next queued job, moved to the active list (`EMPTY` if there was none; None if
        its data is gone, as SAQ's dequeue says it)."""
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
            if handed and future.result() is not EMPTY:
                self.put_back([future.result()[0]])
            raise
        if taken is EMPTY:
            return EMPTY  # type: ignore[no-any-return]  # the sentinel, as declared
        _, data = taken
        job: Job | None = self._queue.deserialize(data)
        return job

    def put_back(self, job_ids: list[bytes]) -> None:
        """Jobs taken for callers that are gone: to the head of the queue, in their order."""
        self._batcher.stage(_PutBack(self, job_ids))

    async def mark(self, job: Job) -> None:
        """SAQ's `_update` of a job whose status is given: its data, then its status published."""
        await self._batcher.execute(
            ("SET", job.id, self._queue.serialize(job)),
            ("PUBLISH", job.id, Status(job.status).value),
        )

    async def finish(self, job: Job) -> None:
        """SAQ's `_finish`: off the active list and the incomplete set, kept for its ttl."""
        await self._batcher.execute(
            _FINISH.call(
                [self.active, self.incomplete, job.id],
                [job.ttl, self._queue.serialize(job), Status(job.status).value],
            )
        )

    async def retry(self, job: Job) -> None:
        """SAQ's `_retry`: back on the queue, or in the incomplete set until its delay is over."""
        job_id = job.id
        delay = job.next_retry_delay()
        async with self._queue.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self.active, 1, job_id)
            pipe.lrem(self.queued, 1, job_id)
            if delay:
                pipe.zadd(self.incomplete, {job_id: time.time() + delay})
            else:
                pipe.zadd(self.incomplete, {job_id: job.scheduled})
                pipe.rpush(self.queued, job_id)
            pipe.set(job_id, self._queue.serialize(job))
            pipe.publish(job_id, Status(job.status).value)
            await pipe.execute()
