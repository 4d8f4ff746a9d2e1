"""The SAQ queue every process uses (API, workers, `/saq`), reporting each transition.

Every status change of a job passes through a Queue method, whichever process makes it:
a worker starting, finishing, failing, retrying or timing out a job; a sweep of a dead
worker's job; an abort from `/saq` or the API; a shutdown re-queue. Reporting from here,
not from worker hooks, is what lets sweeps and aborts reach `background_jobs` too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.db.connection import HeldConnection
from app.jobs.recorder import LifecycleRecorder
from app.jobs.services import Transition

log = structlog.get_logger("app.worker")

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
# SAQ's own script (queue/redis.py): under a lock, every job id on the active list with its data.
_TAKE_ACTIVE_JOBS = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""
# SAQ's enqueue script (queue/redis.py `_enqueue`): a job whose key is unfinished is refused.
_ENQUEUE = """
if not redis.call('ZSCORE', KEYS[1], KEYS[2]) and redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('SET', KEYS[2], ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
    if ARGV[2] == '0' then redis.call('RPUSH', KEYS[3], KEYS[2]) end
    return 1
else
    return nil
end
"""
# How long a worker may take from taking a job to marking it active (see `sweep`).
_SWEEP_SECOND_LOOK = 2.0


class TrackedQueue(RedisQueue):
    """A `RedisQueue` that reports every job transition to a `LifecycleRecorder`."""

    def __init__(
        self,
        *args: Any,
        database_url: str,
        engine_options: dict[str, Any] | None = None,
        flush_interval: float = 0.002,
        busy_flush_interval: float = 0.010,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._database_url = database_url
        self._engine_options = engine_options or {}
        self._flush_intervals = (flush_interval, busy_flush_interval)
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[Any] | None = None
        self._held: HeldConnection | None = None
        self.recorder: LifecycleRecorder | None = None
        self._redis_backoff = 0.0

    @property
    def engine(self) -> AsyncEngine:
        """This process's own engine, made on first use (never at import)."""
        if self._engine is None:
            self._engine = create_async_engine(self._database_url, **self._engine_options)
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[Any]:
        if self._sessions is None:
            self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        return self._sessions

    async def connect(self) -> None:
        await super().connect()
        self._recorder()

    def _recorder(self) -> LifecycleRecorder:
        """The recorder, started on first need (connect() or the first transition)."""
        if self.recorder is None:
            self._held = HeldConnection(lambda: self.engine)
            idle, busy = self._flush_intervals
            self.recorder = LifecycleRecorder(
                self._held, flush_interval=idle, busy_flush_interval=busy
            )
            self.recorder.start()
        return self.recorder

    async def disconnect(self) -> None:
        if self.recorder is not None:
            await self.recorder.close()
            self.recorder = None
        if self._held is not None:
            await self._held.close()
            self._held = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine, self._sessions = None, None
        with contextlib.suppress(*_REDIS_DOWN):  # closing needs no answer from a dead Redis
            await super().disconnect()

    async def enqueue_many(self, jobs: Sequence[Job]) -> list[bool]:
        """Enqueue `jobs` in one pipeline (SAQ's `enqueue`, one round trip for them all).

        For each job, True if it was enqueued, False if its key is still unfinished.
        """
        if not jobs:
            return []
        if self._enqueue_script is None:
            self._enqueue_script = self.redis.register_script(_ENQUEUE)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                job.queue, job.queued, job.status = self, now(), Status.QUEUED
                await self._before_enqueue(job)
                await self._enqueue_script(
                    keys=[self._incomplete, job.id, self._queued, job.abort_id],
                    args=[self.serialize(job), job.scheduled],
                    client=pipe,
                )
            return [bool(accepted) for accepted in await pipe.execute()]

    def _report(self, job: Job) -> None:
        self._recorder().record(Transition.of(job))

    async def _update(self, job: Job, status: Status | None = None, **kwargs: Any) -> None:
        await super()._update(job, status=status, **kwargs)
        if status == Status.ACTIVE:  # a worker starts an attempt; other updates are heartbeats
            self._report(job)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        await super().finish(job, status, result=result, error=error, **kwargs)
        self._report(job)

    async def retry(self, job: Job, error: str | None) -> None:
        await super().retry(job, error)
        self._report(job)

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """SAQ's sweep, minus its race with dequeue (SAQ #277).

        A job a worker took a moment ago sits on the active list still `queued` until the
        worker marks it active; SAQ's sweep aborts such a job (and may run it twice). Here a
        job that is not active is looked at again after a pause, and swept only if it still
        is not; a stuck job (over its timeout or heartbeat) is swept as before.
        """
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_TAKE_ACTIVE_JOBS)
        id_jobs = await self._cleanup_script(
            keys=[self._sweep, self._active], args=[lock], client=self.redis
        )
        suspects = [(job_id, self.deserialize(job_bytes)) for job_id, job_bytes in id_jobs]
        if any(job is not None and job.status != Status.ACTIVE for _, job in suspects):
            await asyncio.sleep(_SWEEP_SECOND_LOOK)
        swept = []
        for job_id, seen in suspects:
            job = await self._get_job_by_id(job_id) if seen is not None else None
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            if job.status == Status.ACTIVE and not job.stuck:
                continue
            if job.status in (Status.COMPLETE, Status.FAILED, Status.ABORTED):
                await self.redis.lrem(self._active, 0, job_id)  # type: ignore[misc]  # finished meanwhile
                continue
            swept.append(job_id)
            log.warning("sweeping job", job_id=job.key, status=str(job.status), stuck=job.stuck)
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(asyncio.TimeoutError):
                await job.refresh(abort)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return [job_id.decode("utf-8") for job_id in swept]

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        # SAQ retries a failed dequeue at once, spinning a core while Redis is down (SAQ #286).
        try:
            job = await super().dequeue(timeout=timeout, poll_interval=poll_interval)
        except _REDIS_DOWN as exc:
            self._redis_backoff = min(max(self._redis_backoff * 2, 0.1), 5.0)
            log.warning("redis unavailable", retry_in_s=self._redis_backoff, error=str(exc))
            await asyncio.sleep(self._redis_backoff)
            return None
        self._redis_backoff = 0.0
        return job
