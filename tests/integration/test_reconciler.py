"""The reconciler repairs what no process could report: lost jobs, lost workers, lost writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import build_parts
from app.config import Settings
from app.db.connection import autocommit_sessions
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reconciler import Reconciler
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow, free_port
from tests.support.executions import counted, executions
from tests.support.transitions import mark_running

MakeEnqueuer = Callable[..., Enqueuer]
# The worker's task, counting its runs: a job enqueued again must run, and only once.
COUNTED = TaskRegistry([counted(trigger_test)])


@tracked_task(timeout=60, attempts=2)
async def two_attempts(ctx: dict[str, Any]) -> None:
    return None


def reconciler(enqueuer: Enqueuer, engine: AsyncEngine) -> Reconciler:
    return Reconciler(
        enqueuer.queue,
        enqueuer,
        autocommit_sessions(lambda: engine),
        interval=1,
        grace=0,
        worker_lost_after=0,
    )


async def test_a_row_accepted_while_redis_was_down_is_enqueued_when_it_is_back(
    session: AsyncSession,
    settings: Settings,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: MakeEnqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    dead = build_parts(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"), REGISTRY)
    outbox = BackgroundJobService(session, enqueuer=dead.enqueuer)
    row = await outbox.enqueue(trigger_test, {"message": "waited for redis"})
    await dead.close()
    assert await queue.job(str(row.job_id)) is None

    report = await reconciler(make_enqueuer(), engine).run_once(force=True)
    assert report.requeued == 1
    await start_worker(COUNTED)
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert done.result == {"message": "waited for redis", "slept_seconds": 0.1}
    assert await executions(queue) == {str(row.job_id): 1}


async def test_a_job_flushed_out_of_redis_runs_again_from_its_row(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: MakeEnqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    enqueuer = make_enqueuer()
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    row = await jobs.enqueue(trigger_test, {"message": "flushed"})
    await queue.redis.flushdb()

    assert (await reconciler(enqueuer, engine).run_once(force=True)).requeued == 1
    await start_worker(COUNTED)
    await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert await executions(queue) == {str(row.job_id): 1}


async def test_a_queue_s_reconciler_leaves_another_queue_s_rows_to_their_own(
    session: AsyncSession,
    settings: Settings,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: MakeEnqueuer,
) -> None:
    """Two queues share the table. Catches: a reconciler that reads every queue's rows (it
    finds the other queue's jobs missing from its own queue and runs them there), and an
    outbox that puts another queue's row on its own."""
    other = build_parts(replace(settings, queue_name=f"{settings.queue_name}-other"), REGISTRY)
    try:
        await other.queue.connect()
        row = await BackgroundJobService(session, enqueuer=other.enqueuer).enqueue(
            trigger_test, {"message": "the other queue's"}
        )
        await queue.redis.flushdb()

        ours = await reconciler(make_enqueuer(), engine).run_once(force=True)
        assert (ours.checked, ours.requeued) == (0, 0)
        # Nor does its outbox put another queue's row on this queue (a released child's).
        assert await make_enqueuer().enqueue_recorded([row]) == [False]
        assert await queue.job(str(row.job_id)) is None
        theirs = await reconciler(other.enqueuer, engine).run_once(force=True)
        assert theirs.requeued == 1
        again = await other.queue.job(str(row.job_id))
        assert again is not None
        assert again.queue.name == other.queue.name
    finally:
        await other.close()


async def test_a_running_row_whose_live_worker_has_not_listed_since_it_began_is_left_alone(
    session: AsyncSession, engine: AsyncEngine, queue: TrackedQueue, make_enqueuer: MakeEnqueuer
) -> None:
    """The worker's record predates the run: it cannot tell yet (test_lost_worker_rule.py has
    the records that can)."""
    enqueuer = make_enqueuer()
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    row = await jobs.enqueue(trigger_test, {"message": "running"})
    await queue.worker_info("alive-worker", queue_key=queue.name, metadata=None, ttl=60)
    await mark_running(
        jobs, row.job_id, attempt=1, worker_id="alive-worker", started_at=datetime.now(UTC)
    )
    await queue.redis.delete(queue.job_id(str(row.job_id)))

    report = await reconciler(enqueuer, engine).run_once(force=True)
    assert (report.requeued, report.worker_lost) == (0, 0)


async def test_a_lost_workers_job_is_retried_when_attempts_remain_else_failed_with_the_reason(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: MakeEnqueuer,
    wait_for_row: WaitForRow,
) -> None:
    enqueuer = make_enqueuer(TaskRegistry([*REGISTRY.functions, two_attempts]))
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    retried = (await jobs.enqueue(two_attempts, {})).job_id
    failed = (await jobs.enqueue(trigger_test, {"message": "no retry left"})).job_id
    for job_id in (retried, failed):
        # What a worker that died mid-job leaves behind: the job active, its worker gone.
        job = await queue.dequeue()
        assert job is not None
        job.attempts += 1
        job.started = job.touched = 1
        job.worker_id = "killed-worker"
        await queue.update(job, status=Status.ACTIVE)
        await wait_for_row(job_id, lambda r: r.status == "running")

    report = await reconciler(enqueuer, engine).run_once(force=True)
    assert report.worker_lost == 2
    requeued = await wait_for_row(retried, lambda r: r.status == "queued")
    assert requeued.error is not None
    assert requeued.error.startswith("worker lost: killed-worker")
    ended = await wait_for_row(failed, lambda r: r.status == "failed")
    assert ended.error is not None
    assert ended.error.startswith("worker lost: killed-worker")


async def test_a_write_lost_with_a_killed_process_is_repaired_from_redis(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    make_enqueuer: MakeEnqueuer,
    wait_for_row: WaitForRow,
) -> None:
    enqueuer = make_enqueuer()
    jobs = BackgroundJobService(session, enqueuer=enqueuer)
    row = await jobs.enqueue(trigger_test, {"message": "done, unrecorded"})
    # A plain RedisQueue finishes the job without reporting: the write that died with it.
    plain = RedisQueue(queue.redis, name=queue.name)
    job = await plain.job(str(row.job_id))
    assert isinstance(job, Job)
    job.attempts = 1
    job.started = 1_700_000_000_000
    await plain.finish(job, Status.COMPLETE, result={"ok": True})

    report = await reconciler(enqueuer, engine).run_once(force=True)
    assert report.repaired == 1
    repaired = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert (repaired.result, repaired.attempts) == ({"ok": True}, 1)
