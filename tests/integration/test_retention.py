"""Retention drops whole partitions past the window, never an unfinished (waiting, queued or
running) row nor one changed within it (they are put back), in bounded passes; admins prune
through the API, with one audit row. The session database has a partition a day
(tests/conftest.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar.testing import AsyncTestClient
from litestar_saq import SAQPlugin
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts, create_app
from app.config import Settings
from app.db.models import BackgroundJob, JobAction
from app.jobs.ids import new_job_id
from app.jobs.lifecycle import UNFINISHED_STATUSES, JobStatus
from app.jobs.record.dependencies import settle_children
from app.ops.partition_ranges import Partition, boundary_at_or_before, partition_name
from app.ops.partitions import Partitions
from app.ops.retention import Retention
from tests.conftest import HISTORY
from tests.support import eventually

OLD, RECENT = timedelta(days=40), timedelta(days=5)
ENDED = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
async def history(engine: AsyncEngine) -> AsyncIterator[Partitions]:
    """The session database's partitions back, whatever an earlier pass dropped."""
    partitions = Partitions(lambda: engine, width=DAY, ahead=3)
    await partitions.ensure(since=datetime.now(UTC) - HISTORY)
    yield partitions
    await partitions.ensure(since=datetime.now(UTC) - HISTORY)


async def insert_jobs(
    engine: AsyncEngine, *rows: tuple[JobStatus, timedelta] | tuple[JobStatus, timedelta, timedelta]
) -> list[UUID]:
    """Rows in `status` created `age` ago and last changed then (or `changed` ago), written
    with plain INSERTs (no ORM hook rewrites updated_at); ids spell their times."""
    now = datetime.now(UTC)
    values = []
    for status, age, *changed in rows:
        created = now - age - timedelta(minutes=1)
        updated = now - (changed[0] if changed else age)
        values.append(
            {
                "job_id": new_job_id(created),
                "task_name": "trigger_test",
                "queue": "retention",
                "status": status.value,
                "created_at": created,
                "updated_at": updated,
                "completed_at": updated if status in ENDED else None,
            }
        )
    async with engine.begin() as connection:
        await connection.execute(insert(BackgroundJob), values)
    return [value["job_id"] for value in values]


async def statuses_left(engine: AsyncEngine) -> list[tuple[str, int]]:
    """(status, days since its creation) of every row, sorted."""
    now = datetime.now(UTC)
    async with AsyncSession(engine) as session:
        rows = (await session.execute(select(BackgroundJob.status, BackgroundJob.created_at))).all()
    return sorted((status, (now - created).days) for status, created in rows)


def day_of(moment: datetime) -> str:
    """The name of the day's partition that holds `moment`."""
    return partition_name(boundary_at_or_before(moment, DAY))


def retention(parts: Parts, settings: Settings, engine: AsyncEngine, **options: Any) -> Retention:
    partitions = Partitions(lambda: engine, width=DAY, ahead=3, **options.pop("partitions", {}))
    return Retention(
        parts.sessions,
        partitions,
        parts.queue.redis,
        settings.queue_name,
        job_days=options.pop("job_days", 30),
        audit_days=options.pop("audit_days", 0),
        interval=options.pop("interval", 3600),
        max_partitions=options.pop("max_partitions", 100),
        **options,
    )


async def partition_names(partitions: Partitions) -> set[str]:
    return {p.name for p in await partitions.current()}


async def test_partitions_past_the_window_go_with_their_ended_rows_only(
    engine: AsyncEngine, parts: Parts, settings: Settings, history: Partitions
) -> None:
    old_day = day_of(datetime.now(UTC) - OLD - timedelta(minutes=1))
    await insert_jobs(
        engine,
        *[(status, age) for status in JobStatus for age in (OLD, RECENT)],
        (JobStatus.COMPLETE, OLD, RECENT),  # an old job retried and ended within the window
    )
    before = await partition_names(history)
    pruned = await retention(parts, settings, engine).prune_jobs(30)
    assert (pruned.deleted, pruned.complete, pruned.kept) == (3, True, [])
    # Unfinished rows (waiting, queued, running) stay however old, and so does the one
    # changed since; recent ones stay too.
    assert await statuses_left(engine) == sorted(
        [(status.value, 40) for status in UNFINISHED_STATUSES]
        + [("complete", 40)]
        + [(status.value, 5) for status in JobStatus]
    )
    after = await partition_names(history)
    # Every partition past the window was dropped; the old day's rows to keep are in a new
    # partition of that day, which holds only them.
    cutoff = pruned.cutoff
    gone = {p for p in before if p not in after}
    assert old_day in pruned.partitions
    assert old_day in after
    assert len(gone) == len(pruned.partitions) - 1 >= 20
    async with engine.connect() as connection:
        kept = await connection.scalar(text(f"SELECT count(*) FROM {old_day}"))  # noqa: S608
    assert kept == len(UNFINISHED_STATUSES) + 1
    assert all(p.end > cutoff or p.name == old_day for p in await history.current())


