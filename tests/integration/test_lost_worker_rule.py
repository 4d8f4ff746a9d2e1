"""The reconciler's rules for running jobs, both ways, through `Reconciler.run_once` on real
Redis and PostgreSQL: a lost worker's jobs, and the limit on leaving a running row to a live
worker (it must list the job it runs, and never past the task's timeout + WORKER_LOST_AFTER).

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
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.connection import autocommit_sessions
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.running import JOBS
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reconciler import Reconciler
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import TASKS
from tests.support import StartWorker, WaitForRow, eventually
from tests.support.executions import counted, executions
from tests.support.transitions import mark_running

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


# WORKER_LOST_AFTER where a worker must be taken for lost: Redis must have been up that long,
# or the reconciler cannot tell a lost worker from one whose record is yet to come back.
LOST_AFTER = 3


async def redis_up_for(queue: TrackedQueue, seconds: float) -> None:
    async def long_enough() -> bool:
        return float((await queue.redis.info("server"))["uptime_in_seconds"]) >= seconds

    await eventually(long_enough, within=seconds + 5, what=f"redis up for {seconds} s")


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
    await redis_up_for(queue, LOST_AFTER)
    enqueuer = make_enqueuer(REGISTRY)
    recent_row = await enqueuer.enqueue(two_attempts, {})
    recent = await take(queue, worker_id="vanished-worker", touched_seconds_ago=1)
    old_row = await enqueuer.enqueue(two_attempts, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    for row in (recent_row, old_row):
        await wait_for_row(row.job_id, lambda r: r.status == "running")
    assert "vanished-worker" not in await live_workers(queue)

    report = await reconciler(enqueuer, engine, worker_lost_after=LOST_AFTER).run_once(force=True)

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
    await redis_up_for(queue, LOST_AFTER)
    enqueuer = make_enqueuer(REGISTRY)
    retried_row = await enqueuer.enqueue(two_attempts, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    failed_row = await enqueuer.enqueue(one_attempt, {})
    await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    for row in (retried_row, failed_row):
        await wait_for_row(row.job_id, lambda r: r.status == "running")

    report = await reconciler(enqueuer, engine, worker_lost_after=LOST_AFTER).run_once(force=True)

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


# -- a running row whose job Redis lost, on a live worker: left only while the worker runs it --

ALIVE = "alive-worker"


async def running_on(
    jobs: BackgroundJobService, queue: TrackedQueue, row_id: UUID, worker_id: str
) -> None:
    """The row says `worker_id` runs the job (started a second ago); Redis has lost the job."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    assert await mark_running(jobs, row_id, attempt=1, worker_id=worker_id, started_at=started)
    await lose(queue, row_id)


async def lose(queue: TrackedQueue, row_id: UUID) -> None:
    """Redis loses the job, as a restart without persistence would: nothing of it is left."""
    job_id = queue.job_id(str(row_id))
    async with queue.redis.pipeline(transaction=True) as pipe:
        pipe.delete(job_id)
        pipe.zrem(queue.namespace("incomplete"), job_id)
        for where in ("queued", "active"):
            pipe.lrem(queue.namespace(where), 0, job_id)
        await pipe.execute()


