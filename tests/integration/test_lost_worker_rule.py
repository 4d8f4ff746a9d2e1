"""The reconciler's lost-worker rule, both ways, through `Reconciler.run_once` on real Redis.

A running job is taken from its worker only when both halves of the rule hold: its worker
stopped reporting (no SAQ worker record) *and* the job has not changed for
WORKER_LOST_AFTER. Each half alone would run healthy jobs twice: without the worker check,
every long job without heartbeats is retried while it still runs; without the time check, a
job is retried the moment its worker's record lapses (a slow refresh, a short Redis hiccup).
These tests catch the removal of either check, and a rule that no longer retries or fails
the jobs of a worker that really died.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from saq.job import Job, Status
from saq.utils import now
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.connection import autocommit_sessions
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reconciler import Reconciler
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import TASKS
from tests.support import StartWorker, WaitForRow, eventually
from tests.support.executions import counted, executions

LOST_REASON = "worker lost: vanished-worker stopped reporting while running the job"


@tracked_task(timeout=60, attempts=2, retry_delay=0.01, max_retry_delay=0.01)
async def long_job(ctx: dict[str, Any], *, release: str) -> str:
    """A healthy long job without heartbeats: it runs until the test sets `release`."""
    redis = ctx["job"].queue.redis
    for _ in range(600):  # bounded: a broken test ends, the job fails
        if await redis.exists(release):
            return "released"
        await asyncio.sleep(0.05)
    raise TimeoutError("the test never released the job")


@tracked_task(timeout=60, attempts=2, retry_delay=0.01, max_retry_delay=0.01)
async def two_attempts(ctx: dict[str, Any]) -> str:
    return "done"


@tracked_task(timeout=60, attempts=1)
async def one_attempt(ctx: dict[str, Any]) -> str:
    return "done"


REGISTRY = TaskRegistry([*TASKS, counted(long_job), counted(two_attempts), one_attempt])


def reconciler(enqueuer: Enqueuer, engine: AsyncEngine, *, worker_lost_after: float) -> Reconciler:
    return Reconciler(
        enqueuer.queue,
        enqueuer,
        autocommit_sessions(lambda: engine),
        interval=1,
        grace=0,
        worker_lost_after=worker_lost_after,
    )


async def take(queue: TrackedQueue, *, worker_id: str, touched_seconds_ago: float) -> Job:
    """What a worker leaves in Redis while it runs the next queued job: the job on the active
    list, `active`, its attempt counted, last touched `touched_seconds_ago`."""
    job = await queue.dequeue(timeout=5)
    assert job is not None, "no job to take"
    then = now() - int(touched_seconds_ago * 1000)
    job.attempts += 1
    job.worker_id = worker_id
    job.started = then
    await queue.update(job, status=Status.ACTIVE, touched=then)
    return job


async def live_workers(queue: TrackedQueue) -> set[str]:
    return set((await queue.info())["workers"])


async def test_a_live_workers_job_is_left_alone_however_long_ago_it_was_touched(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    """Would catch: the live-worker check removed (a healthy long job retried and run twice)."""
    enqueuer = make_enqueuer(REGISTRY)
    worker = await start_worker(REGISTRY)
    release = queue.namespace("release-long-job")
    row = await enqueuer.enqueue(long_job, {"release": release})
    key = str(row.job_id)
    await wait_for_row(row.job_id, lambda r: r.status == "running", what="the long job running")
    lost_after = 0.3

    async def untouched_for_long() -> Job | None:
        job = await queue.job(key)
        return job if job is not None and now() - job.touched > 2 * lost_after * 1000 else None

    # Only its worker's record now keeps the job from counting as lost.
    job = await eventually(untouched_for_long, what="the job untouched for WORKER_LOST_AFTER")
    assert job.status == Status.ACTIVE
    assert job.worker_id == worker.id
    assert worker.id in await live_workers(queue)

    report = await reconciler(enqueuer, engine, worker_lost_after=lost_after).run_once(force=True)

    assert report.worker_lost == 0, f"a live worker's job was taken: {report}"
    still = await queue.job(key)
    assert still is not None
    assert (still.status, still.attempts, still.worker_id) == (Status.ACTIVE, 1, worker.id)
    await queue.redis.set(release, 1)
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert (done.attempts, done.errors, done.result) == (1, [], "released")
    assert await executions(queue) == {key: 1}


async def test_a_job_touched_within_worker_lost_after_is_left_alone_though_its_worker_is_gone(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    wait_for_row: WaitForRow,
) -> None:
    """Would catch: the time check removed (a job retried as soon as its worker's record
    lapses). The job touched long ago by the same worker, in the same pass, is the control:
    it must be retried, so a pass that takes nothing at all fails too."""
    enqueuer = make_enqueuer(REGISTRY)
    recent_row = await enqueuer.enqueue(two_attempts, {})
    recent = await take(queue, worker_id="vanished-worker", touched_seconds_ago=1)
    old_row = await enqueuer.enqueue(two_attempts, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    for row in (recent_row, old_row):
        await wait_for_row(row.job_id, lambda r: r.status == "running")
    assert "vanished-worker" not in await live_workers(queue)

    report = await reconciler(enqueuer, engine, worker_lost_after=30).run_once(force=True)

    assert report.worker_lost == 1, f"expected only the job untouched for 60 s taken: {report}"
    kept = await queue.job(recent.key)
    assert kept is not None
    assert (kept.status, kept.attempts) == (Status.ACTIVE, 1)
    retried = await wait_for_row(old_row.job_id, lambda r: r.status == "queued")
    assert [e["error"] for e in retried.errors] == [LOST_REASON]
    await queue.recorder.flushed()
    left = await wait_for_row(recent_row.job_id, lambda r: r.status == "running")
    assert (left.attempts, left.error, left.errors) == (1, None, [])


async def test_a_job_whose_worker_is_gone_and_untouched_for_long_is_retried_else_failed(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    """Would catch: a rule that no longer takes a dead worker's jobs (they would stay
    `running` until their timeout, or forever), or that fails a job with attempts left."""
    enqueuer = make_enqueuer(REGISTRY)
    retried_row = await enqueuer.enqueue(two_attempts, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    failed_row = await enqueuer.enqueue(one_attempt, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    for row in (retried_row, failed_row):
        await wait_for_row(row.job_id, lambda r: r.status == "running")

    report = await reconciler(enqueuer, engine, worker_lost_after=30).run_once(force=True)

    assert report.worker_lost == 2, report
    requeued = await wait_for_row(retried_row.job_id, lambda r: r.status == "queued")
    assert requeued.attempts == 1
    assert [(e["attempt"], e["error"]) for e in requeued.errors] == [(1, LOST_REASON)]
    failed = await wait_for_row(failed_row.job_id, lambda r: r.status == "failed")
    assert (failed.error, failed.attempts) == (LOST_REASON, 1)

    # The retry is real: a worker runs the job's second attempt.
    await start_worker(REGISTRY)
    done = await wait_for_row(retried_row.job_id, lambda r: r.status == "complete")
    assert (done.attempts, done.result) == (2, "done")
    assert await executions(queue) == {str(retried_row.job_id): 1}