async def test_a_pass_stops_at_its_bound_and_the_next_goes_on(
    engine: AsyncEngine, parts: Parts, settings: Settings, history: Partitions
) -> None:
    past = [p for p in await history.current() if p.end <= datetime.now(UTC) - 30 * DAY]
    oldest, newest = past[0], past[-1]
    assert oldest.start is not None
    assert newest.start is not None
    await insert_at(engine, oldest.start + timedelta(hours=1), newest.start + timedelta(hours=1))
    bounded = retention(parts, settings, engine, max_partitions=len(past) - 1)
    first = await bounded.prune_jobs(30)
    assert (first.deleted, first.complete, first.kept) == (1, False, [newest.name])
    assert len(await statuses_left(engine)) == 1  # the oldest went first
    second = await bounded.prune_jobs(30)
    assert (second.deleted, second.complete, second.partitions) == (1, True, [newest.name])
    assert await statuses_left(engine) == []


async def insert_at(engine: AsyncEngine, *created: datetime) -> None:
    """Complete rows created at these times."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(BackgroundJob),
            [
                {"job_id": new_job_id(at), "task_name": "t", "queue": "retention",
                 "status": "complete", "created_at": at, "updated_at": at, "completed_at": at}
                for at in created
            ],
        )  # fmt: skip


async def test_a_kept_row_is_still_the_same_job_for_the_api_and_the_recorder(
    engine: AsyncEngine, parts: Parts, settings: Settings, client: AsyncTestClient[Any]
) -> None:
    (queued,) = await insert_jobs(engine, (JobStatus.QUEUED, OLD))
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD))
    await retention(parts, settings, engine).prune_jobs(30)
    response = await client.get(f"/api/v1/jobs/{queued}")
    assert (response.status_code, response.json()["status"]) == (200, "queued")
    # A listed page and the reconciler's scan still see it.
    listed = (await client.get("/api/v1/jobs", params={"status": "queued"})).json()
    assert [item["job_id"] for item in listed["items"]] == [str(queued)]


async def test_an_old_waiting_row_outlives_its_partition_and_is_still_released(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    """A job that has waited past the window for a parent (an old child of a recent parent)
    is never dropped with its partition: it stays `waiting` with its count and its link, and
    its parent's completion still releases it."""
    (child,) = await insert_jobs(engine, (JobStatus.WAITING, OLD))
    (parent,) = await insert_jobs(engine, (JobStatus.RUNNING, RECENT))
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE background_jobs SET parents_left = 1 WHERE job_id = :child"),
            {"child": child},
        )
        await connection.execute(
            text("UPDATE background_jobs SET has_dependents = true WHERE job_id = :parent"),
            {"parent": parent},
        )
        await connection.execute(
            text("INSERT INTO job_dependencies (parent_id, child_id) VALUES (:parent, :child)"),
            {"parent": parent, "child": child},
        )
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD))

    pruned = await retention(parts, settings, engine).prune_jobs(30)

    assert pruned.deleted == 1
    async with engine.connect() as connection:
        left = (
            await connection.execute(
                text("SELECT status, parents_left FROM background_jobs WHERE job_id = :child"),
                {"child": child},
            )
        ).all()
    assert [tuple(row) for row in left] == [("waiting", 1)]

    async def execute(statement: Any, parameters: Any) -> Any:
        async with engine.begin() as connection:
            return (await connection.execute(statement, parameters)).all()

    settled = await settle_children(execute, {parent: JobStatus.COMPLETE})
    assert [job.job_id for job in settled.released] == [child]


