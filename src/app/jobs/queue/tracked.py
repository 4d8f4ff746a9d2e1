"""The SAQ queue every process uses (API, workers, `/saq`), reporting each transition.

Every status change of a job passes through a Queue method, whichever process makes it:
a worker starting, finishing, failing, retrying or timing out a job; a sweep of a dead
worker's job; an abort from `/saq` or the API; a shutdown re-queue. Reporting from here,
not from worker hooks, is what lets sweeps and aborts reach `background_jobs` too.

Jobs reach Redis by two paths. `enqueue_many` is the outbox's: the rows exist already and
the jobs carry their row ids. Every other enqueue (SAQ's cron schedule, `scheduled=` jobs,
a caller's own key, a plain `queue.enqueue`) passes through `_enqueue`, which gives the job
a row id of its own in `job.meta` and, once Redis took the job, reports it so its row is
created (see `NewRow` in `lifecycle.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq.job import Job, Status
from saq.queue.base import logger as saq_log
from saq.queue.redis import RedisQueue
from saq.utils import now

from app.jobs.ids import new_job_id
from app.jobs.lifecycle import ROW_ID, Transition, UntrackedJobError
from app.jobs.metrics import JobMetrics
from app.jobs.pipeline import CommandBatcher, RedisUnreachable
from app.jobs.queue import floor
from app.jobs.queue.gate import QueueGate
from app.jobs.queue.moves import EMPTY, PAUSED, UNKNOWN, JobMoves
from app.jobs.queue.pauses import SchedulePauses
from app.jobs.queue.running import RunningJobs
from app.jobs.queue.scripts import ENQUEUE, run_by_sha
from app.jobs.queue.sweep import sweep
from app.jobs.record.progress import ProgressUpdate
from app.jobs.record.recorder import LifecycleRecorder

log = structlog.get_logger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class TrackedQueue(RedisQueue):
    """A `RedisQueue` that reports every job transition to its `LifecycleRecorder`.

    Its worker's moves (take, start, heartbeat, finish, retry) leave Redis as SAQ's would, in
    fewer round trips (`JobMoves`), all on one ordered channel of their own (`CommandBatcher`).
    """

    def __init__(
        self,
        *args: Any,
        recorder: LifecycleRecorder,
        metrics: JobMetrics | None = None,
        pauses: SchedulePauses | None = None,
        gate: QueueGate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        self.metrics = metrics  # enqueued jobs and waits; the recorder counts the rest
        self.pauses = pauses  # the cron schedules whose runs are refused
        self.gate = gate  # whether the queue is paused, read where its jobs are taken
        self._redis_backoff = 0.0
        self._floor = floor.Floor(self)
        self._batcher = CommandBatcher(self.redis)
        self._moves = JobMoves(self, self._batcher, gate.key if gate else None)
        self.running = RunningJobs()  # listed in this worker's SAQ record
        if recorder.events is not None:
            recorder.events.send_with(self._batcher)  # the job events ride along

    async def connect(self) -> None:
        await super().connect()
        await self._floor.check()  # refuses a SAQ or a Redis the moves were not made for
        await self._batcher.connect()
        if self.gate is not None:
            await self.gate.read()
        self.recorder.start()

    async def disconnect(self) -> None:
        with contextlib.suppress(TimeoutError):  # a finish or a put-back still on the wire
            await asyncio.wait_for(self._batcher.idle(), 5.0)
        await self._batcher.close()
        if self.gate is not None:
            await self.gate.close()
        await self.recorder.close()  # writes what is pending first
        if self.metrics is not None:
            await self.metrics.close()
        with contextlib.suppress(*_REDIS_DOWN):  # closing needs no answer from a dead Redis
            await super().disconnect()

    async def enqueue_many(self, jobs: Sequence[Job]) -> list[bool]:
        """Enqueue `jobs` in one pipeline (SAQ's `enqueue`, one round trip for them all).

        For each job, True if it was enqueued, False if its key is still unfinished.
        """
        if not jobs:
            return []
        calls = []
        for job in jobs:
            job.queue, job.queued, job.status = self, now(), Status.QUEUED
            await self._before_enqueue(job)
            keys = [self._incomplete, job.id, self._queued, job.abort_id]
            calls.append(ENQUEUE.call(keys, [self.serialize(job), job.scheduled]))
        replies = await run_by_sha(self.redis, ENQUEUE, calls)
        accepted = [bool(taken) for taken in replies]
        if self.metrics is not None:
            for job, taken in zip(jobs, accepted, strict=True):
                if taken:
                    self.metrics.enqueued(job.function)
        return accepted

    async def _enqueue(self, job: Job) -> Job | None:
        """A job the outbox did not make: its own row id, and its row once Redis has it."""
        if self.pauses is not None and await self.pauses.refuses(self, job):
            return None  # a run of a paused schedule: refused like a key still unfinished
        # A copy: a CronJob shares its meta. The id spells the row's created_at (its partition).
        job.meta = {**(job.meta or {}), ROW_ID: str(new_job_id(datetime.now(UTC)))}
        enqueued = await super()._enqueue(job)
        if enqueued is not None:  # None: SAQ refused it, its key is still unfinished
            self._report(enqueued)
            if self.metrics is not None:
                self.metrics.enqueued(enqueued.function)
        return enqueued

    async def jobs(self, job_keys: Iterable[str]) -> list[Job | None]:
        found = await self._moves.read([self.job_id(key) for key in job_keys])
        return [self.deserialize(data) for data in found]

    async def _get_job_by_id(self, job_id: bytes | str) -> Job | None:
        async with self._op_sem:
            [data] = await self._moves.read([job_id])
            return self.deserialize(data)

    def _report(self, job: Job) -> None:
        # Redis has already changed: a failure here must not fail the caller (a worker would
        # then fail the job, or never start it).
        try:
            self.recorder.record(Transition.of(job))
        except UntrackedJobError:
            log.warning("job has no row, not tracked", job_key=job.key, task=job.function)
        except Exception:
            log.exception("could not report a job transition", job_key=job.key)

    async def update(self, job: Job, **kwargs: Any) -> None:
        if kwargs.keys() != {"status"} or kwargs["status"] != Status.ACTIVE:
            await super().update(job, **kwargs)
            return
        # A worker starting the job: nothing here changes it after the caller's own fields,
        # so SAQ's copy of it is not needed.
        job.touched = now()
        job.status = Status.ACTIVE
        self.running.started(job)  # a start that fails is retried or failed, which ends it
        await self._update(job, status=Status.ACTIVE)

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        if status:
            job.status = status
        else:  # SAQ's: a heartbeat or progress keeps the status Redis holds
            stored = await self.job(job.key)
            job.status = stored.status if stored else job.status
        if status == Status.ACTIVE:  # SAQ's SET and PUBLISH, one round trip
            await self._kept(self._moves.mark(job, start=True), job)
        else:
            await self._moves.mark(job)
        if status == Status.ACTIVE:  # a worker starts an attempt; other updates are heartbeats
            self._report(job)
            if self.metrics is not None and job.attempts == 1:
                due_ms = max(job.queued, job.scheduled * 1000)  # SAQ: ms and seconds
                self.metrics.started(job.function, (job.started - due_ms) / 1000)
        elif "progress" in kwargs:  # `job.update(progress=...)` from a task (report_progress)
            update = ProgressUpdate.of(job)
            if update is not None:
                self.recorder.record_progress(update)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        # SAQ's `finish`, its info line built only when it is logged.
        job.status, job.result, job.error, job.completed = status, result, error, now()
        if status == Status.COMPLETE:
            job.progress = 1.0
        with self.running.ending(job):  # whether Redis heard of it or not
            await self._finish(job, status, result=result, error=error, **kwargs)
        if saq_log.isEnabledFor(logging.INFO):
            saq_log.info("Finished %s", job.info(saq_log.isEnabledFor(logging.DEBUG)))
        if status == Status.COMPLETE:
            self.complete += 1
        elif status == Status.FAILED:
            self.failed += 1
        elif status == Status.ABORTED:
            self.aborted += 1
        self._report(job)

    async def _finish(
        self, job: Job, status: Status, *, result: Any = None, error: str | None = None
    ) -> None:
        await self._kept(self._moves.finish(job), job)  # SAQ's MULTI and PUBLISH, one script

    async def retry(self, job: Job, error: str | None) -> None:
        with self.running.ending(job):
            await super().retry(job, error)
        self._report(job)

    async def _retry(self, job: Job, error: str | None) -> None:
        await self._kept(self._moves.retry(job), job)  # SAQ's MULTI and PUBLISH, one script

    async def _kept(self, move: Awaitable[None], job: Job) -> None:
        """A job's start, finish or retry; Redis unreachable past the moves' bound: said once.

        Raising would make SAQ's worker fail or retry an attempt whose outcome is known: the
        row records it as usual, and the move stays queued until Redis takes it.
        """
        try:
            await move
        except RedisUnreachable as exc:  # a logger per call: rare, and tests see it
            structlog.get_logger(__name__).error(
                "job move not in redis yet: the row has it, redis gets it once it answers",
                job_key=job.key, status=str(Status(job.status).value), error=str(exc),
            )  # fmt: skip

    async def write_worker_info(self, worker_id: str, info: Any, ttl: int) -> None:
        # SAQ's worker record, with the jobs this process runs now (`running.py`).
        await super().write_worker_info(worker_id, info | self.running.listing(), ttl)

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        # SAQ finishes a job it takes off the queued list, and a worker one it runs; a job
        # that waits for its time (`scheduled=`, a retry's delay) is on neither list and
        # would stay `aborting` for ever: it ends here. (Looked at first: SAQ's abort takes
        # the job off the active list.)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zscore(self._incomplete, job.id)
            pipe.lpos(self._queued, job.id)
            pipe.lpos(self._active, job.id)
            incomplete, queued, active = await pipe.execute()
        waiting = incomplete is not None and queued is None and active is None
        await super().abort(job, error, ttl)
        if waiting and job.status == Status.ABORTING:
            await self.finish(job, Status.ABORTED, error=error)
            await self.redis.delete(job.abort_id)

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        return await sweep(self, lock, abort)  # SAQ's, minus its race with dequeue (SAQ #277)

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        # SAQ retries a failed dequeue at once, spinning a core while Redis is down (SAQ #286)
        # or refuses the take (out of memory, a read-only replica, a missing command).
        try:
            await self._floor.check()  # unreachable at connect: checked before a take
            job = await self._take(timeout, poll_interval)
        except (*_REDIS_DOWN, ResponseError, floor.FloorError) as exc:
            self._redis_backoff = min(max(self._redis_backoff * 2, 0.1), 5.0)
            down = isinstance(exc, _REDIS_DOWN)
            event = "redis unavailable" if down else "redis refused the take"
            log.warning(event, retry_in_s=self._redis_backoff, error=str(exc))
            await asyncio.sleep(self._redis_backoff)
            return None
        self._redis_backoff = 0.0
        return job

    async def _take(self, timeout: float, poll_interval: float) -> Job | None:
        """The next job in one round trip, shared with the worker's other takers; when the
        queue is empty, a blocking wait for a job, so an idle worker wakes at once."""
        job = await self._take_through_gate()
        if job is EMPTY:
            if self.gate is None:  # SAQ's blocking dequeue
                return await super().dequeue(timeout=timeout, poll_interval=poll_interval)
            if await self._moves.wait_for_queued(timeout):
                job = await self._take_through_gate()
        if job is EMPTY:
            return None
        if job is PAUSED or job is UNKNOWN:
            assert self.gate is not None  # only a gated take answers so
            await self.gate.held(known=job is PAUSED)
            return None
        return job  # type: ignore[return-value]

    async def _take_through_gate(self) -> Job | object | None:
        job = await self._moves.take()  # LMOVE: Redis 6.2 or later, checked at connect
        if job is UNKNOWN and self.gate is not None and await self.gate.restore():
            job = await self._moves.take()  # the gate is written again: as if it had been
        return job
