"""`TrackedQueue.sweep` both ways, on real Redis: stale jobs are swept, a job being taken is not.

The sweep is a copy of SAQ's, plus a second look (SAQ #277): a job a worker has just taken
sits on the active list still `queued` until the worker marks it active, and SAQ's sweep
aborts it (and a retry may run it twice). Here such a job is looked at again after a pause
and swept only if it is still not active. These tests catch: the second look removed (or
made without re-reading the job), a sweep that no longer sweeps what is really stale (a job
over its timeout, a job taken by a worker that died before marking it active), and a sweep
whose outcome does not reach the row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from saq.job import Job, Status
from saq.utils import now

from app.jobs.lifecycle import SAQ_REASONS
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import TASKS
from tests.support import WaitForRow, eventually

SWEPT = SAQ_REASONS["swept"]  # SAQ's `swept_error_message`, as the row words it


@tracked_task(timeout=1, attempts=2, retry_delay=0.01, max_retry_delay=0.01)
async def short_timeout(ctx: dict[str, Any]) -> str:
    return "done"


@tracked_task(timeout=1, attempts=1)
async def short_timeout_once(ctx: dict[str, Any]) -> str:
    return "done"


@tracked_task(timeout=60, attempts=1)
async def single_attempt(ctx: dict[str, Any]) -> str:
    return "done"


REGISTRY = TaskRegistry([*TASKS, short_timeout, short_timeout_once, single_attempt])


async def take(queue: TrackedQueue) -> Job:
    """A worker's dequeue: the next job moves to the active list, still `queued`."""
    job = await queue.dequeue(timeout=5)
    assert job is not None, "no job to take"
    assert job.status == Status.QUEUED
    return job


async def mark_active(job: Job, *, worker_id: str, started: int) -> None:
    """What `Worker.process` does right after its dequeue."""
    job.started = started
    job.attempts += 1
    job.worker_id = worker_id
    await job.update(status=Status.ACTIVE)


async def test_jobs_over_their_timeout_and_a_job_never_marked_active_are_swept(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer], wait_for_row: WaitForRow
) -> None:
    """Would catch: a sweep that leaves a dead worker's jobs on the active list (their rows
    would stay `running` or `queued` for ever), or whose retry/abort skips the row."""
    enqueuer = make_enqueuer(REGISTRY)
    retryable_row = await enqueuer.enqueue(short_timeout, {})
    retryable = await take(queue)
    await mark_active(retryable, worker_id="dead-worker", started=now() - 5_000)  # timeout: 1 s
    last_row = await enqueuer.enqueue(short_timeout_once, {})
    last = await take(queue)
    await mark_active(last, worker_id="dead-worker", started=now() - 5_000)
    never_row = await enqueuer.enqueue(single_attempt, {})
    never = await take(queue)  # its worker died before marking it active
    for row in (retryable_row, last_row):
        await wait_for_row(row.job_id, lambda r: r.status == "running")

    swept = await queue.sweep(lock=5, abort=0.1)

    assert sorted(swept) == sorted([retryable.id, last.id, never.id])
    assert await queue.count("active") == 0
    retried = await wait_for_row(retryable_row.job_id, lambda r: r.status == "queued")
    assert [(e["attempt"], e["error"]) for e in retried.errors] == [(1, SWEPT)]
    aborted = await wait_for_row(last_row.job_id, lambda r: r.status == "aborted")
    assert (aborted.error, aborted.attempts) == (SWEPT, 1)
    requeued = await wait_for_row(never_row.job_id, lambda r: len(r.errors) == 1)
    assert (requeued.status, requeued.errors[0]["error"]) == ("queued", SWEPT)
    for job in (retryable, never):  # back on the queue for their next attempt
        again = await queue.job(job.key)
        assert again is not None
        assert again.status == Status.QUEUED


async def test_a_job_marked_active_within_the_second_look_is_not_swept(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer], wait_for_row: WaitForRow
) -> None:
    """Would catch: the second look removed, shortened below a slow worker's pause, or made
    on the copy read before the pause (the running job would be aborted; SAQ #277). The
    job left `queued` on the active list beside it is the control: it must be swept."""
    enqueuer = make_enqueuer(REGISTRY)
    taken_row = await enqueuer.enqueue(single_attempt, {})
    taken = await take(queue)
    abandoned_row = await enqueuer.enqueue(single_attempt, {})
    abandoned = await take(queue)

    sweep = asyncio.create_task(queue.sweep(lock=5, abort=0.1))

    async def sweep_has_read_the_active_list() -> bool:
        # The sweep's lock is set by the same script that reads the list.
        return bool(await queue.redis.exists(queue.namespace("sweep")))

    await eventually(sweep_has_read_the_active_list, what="the sweep's first look")
    await asyncio.sleep(0.5)  # a worker slow to mark the job it took
    await mark_active(taken, worker_id="slow-worker", started=now())
    swept = await sweep

    assert swept == [abandoned.id]
    running = await queue.job(taken.key)
    assert running is not None
    assert (running.status, running.attempts, running.error) == (Status.ACTIVE, 1, None)
    await wait_for_row(taken_row.job_id, lambda r: r.status == "running")
    await queue.finish(taken, Status.COMPLETE, result="done")
    done = await wait_for_row(taken_row.job_id, lambda r: r.status == "complete")
    assert (done.error, done.errors, done.result) == (None, [], "done")
    requeued = await wait_for_row(abandoned_row.job_id, lambda r: len(r.errors) == 1)
    assert (requeued.status, requeued.errors[0]["error"]) == ("queued", SWEPT)