async def test_a_row_that_became_one_to_keep_during_the_detach_is_put_back(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    """The concurrent detach counts the rows to keep before detaching; a write that ends in
    between (an operator's retry of an old job) is caught by the count after it."""

    old_day = day_of(datetime.now(UTC) - OLD - timedelta(minutes=1))

    class LateWrite(Partitions):
        counted: list[str] = []  # noqa: RUF012 - one test's

        async def _count(self, name: str, cutoff: datetime) -> int:
            self.counted.append(name)
            if name == old_day:  # before the detach: the retry had not committed yet
                return 0
            return await super()._count(name, cutoff)

    (queued,) = await insert_jobs(engine, (JobStatus.QUEUED, OLD))
    partitions = LateWrite(lambda: engine, width=DAY, ahead=3)
    dropped = await partitions.drop_past(datetime.now(UTC) - 30 * DAY, 100)
    assert old_day in dropped.partitions
    assert old_day in partitions.counted  # so it was detached concurrently
    assert await statuses_left(engine) == [("queued", 40)]
    async with AsyncSession(engine) as session:
        assert await session.scalar(select(BackgroundJob.job_id)) == queued


@pytest.mark.parametrize(
    "died",
    ["after the detach", "after the rename", "after putting its rows back"],
)
async def test_a_partition_left_detached_by_a_pass_that_died_is_finished(
    engine: AsyncEngine, history: Partitions, died: str
) -> None:
    await insert_jobs(engine, (JobStatus.RUNNING, OLD), (JobStatus.FAILED, OLD))
    (old_day,) = [p for p in await history.current() if p.covers(datetime.now(UTC) - OLD)]
    left_behind = old_day.name if died == "after the detach" else f"{old_day.name}_detached"
    async with engine.begin() as connection:
        await connection.execute(
            text(f"ALTER TABLE background_jobs DETACH PARTITION {old_day.name}")
        )
        if left_behind != old_day.name:
            await connection.execute(text(f"ALTER TABLE {old_day.name} RENAME TO {left_behind}"))
    if died == "after putting its rows back":
        put_back = (
            f"INSERT INTO background_jobs SELECT * FROM {left_behind}"  # noqa: S608
            " WHERE status = 'running'"
        )
        async with engine.begin() as connection:
            await connection.execute(
                text(f"CREATE TABLE {old_day.name} PARTITION OF background_jobs {old_day.bounds()}")
            )
            await connection.execute(text(put_back))
    dropped = await history.drop_past(datetime.now(UTC) - 30 * DAY, 100)
    assert dropped.rows == 1  # the failed row; the running one is in the table, once
    assert await statuses_left(engine) == [("running", 40)]
    async with engine.connect() as connection:
        standalone = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND NOT relispartition"
                " AND relname LIKE :day"
            ),
            {"day": f"{old_day.name}%"},
        )
    assert standalone == 0  # the day's rows to keep are in a partition; nothing else is left


async def test_a_partition_with_too_many_rows_to_keep_waits(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    await insert_jobs(engine, (JobStatus.QUEUED, OLD), (JobStatus.RUNNING, OLD))
    old_day = day_of(datetime.now(UTC) - OLD - timedelta(minutes=1))
    pruned = await retention(parts, settings, engine, partitions={"max_kept": 1}).prune_jobs(30)
    assert (pruned.complete, pruned.kept) == (False, [old_day])
    assert await statuses_left(engine) == [("queued", 40), ("running", 40)]


async def test_the_idempotency_keys_go_with_their_rows(
    engine: AsyncEngine, parts: Parts, settings: Settings
) -> None:
    kept, gone, recent = await insert_jobs(
        engine, (JobStatus.QUEUED, OLD), (JobStatus.COMPLETE, OLD), (JobStatus.COMPLETE, RECENT)
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO job_idempotency_keys (idempotency_key, job_id, created_at)"
                " SELECT 'key-' || job_id, job_id, created_at FROM background_jobs"
            )
        )
    await retention(parts, settings, engine).prune_jobs(30)
    async with engine.connect() as connection:
        left = (await connection.execute(text("SELECT job_id FROM job_idempotency_keys"))).scalars()
        assert set(left) == {kept, recent}
        await connection.execute(text("DELETE FROM job_idempotency_keys"))
        await connection.commit()
    assert gone not in {kept, recent}


