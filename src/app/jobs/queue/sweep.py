"""SAQ's sweep of a queue's active list, minus its race with dequeue (SAQ #277).

A job a worker took a moment ago sits on the active list still `queued` until the worker
marks it active; SAQ's sweep aborts such a job (and may run it twice). Here a job that is not
active is looked at again after a pause, and swept only if it still is not, still on the
active list, in the same attempt; a stuck job (over its timeout or heartbeat) is swept as
before. A job whose finish never reached Redis (its worker stopped while Redis was away) is
still `active` there: it is swept once stuck, and its row, final already, keeps its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from saq.job import Status

from app.jobs.queue.scripts import TAKE_ACTIVE_JOBS

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue.redis import RedisQueue

log = structlog.get_logger(__name__)

# How long a worker may take from taking a job to marking it active.
SECOND_LOOK = 2.0


async def sweep(queue: RedisQueue, lock: int, abort: float) -> list[str]:
    """The ids of the jobs swept (aborted, then retried or finished `aborted`)."""
    if not queue._cleanup_script:
        queue._cleanup_script = queue.redis.register_script(TAKE_ACTIVE_JOBS)
    active = queue.namespace("active")
    id_jobs = await queue._cleanup_script(
        keys=[queue.namespace("sweep"), active], args=[lock], client=queue.redis
    )
    suspects = [(job_id, queue.deserialize(job_bytes)) for job_id, job_bytes in id_jobs]
    if any(job is not None and job.status != Status.ACTIVE for _, job in suspects):
        await asyncio.sleep(SECOND_LOOK)
    swept = []
    for job_id, seen in suspects:
        job = await queue._get_job_by_id(job_id) if seen is not None else None
        if job is None:
            swept.append(job_id)
            async with queue.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(active, 0, job_id)
                pipe.zrem(queue.namespace("incomplete"), job_id)
                await pipe.execute()
            continue
        if job.status == Status.ACTIVE and not job.stuck:
            continue
        if job.status in (Status.COMPLETE, Status.FAILED, Status.ABORTED):
            await queue.redis.lrem(active, 0, job_id)  # type: ignore[misc]  # finished meanwhile
            continue
        if job.status != Status.ACTIVE and await _moved_on(queue, job_id, seen, job):
            continue
        swept.append(job_id)
        log.warning("sweeping job", job_id=job.key, status=str(job.status), stuck=job.stuck)
        await queue.abort(job, error=queue.swept_error_message)
        with contextlib.suppress(asyncio.TimeoutError):
            await job.refresh(abort)
        if job.retryable:
            await queue.retry(job, error=queue.swept_error_message)
        else:
            await queue.finish(job, Status.ABORTED, error=queue.swept_error_message)
    return [job_id.decode("utf-8") for job_id in swept]


async def _moved_on(queue: RedisQueue, job_id: bytes, seen: Job | None, now: Job) -> bool:
    """Off the active list (retried, put back) or taken again since the first look."""
    on_list = await queue.redis.lpos(queue.namespace("active"), job_id.decode())  # type: ignore[misc]
    return on_list is None or seen is None or now.attempts != seen.attempts