async def test_a_job_redis_lost_is_left_to_its_live_worker_while_it_lists_the_job(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    """Would catch: a listing that does not name the jobs its worker runs (the job would be
    enqueued again while it runs, and run twice)."""
    enqueuer = make_enqueuer(REGISTRY)
    worker = await start_worker(REGISTRY)
    release = queue.namespace("release-lost-long-job")
    row = await enqueuer.enqueue(long_job, {"release": release})
    await wait_for_row(row.job_id, lambda r: r.status == "running", what="the long job running")
    await lose(queue, row.job_id)  # Redis lost it; the worker still runs it
    await worker.worker_info()  # its record, listed after the run began

    report = await reconciler(enqueuer, engine, worker_lost_after=0.3).run_once(force=True)

    assert (report.requeued, report.worker_lost, report.dropped) == (0, 0, 0), report
    await queue.redis.set(release, 1)
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert (done.attempts, done.result) == (1, "released")
    assert await executions(queue) == {str(row.job_id): 1}
    await worker.worker_info()
    record = (await queue.info())["workers"][worker.id]
    assert record[JOBS] == [], "a finished job is no longer listed"


async def test_a_job_redis_lost_that_its_live_worker_no_longer_lists_is_enqueued_again(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    """Issue 17, finding 1: the worker's finish failed and Redis restarted empty; the worker
    lives on and will never report. Would catch: the old rule (any live worker: leave it,
    for good) and a listing that is not read."""
    enqueuer = make_enqueuer(REGISTRY)
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    row = await enqueuer.enqueue(two_attempts, {})
    await running_on(jobs, queue, row.job_id, ALIVE)
    # A live worker's record, written after the run began, listing what this process runs:
    # nothing.
    await queue.worker_info(ALIVE, queue_key=queue.name, metadata=None, ttl=60)

    report = await reconciler(enqueuer, engine, worker_lost_after=30).run_once(force=True)

    assert report.requeued == 1, report
    await start_worker(REGISTRY)
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert (done.attempts, done.result) == (2, "done")
    assert await executions(queue) == {str(row.job_id): 1}


async def test_a_worker_that_lists_nothing_keeps_a_lost_job_only_until_timeout_plus_lost_after(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    wait_for_row: WaitForRow,
) -> None:
    """A plain SAQ worker (its record lists nothing) is given the benefit of the doubt until
    the task's timeout (60 s) plus WORKER_LOST_AFTER after the row last changed, not longer.
    Would catch: the bound removed (the row would stay `running` for good)."""
    enqueuer = make_enqueuer(REGISTRY)
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    row = await enqueuer.enqueue(two_attempts, {})
    await running_on(jobs, queue, row.job_id, ALIVE)
    plain = RedisQueue(queue.redis, name=queue.name)
    await plain.worker_info(ALIVE, queue_key=queue.name, metadata=None, ttl=60)
    rule = reconciler(enqueuer, engine, worker_lost_after=30)

    assert (await rule.run_once(force=True)).requeued == 0, "within the bound: left"
    async with engine.begin() as connection:  # the row last changed 91 s ago
        await connection.execute(
            text(
                "UPDATE background_jobs SET updated_at = now() - interval '91 seconds' "
                "WHERE job_id = :job_id"
            ),
            {"job_id": row.job_id},
        )
    assert (await rule.run_once(force=True)).requeued == 1, "past 60 s + 30 s: enqueued again"
    job = await queue.job(str(row.job_id))
    assert job is not None
    assert job.status == Status.QUEUED


async def test_a_running_job_its_live_worker_no_longer_lists_is_retried_saying_so(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    wait_for_row: WaitForRow,
) -> None:
    """Redis holds the job as running on a live worker whose record, written after the run
    began, does not list it (its end never reached Redis, or a late write put it back).
    Would catch: such a job left to wait for SAQ's sweep after its timeout."""
    enqueuer = make_enqueuer(REGISTRY)
    row = await enqueuer.enqueue(two_attempts, {})
    await take(queue, worker_id=ALIVE, touched_seconds_ago=1)
    await wait_for_row(row.job_id, lambda r: r.status == "running")
    await queue.worker_info(ALIVE, queue_key=queue.name, metadata=None, ttl=60)

    report = await reconciler(enqueuer, engine, worker_lost_after=30).run_once(force=True)

    assert (report.dropped, report.worker_lost) == (1, 0), report
    retried = await wait_for_row(row.job_id, lambda r: r.status == "queued")
    assert [e["error"] for e in retried.errors] == [
        f"dropped by its worker: {ALIVE} no longer runs the job; Redis still held it"
    ]


async def test_an_abort_a_lost_worker_will_never_carry_out_ends_the_job_aborted(
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: Callable[..., Enqueuer],
    wait_for_row: WaitForRow,
) -> None:
    """An abort (API, /saq) of a job whose worker has died: SAQ marks it `aborting` and waits
    for that worker, for good. Would catch: the rule limited to `active` jobs (the row would
    stay `running` and the job `aborting`)."""
    await redis_up_for(queue, LOST_AFTER)
    enqueuer = make_enqueuer(REGISTRY)
    row = await enqueuer.enqueue(two_attempts, {})
    job = await take(queue, worker_id="vanished-worker", touched_seconds_ago=60)
    await wait_for_row(row.job_id, lambda r: r.status == "running")
    await queue.abort(job, "cancelled by API request", ttl=1)
    aborting = await queue.job(job.key)
    assert aborting is not None
    assert aborting.status == Status.ABORTING

    async def abort_key_expired() -> bool:  # the time its worker had to end it
        return not await queue.redis.exists(job.abort_id)

    await eventually(abort_key_expired, what="the abort key expired")

    report = await reconciler(enqueuer, engine, worker_lost_after=LOST_AFTER).run_once(force=True)

    assert report.worker_lost == 1, report
    ended = await wait_for_row(row.job_id, lambda r: r.status == "aborted")
    assert ended.error == "cancelled by API request"
    finished = await queue.job(job.key)
    assert finished is not None
    assert finished.status == Status.ABORTED
