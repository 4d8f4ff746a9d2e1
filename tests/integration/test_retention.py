"""Retention deletes ended rows past the window, oldest first and in bounded batches, and
never a queued or running one; admins prune through the API, with one audit row."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from litestar.testing import AsyncTestClient
from litestar_saq import SAQPlugin
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts, create_app
from app.config import Settings
from app.db.models import BackgroundJob, JobAction
from app.jobs.lifecycle import JobStatus
from app.ops.retention import Retention
from tests.support import eventually

OLD, RECENT = timedelta(days=40), timedelta(days=5)
ENDED = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED)


async def insert_jobs(engine: AsyncEngine, *rows: tuple[JobStatus, timedelta]) -> list[UUID]:
    """Rows in `status` last changed `age` ago (written with plain INSERTs: no ORM hook
    rewrites updated_at)."""
    now = datetime.now(UTC)
    values = [
        {
            "job_id": uuid4(),
            "task_name": "trigger_test",
            "queue": "retention",
            "status": status.value,
            "created_at": now - age - timedelta(minutes=1),
            "updated_at": now - age,
            "completed_at": now - age if status in ENDED else None,
        }
        for status, age in rows
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(BackgroundJob), values)
    return [value["job_id"] for value in values]


async def statuses_left(engine: AsyncEngine) -> list[tuple[str, int]]:
    """(status, age in days) of every row, sorted."""
    now = datetime.now(UTC)
    async with AsyncSession(engine) as session:
        rows = (await session.execute(select(BackgroundJob.status, BackgroundJob.updated_at))).all()
    return sorted((status, (now - updated).days) for status, updated in rows)


def retention(parts: Parts, settings: Settings, **options: Any) -> Retention:
    return Retention(
        parts.sessions,
        parts.queue.redis,
        settings.queue_name,
        job_days=options.pop("job_days", 30),
        audit_days=options.pop("audit_days", 0),
        interval=options.pop("interval", 3600),
        **options,
    )


async def test_only_ended_rows_past_the_window_are_deleted(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    await insert_jobs(engine, *[(status, age) for status in JobStatus for age in (OLD, RECENT)])
    pruned = await retention(parts, settings, batch=2).prune_jobs(30)
    assert (pruned.deleted, pruned.complete) == (3, True)
    # Waiting, queued and running rows stay however old; recent ended ones stay too.
    assert await statuses_left(engine) == sorted(
        [("queued", 40), ("running", 40), ("waiting", 40)]
        + [(status.value, 5) for status in JobStatus]
    )


async def test_a_run_stops_at_its_bound_and_the_next_goes_on(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    await insert_jobs(engine, *[(JobStatus.COMPLETE, OLD + timedelta(days=n)) for n in range(5)])
    bounded = retention(parts, settings, batch=2, max_batches=2)
    first = await bounded.prune_jobs(30)
    assert (first.deleted, first.complete) == (4, False)
    assert await statuses_left(engine) == [("complete", 40)]  # the oldest went first
    second = await bounded.prune_jobs(30)
    assert (second.deleted, second.complete) == (1, True)
    assert await statuses_left(engine) == []


async def test_one_worker_prunes_per_interval_and_the_loop_prunes_at_start(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    await insert_jobs(engine, (JobStatus.FAILED, OLD), (JobStatus.QUEUED, OLD))
    first, second = retention(parts, settings), retention(parts, settings)
    await parts.queue.redis.delete(f"saq:{settings.queue_name}:retention-lock")
    assert (await first.run_once())["background_jobs"].deleted == 1
    assert await second.run_once() == {}  # the other worker's lock holds for this interval
    await insert_jobs(engine, (JobStatus.ABORTED, OLD))
    assert (await second.run_once(force=True))["background_jobs"].deleted == 1

    await insert_jobs(engine, (JobStatus.COMPLETE, OLD))
    await parts.queue.redis.delete(f"saq:{settings.queue_name}:retention-lock")
    loop = asyncio.create_task(retention(parts, settings).run())

    async def only_the_queued_row_left() -> bool:
        return await statuses_left(engine) == [("queued", 40)]

    try:
        await eventually(only_the_queued_row_left, what="the start-up pass")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_audit_rows_past_their_own_window_are_deleted(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    now, actor = datetime.now(UTC), f"retention-test-{uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(
            insert(JobAction),
            [
                {"at": now - timedelta(days=days), "actor": actor, "role": "admin",
                 "action": "cancel", "count": 1, "outcome": "ok"}
                for days in (400, 10)
            ],
        )  # fmt: skip
    pruned = await retention(parts, settings).prune_audit(365)
    assert pruned.deleted >= 1
    async with AsyncSession(engine) as session:
        kept = (await session.scalars(select(JobAction.at).where(JobAction.actor == actor))).all()
    assert [(now - at).days for at in kept] == [10]


async def test_an_admin_prunes_through_the_api_with_one_audit_row(
    engine: AsyncEngine, client: AsyncTestClient[Any], settings: Settings
) -> None:
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD), (JobStatus.FAILED, RECENT))
    response = await client.post("/api/v1/ops/prune", json={"older_than_days": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["deleted"], body["older_than_days"], body["complete"]) == (1, 30, True)
    entry = (await client.get("/api/v1/audit", params={"limit": 1})).json()[0]
    assert (entry["action"], entry["count"], entry["outcome"]) == ("prune", 1, "ok")
    assert entry["filter"]["older_than_days"] == 30
    cutoffs = {datetime.fromisoformat(when) for when in (entry["filter"]["cutoff"], body["cutoff"])}
    assert len(cutoffs) == 1
    assert entry["actor"] == "anonymous (auth disabled)"

    # No body: JOB_RETENTION_DAYS; the recent failed row is inside the 30 days.
    again = await client.post("/api/v1/ops/prune")
    assert (again.status_code, again.json()["deleted"]) == (200, 0)
    assert await statuses_left(engine) == [("failed", 5)]


async def test_with_retention_off_the_api_needs_a_window(
    engine: AsyncEngine, settings: Settings
) -> None:
    async with AsyncTestClient(app=create_app(replace(settings, job_retention_days=0))) as client:
        response = await client.post("/api/v1/ops/prune")
        bad = await client.post("/api/v1/ops/prune", json={"older_than_days": 0})
    assert response.status_code == 400
    assert "JOB_RETENTION_DAYS=0" in response.json()["detail"]
    assert bad.status_code == 400


async def test_a_worker_of_the_app_prunes_when_it_starts(
    engine: AsyncEngine, settings: Settings
) -> None:
    """The worker `litestar workers run` starts from `create_app` runs the retention loop."""
    # (No unfinished row here: the worker's reconciler would take it up.)
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD), (JobStatus.COMPLETE, RECENT))
    app = create_app(settings)
    worker = app.plugins.get(SAQPlugin).get_workers()[settings.queue_name]
    await worker.queue.connect()
    running = asyncio.create_task(worker.start())

    async def only_the_recent_row_left() -> bool:
        return await statuses_left(engine) == [("complete", 5)]

    try:
        await eventually(only_the_recent_row_left, what="the worker's start-up pass")
    finally:
        await worker.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.queue.disconnect()
