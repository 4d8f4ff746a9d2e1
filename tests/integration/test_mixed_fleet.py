"""A plain SAQ producer on the tracked queue (another service, a rolling upgrade): its jobs get
rows when a tracked worker starts them; outbox jobs keep theirs, one row each.

With real processes (a plain SAQ worker beside the tracked ones): tests/chaos/test_mixed_fleet.py.
"""

from __future__ import annotations

from uuid import UUID

from saq.job import Job
from saq.queue.redis import RedisQueue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import BackgroundJob
from app.jobs.lifecycle import FROM_OUTBOX
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow, eventually


async def row_with_key(engine: AsyncEngine, key: str) -> BackgroundJob | None:
    async with AsyncSession(engine) as session:
        rows = list(await session.scalars(select(BackgroundJob).filter_by(job_key=key)))
    assert len(rows) <= 1, rows
    return rows[0] if rows and rows[0].status == "complete" else None


async def test_a_plain_producers_jobs_get_their_rows_when_a_tracked_worker_runs_them(
    engine: AsyncEngine, queue: TrackedQueue, start_worker: StartWorker
) -> None:
    """Would catch: a tracked worker that does not adopt a job with no row (it would run with
    no row at all: a UUID key's events update nothing, another key's are dropped)."""
    plain = RedisQueue(queue.redis, name=queue.name)  # SAQ's own producer, not TrackedQueue
    with_saqs_key = await plain.enqueue("trigger_test", message="from a plain producer")
    with_own_key = await plain.enqueue(
        Job(function="trigger_test", key="nightly:42", kwargs={"message": "own key"})
    )
    assert with_saqs_key is not None
    assert with_own_key is not None
    await start_worker()

    for job, message in ((with_saqs_key, "from a plain producer"), (with_own_key, "own key")):
        key = job.key

        async def complete(key: str = key) -> BackgroundJob | None:
            return await row_with_key(engine, key)

        row = await eventually(complete, what=f"the row of plain job {key}")
        assert (row.task_name, row.attempts, row.worker_id is not None) == ("trigger_test", 1, True)
        assert row.result == {"message": message, "slept_seconds": 0.1}
        assert row.started_at is not None
    saqs = await row_with_key(engine, with_saqs_key.key)
    assert saqs is not None
    assert saqs.job_id == UUID(with_saqs_key.key)  # a UUID key is the row's id, as for the outbox


async def test_an_outbox_job_keeps_its_one_row_marked_or_from_before_the_mark(
    session: AsyncSession,
    engine: AsyncEngine,
    queue: TrackedQueue,
    jobs: BackgroundJobService,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    """An outbox job carries the mark (no adoption, no second row); one enqueued by an older
    version, without it, is adopted under its own row id and still has one row."""
    marked = await jobs.enqueue(trigger_test, {"message": "marked"})
    job = await queue.job(str(marked.job_id))
    assert job is not None
    assert job.meta == {FROM_OUTBOX: True}
    unmarked = await jobs.enqueue(trigger_test, {"message": "from before the mark"})
    old = await queue.job(str(unmarked.job_id))
    assert old is not None
    old.meta = {}
    await queue.redis.set(old.id, queue.serialize(old))
    await start_worker()

    for row_id in (marked.job_id, unmarked.job_id):
        done = await wait_for_row(row_id, lambda r: r.status == "complete")
        assert (done.attempts, done.job_key) == (1, None)
    async with AsyncSession(engine) as fresh:
        total = await fresh.scalar(select(func.count()).select_from(BackgroundJob))
    assert total == 2
