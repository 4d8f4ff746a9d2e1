"""What partitioning `background_jobs` by `created_at` must not change: a job id is unique,
an Idempotency-Key names one job whatever partition holds it, and the statements keyed by
job id (GET one job, the recorder's batch, an operator's retry) read only the partitions
their ids' times fall in; the reconciler's scan merges the partitions' index scans in
order. The session database has a partition a day (tests/conftest.py)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import BackgroundJob
from app.jobs.ids import EARLIEST, LATEST, created_at_of, created_between, new_job_id
from app.jobs.outbox import enqueuer as outbox
from app.jobs.reads.job_rows import ONE_JOB, ONE_OLD_JOB, JobRows
from app.jobs.reads.queries import by_job_ids, unfinished_statement
from app.jobs.record.retry import RETRY_ENDED, retry_parameters
from app.jobs.record.statements import GUARDED_UPDATE
from tests.support.plans import Explain, nodes
from tests.support.rows import count_rows

TRIGGER = "/api/v1/tasks/trigger-test"
PARTITION = "background_jobs_p"
BODY = {"message": "once", "user_id": None, "project_id": None}


def test_a_job_id_spells_its_creation_time_to_the_microsecond() -> None:
    at = datetime(2026, 12, 7, 10, 11, 12, 345678, tzinfo=UTC)
    job_id = new_job_id(at)
    assert job_id.version == 7
    assert created_at_of(job_id) == at
    assert new_job_id(at) != job_id  # random bits tell apart ids of one microsecond
    assert created_at_of(uuid4()) is None
    assert created_between([job_id, new_job_id(at + timedelta(hours=1))]) == (
        at,
        at + timedelta(hours=1),
    )
    assert created_between([job_id, uuid4()]) == (EARLIEST, LATEST)


async def test_postgres_reads_a_job_id_as_the_app_writes_it(engine: AsyncEngine) -> None:
    at = datetime.now(UTC)
    async with engine.connect() as connection:
        spelled = await connection.scalar(
            text("SELECT job_id_created_at(:job_id)"), {"job_id": new_job_id(at)}
        )
        none = await connection.scalar(
            text("SELECT job_id_created_at(:job_id)"), {"job_id": uuid4()}
        )
    assert (spelled, none) == (at, None)


async def test_one_job_id_cannot_be_two_rows_even_at_two_times(engine: AsyncEngine) -> None:
    at = datetime.now(UTC)
    job_id = new_job_id(at)

    def row(created: datetime) -> dict[str, Any]:
        return {"job_id": job_id, "task_name": "t", "queue": "q", "status": "queued",
                "created_at": created, "updated_at": created}  # fmt: skip

    async with engine.begin() as connection:
        await connection.execute(insert(BackgroundJob), [row(at)])
    for other in (at, at - timedelta(days=2)):  # the same partition, another partition
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(insert(BackgroundJob), [row(other)])
    assert await count_rows(engine) == 1


async def test_a_key_whose_job_is_in_an_older_partition_returns_that_job(
    client: AsyncTestClient[Any], engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class TwoDaysAgo(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) - timedelta(days=2)

    headers = {"Idempotency-Key": "order-77"}
    monkeypatch.setattr(outbox, "datetime", TwoDaysAgo)
    first = await client.post(TRIGGER, json=BODY, headers=headers)
    monkeypatch.undo()
    job_id = first.json()["job_id"]
    async with AsyncSession(engine) as session:
        created = await session.scalar(select(BackgroundJob.created_at))
    assert created is not None
    assert created < datetime.now(UTC) - timedelta(days=1)  # in another partition than today's
    again = await client.post(TRIGGER, json=BODY, headers=headers)
    other = await client.post(TRIGGER, json={**BODY, "message": "other"}, headers=headers)
    assert (again.status_code, again.json()["job_id"]) == (202, job_id)
    assert other.status_code == 409
    assert await count_rows(engine) == 1


async def test_a_key_whose_row_is_gone_is_free_again(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    """Retention drops a partition before it deletes its keys: a key in between is free."""
    headers = {"Idempotency-Key": "order-78"}
    first = (await client.post(TRIGGER, json=BODY, headers=headers)).json()["job_id"]
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM background_jobs"))
    again = await client.post(TRIGGER, json=BODY, headers=headers)
    assert again.status_code == 202
    assert again.json()["job_id"] != first
    assert await count_rows(engine) == 1


async def explain(engine: AsyncEngine, statement: Any, parameters: dict[str, Any]) -> list[Any]:
    """The plan's nodes (EXPLAIN without ANALYZE: an UPDATE changes nothing), planned as the
    app's connections plan (no sorts)."""
    async with AsyncSession(engine) as session:
        await session.execute(text("SET enable_sort = off"))
        if isinstance(statement, str):
            found = await session.scalar(text(f"EXPLAIN (FORMAT JSON) {statement}"), parameters)
        else:
            found = await session.scalar(Explain(statement))
    return list(nodes((found if isinstance(found, list) else json.loads(found))[0]["Plan"]))