async def test_partitions_are_made_ahead_and_for_what_no_partition_covers(
    engine: AsyncEngine, history: Partitions
) -> None:
    now = datetime.now(UTC)
    assert await history.ensure() == []  # already there
    ahead = [p for p in await history.current() if p.start is not None and p.start > now]
    assert len(ahead) == 3
    await history.drop_past(now + 10 * DAY, 100)  # everything: the table holds nothing
    wider = Partitions(lambda: engine, width=timedelta(hours=6), ahead=2)
    made = await wider.ensure(now=now)
    current = await wider.current()
    assert [p.name for p in current] == made
    assert len(made) == 3
    assert current[0].covers(now)
    assert current[-1].end - current[0].start == timedelta(hours=18)
    assert all(a.end == b.start for a, b in itertools.pairwise(current))
    await wider.drop_past(now + 10 * DAY, 100)  # the fixture makes a day's partitions again


async def test_one_worker_prunes_per_interval_and_the_loop_prunes_at_start(
    engine: AsyncEngine, parts: Parts, settings: Settings, history: Partitions
) -> None:
    await insert_jobs(engine, (JobStatus.FAILED, OLD), (JobStatus.QUEUED, OLD))
    first, second = (retention(parts, settings, engine) for _ in range(2))
    await parts.queue.redis.delete(f"saq:{settings.queue_name}:retention-lock")
    assert (await first.run_once())["background_jobs"].deleted == 1
    assert await second.run_once() == {}  # the other worker's lock holds for this interval
    await history.ensure(since=datetime.now(UTC) - HISTORY)  # the dropped days, for new rows
    await insert_jobs(engine, (JobStatus.ABORTED, OLD + DAY))
    assert (await second.run_once(force=True))["background_jobs"].deleted == 1

    await history.ensure(since=datetime.now(UTC) - HISTORY)
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD + 2 * DAY))
    await parts.queue.redis.delete(f"saq:{settings.queue_name}:retention-lock")
    loop = asyncio.create_task(retention(parts, settings, engine).run())

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
    pruned = await retention(parts, settings, engine).prune_audit(365)
    assert pruned.deleted >= 1
    async with AsyncSession(engine) as session:
        kept = (await session.scalars(select(JobAction.at).where(JobAction.actor == actor))).all()
    assert [(now - at).days for at in kept] == [10]


async def test_an_admin_prunes_through_the_api_with_one_audit_row(
    engine: AsyncEngine, client: AsyncTestClient[Any], settings: Settings, history: Partitions
) -> None:
    # Whatever another module's pass left detached (its rows would count here), gone first.
    await history.drop_past(datetime.now(UTC) - timedelta(days=30))
    await history.ensure(since=datetime.now(UTC) - HISTORY)
    await insert_jobs(engine, (JobStatus.COMPLETE, OLD), (JobStatus.FAILED, RECENT))
    response = await client.post("/api/v1/ops/prune", json={"older_than_days": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["deleted"], body["older_than_days"]) == (1, 30)
    old_day = day_of(datetime.now(UTC) - OLD - timedelta(minutes=1))
    assert old_day in body["partitions"] + body["kept"]
    entry = (await client.get("/api/v1/audit", params={"limit": 1})).json()[0]
    assert (entry["action"], entry["count"], entry["outcome"]) == ("prune", 1, "ok")
    assert entry["filter"]["older_than_days"] == 30
    cutoffs = {datetime.fromisoformat(when) for when in (entry["filter"]["cutoff"], body["cutoff"])}
    assert len(cutoffs) == 1
    assert entry["actor"] == "anonymous (auth disabled)"

    # No body: JOB_RETENTION_DAYS; the recent failed row is inside the 30 days.
    while not (again := await client.post("/api/v1/ops/prune")).json()["complete"]:
        assert again.status_code == 200
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


def test_a_partition_spells_its_range() -> None:
    day = datetime(2026, 12, 7, tzinfo=UTC)
    partition = Partition(partition_name(day), day, day + DAY)
    assert partition.name == "background_jobs_p20261207_0000"
    assert partition.bounds() == (
        "FOR VALUES FROM ('2026-12-07T00:00:00+00:00') TO ('2026-12-08T00:00:00+00:00')"
    )
    assert partition.covers(day)
    assert not partition.covers(day + DAY)