async def generic_plan(
    engine: AsyncEngine, statement: str, parameters: dict[str, Any]
) -> list[Any]:
    """The plan the recorder's connection runs (`force_generic_plan`: planned once for any
    parameters, app/db/connection.py), as `EXPLAIN EXECUTE` of the prepared statement."""
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    prepared = re.sub(r"(?<!:):([a-z_]+)", numbered, statement)
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        await raw.execute("SET enable_sort = off; SET plan_cache_mode = force_generic_plan")
        await raw.execute(f"PREPARE batch AS {prepared}")
        arguments = ", ".join(_literal(parameters[name]) for name in names)
        found = await raw.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE batch({arguments})")
        await raw.execute("DEALLOCATE batch")
        await connection.rollback()
    return list(nodes((found if isinstance(found, list) else json.loads(found))[0]["Plan"]))


def _literal(value: Any) -> str:
    """A parameter as an SQL literal the prepared statement's parameter type reads."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        items = ",".join("NULL" if v is None else f'"{_text(v)}"' for v in value)
        return f"'{{{items}}}'"
    return f"'{_text(value)}'"


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def partitions_read(found: list[Any]) -> set[str]:
    return {node["Relation Name"] for node in found if "Relation Name" in node}


async def test_get_one_job_reads_one_partition_and_an_old_id_every_one(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        partitions = await connection.scalar(
            text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'background_jobs'::regclass")
        )
    one = await explain(
        engine, select(BackgroundJob).where(*by_job_ids([new_job_id(datetime.now(UTC))])), {}
    )
    assert len(partitions_read(one)) == 1
    old = await explain(engine, select(BackgroundJob).where(*by_job_ids([uuid4()])), {})
    assert len(partitions_read(old)) == partitions > 30


async def prepared_plan(engine: AsyncEngine, statement: str, *arguments: str, mode: str) -> Any:
    """The plan of `statement` (asyncpg's `$n` placeholders) prepared and executed as the
    driver runs it, on a custom plan or on the generic one a prepared statement comes to."""
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        await raw.execute(f"SET plan_cache_mode = {mode}")
        await raw.execute(f"PREPARE one AS {statement}")
        listed = ", ".join(f"'{argument}'" for argument in arguments)
        found = await raw.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE one({listed})")
        await raw.execute("DEALLOCATE one")
        await connection.rollback()
    return list(nodes((found if isinstance(found, list) else json.loads(found))[0]["Plan"]))


async def test_get_one_job_through_the_driver_reads_its_partitions_index_only(
    engine: AsyncEngine,
) -> None:
    """`GET /api/v1/jobs/{id}` (app/jobs/reads/job_rows.py) finds a row in an older partition
    and one whose id spells no time, and reads one partition's index for an id that spells it,
    whichever plan the prepared statement runs."""
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    spelled, unspelled = new_job_id(two_days_ago), uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(BackgroundJob),
            [
                {"job_id": job_id, "task_name": "t", "queue": "q", "status": "queued",
                 "created_at": two_days_ago, "updated_at": two_days_ago}
                for job_id in (spelled, unspelled)
            ],
        )  # fmt: skip
    rows = JobRows(lambda: engine)
    for job_id in (spelled, unspelled):
        found = await rows.one(job_id)
        assert found is not None
        assert found["job_id"] == job_id
    assert await rows.one(new_job_id(two_days_ago)) is None
    at = created_at_of(spelled)
    assert at is not None
    for mode in ("force_custom_plan", "force_generic_plan"):
        one = await prepared_plan(engine, ONE_JOB, str(spelled), at.isoformat(), mode=mode)
        assert len(partitions_read(one)) == 1, (mode, partitions_read(one))
        assert {n["Node Type"] for n in one if "Relation Name" in n} == {"Index Scan"}, one
    every = await prepared_plan(engine, ONE_OLD_JOB, str(unspelled), mode="force_generic_plan")
    assert len(partitions_read(every)) > 30
    assert "Seq Scan" not in {n["Node Type"] for n in every}


async def test_the_recorders_batch_and_a_retry_read_only_their_partitions(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    # Queued rows of one moment (as a bulk insert makes them) around the batch's: the
    # batch's time range holds them all, and the planner knows it.
    created = [now] * 5000
    ids = [new_job_id(at) for at in created]
    async with engine.begin() as connection:
        await connection.execute(
            insert(BackgroundJob),
            [
                {"job_id": job_id, "task_name": "t", "queue": "q", "status": "queued",
                 "created_at": at, "updated_at": at}
                for job_id, at in zip(ids, created, strict=True)
            ],
        )  # fmt: skip
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE background_jobs"))
    ids = ids[:3]
    oldest, newest = created_between(ids)
    batch = {
        "job_ids": ids, "statuses": ["complete"] * 3, "sources": ["queued,running"] * 3,
        "attempts": [1] * 3, "worker_ids": [None] * 3, "started": [None] * 3,
        "completed": [now] * 3, "results": [None] * 3, "errors": [None] * 3,
        "tracebacks": [None] * 3, "new_errors": [None] * 3, "manual_retries": [0] * 3,
        "oldest": oldest, "newest": newest,
    }  # fmt: skip
    updated = await generic_plan(engine, GUARDED_UPDATE.text, batch)
    # The batch's rows found by their ids (probes of the unique index), never by a scan of
    # the batch's time range (which holds every queued and running row of that moment);
    # the other partitions are pruned when the statement starts.
    probes = [
        node for node in updated if node.get("Relation Name", "").startswith("background_jobs_p")
    ]
    assert probes
    assert all(node["Node Type"] == "Index Scan" for node in probes), probes
    kinds = {node["Node Type"] for node in updated}
    assert not {"Seq Scan", "Bitmap Heap Scan"} & kinds, kinds
    assert all("job_id = ANY" in node["Index Cond"] for node in probes), probes
    retried = await explain(engine, RETRY_ENDED.text, retry_parameters(ids, "test"))
    assert len(partitions_read(retried) - {"background_jobs"}) <= 2


async def test_the_reconcilers_scan_merges_each_partitions_index_in_order(
    engine: AsyncEngine,
) -> None:
    statement = unfinished_statement("q", datetime.now(UTC), (datetime.now(UTC), uuid4()), 500)
    found = await explain(engine, statement, {})
    kinds = {node["Node Type"] for node in found}
    assert not {"Sort", "Incremental Sort", "Seq Scan", "Bitmap Heap Scan"} & kinds, kinds
    indexes = {node["Index Name"] for node in found if "Index Name" in node}
    async with engine.connect() as connection:
        partial_index = set(
            (
                await connection.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits AS i"
                        " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent ="
                        " 'ix_background_jobs_unfinished_updated_at_job_id'::regclass"
                    )
                )
            ).scalars()
        )
    assert indexes
    assert indexes <= partial_index
