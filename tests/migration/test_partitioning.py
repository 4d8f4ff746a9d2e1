"""Migration 0010_partitioned_jobs on a filled table of the old schema: every row, index and
constraint comes through (the table becomes the first partition without a copy), the
guarantees hold on the new table, and the downgrade gives the old table back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from app.jobs.ids import new_job_id
from tests.support import Servers, create_database, drop_database, migrate

ROWS = 5_000
# Rows of a month, every status, some with an Idempotency-Key, written as 0008 wrote them.
_FILL = """
INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments, error,
    attempts, max_attempts, user_id, project_id, worker_id, idempotency_key,
    request_fingerprint, started_at, completed_at, created_at, updated_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'task-' || g % 7, 'q', s.status,
    jsonb_build_object('n', g), CASE WHEN s.status = 'failed' THEN 'boom' END,
    1, 1, md5('u' || g % 50)::uuid, md5('p' || g % 5)::uuid, 'w-' || g % 3,
    CASE WHEN g % 10 = 0 THEN 'key-' || g END, CASE WHEN g % 10 = 0 THEN md5('f' || g) END,
    c.at + interval '1 s', CASE WHEN s.status IN ('complete', 'failed', 'aborted')
                                THEN c.at + interval '2 s' END,
    c.at, c.at + interval '2 s'
FROM generate_series(1, $1::integer) AS g
CROSS JOIN LATERAL (SELECT now() - g * interval '8 minutes' AS at) AS c
CROSS JOIN LATERAL (SELECT (ARRAY['queued', 'running', 'complete', 'failed', 'aborted'])
                           [1 + g % 5] AS status) AS s
"""
# Every column of every row, in a stable order: what must come through unchanged.
_ALL_ROWS = "SELECT md5(string_agg(b::text, '|' ORDER BY b.id)) FROM background_jobs AS b"
_INDEXES = """
SELECT indexname, regexp_replace(indexdef, ' ON (ONLY )?public\\.\\w+ ', ' ON t ')
FROM pg_indexes WHERE tablename = $1 ORDER BY indexname
"""
_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = $1::regclass ORDER BY conname
"""


@pytest.fixture
async def old_table(servers: Servers) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database at 0008 whose table holds ROWS rows."""
    name = create_database(servers)
    url = servers.database_url(name)
    migrate(url, "0009_schedule_pauses")
    connection = await asyncpg.connect(url)
    await connection.execute(_FILL, ROWS)
    yield url, connection
    await connection.close()
    drop_database(servers, name)


async def shape(connection: asyncpg.Connection, table: str) -> dict[str, Any]:
    return {
        "indexes": [tuple(r) for r in await connection.fetch(_INDEXES, table)],
        "constraints": [tuple(r) for r in await connection.fetch(_CONSTRAINTS, table)],
    }


async def test_a_filled_table_becomes_the_first_partition_and_comes_back(
    old_table: tuple[str, asyncpg.Connection],
) -> None:
    url, connection = old_table
    rows_before = await connection.fetchval(_ALL_ROWS)
    keys_before = await connection.fetch(
        "SELECT idempotency_key, job_id, created_at FROM background_jobs"
        " WHERE idempotency_key IS NOT NULL ORDER BY 1"
    )
    old_shape = await shape(connection, "background_jobs")
    relfilenode = await connection.fetchval(
        "SELECT relfilenode FROM pg_class WHERE relname = 'background_jobs'"
    )

    migrate(url, "0010_partitioned_jobs")

    assert await connection.fetchval(_ALL_ROWS) == rows_before
    # Not a copy: the old table's storage is the first partition's.
    legacy = await connection.fetchrow(
        "SELECT relfilenode, pg_get_expr(relpartbound, oid) AS bound FROM pg_class"
        " WHERE relname = 'background_jobs_legacy'"
    )
    assert legacy["relfilenode"] == relfilenode
    assert legacy["bound"].startswith("FOR VALUES FROM (MINVALUE) TO (")
    assert await connection.fetchval("SELECT count(*) FROM ONLY background_jobs_legacy") == ROWS
    # Partitions ahead of now exist, and a new row goes into one of them.
    ahead = await connection.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'background_jobs'::regclass"
    )
    assert ahead >= 2
    # The Idempotency-Keys moved to their own table, each naming its row.
    keys_after = await connection.fetch(
        "SELECT idempotency_key, job_id, created_at FROM job_idempotency_keys ORDER BY 1"
    )
    assert keys_after == keys_before
    assert len(keys_after) == ROWS // 10
    # job_stats holds the last 8 days' ended jobs, counted as the recorder counts them.
    week = await connection.fetchval("SELECT date_trunc('hour', now() - interval '7 days')")
    ended_recently = await connection.fetchval(
        "SELECT count(*) FROM background_jobs WHERE status IN ('complete', 'failed', 'aborted')"
        " AND created_at >= $1",
        week,
    )
    counted = await connection.fetchval(
        "SELECT sum(complete + failed + aborted) FROM job_stats"
        " WHERE kind = 'hour' AND project_id = $1 AND at >= $2",
        UUID(int=0),
        week,
    )
    assert counted == ended_recently > 500

    new = await shape(connection, "background_jobs")
    indexes = dict(new["indexes"])
    # Every old index is on the partitioned table with its definition (the reconciler's now
    # also ordered by job_id); the unique keys now hold the partition key.
    for name, definition in old_shape["indexes"]:
        if name.startswith("ix_") and name != "ix_background_jobs_unfinished_updated_at":
            assert indexes[name] == definition, name
    assert indexes["pk_background_jobs"].endswith("(id, created_at)")
    assert indexes["uq_background_jobs_job_id_created_at"].endswith("(job_id, created_at)")
    assert (
        "(updated_at, job_id) WHERE" in indexes["ix_background_jobs_unfinished_updated_at_job_id"]
    )
    assert "uq_background_jobs_idempotency_key" not in indexes
    # Each partition index of the legacy table is attached to its parent index: one index
    # per definition, no second copy built.
    attached = await connection.fetchval(
        """
        SELECT count(*) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        JOIN pg_index AS x ON x.indexrelid = c.oid
        WHERE x.indrelid = 'background_jobs_legacy'::regclass
        """
    )
    legacy_indexes = await connection.fetchval(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'background_jobs_legacy'::regclass"
    )
    # ... plus its own unique index on job_id alone: its ids spell no time.
    assert attached == legacy_indexes - 1 == len(indexes)
    assert "UNIQUE" in await connection.fetchval(
        "SELECT pg_get_indexdef('background_jobs_legacy_job_id_key'::regclass)"
    )
    checks = dict(new["constraints"])
    assert (
        "job_id_created_at(job_id) = created_at" in checks["ck_background_jobs_job_id_created_at"]
    )
    assert (
        checks["ck_background_jobs_status"]
        == dict(old_shape["constraints"])["ck_background_jobs_status"]
    )

    # The guarantees on the new table: a job id is unique, a key is claimed once.
    now = datetime.now(UTC)
    job_id = new_job_id(now)
    insert = (
        "INSERT INTO background_jobs (id, job_id, task_name, queue, status, created_at,"
        " updated_at) VALUES (gen_random_uuid(), $1, 't', 'q', 'queued', $2, $2)"
    )
    await connection.execute(insert, job_id, now)
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(insert, job_id, now)
    with pytest.raises(asyncpg.CheckViolationError):  # the same id at another time
        await connection.execute(insert, job_id, now + timedelta(hours=1))
    await connection.execute("DELETE FROM background_jobs WHERE job_id = $1", job_id)
    # An old row's id (no time in it) at another time of the old range: refused too.
    old_id, old_at = await connection.fetchrow(
        "SELECT job_id, created_at FROM background_jobs_legacy LIMIT 1"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(insert, old_id, old_at - timedelta(minutes=1))

    migrate(url, "0009_schedule_pauses", down=True)

    assert await connection.fetchval(_ALL_ROWS) == rows_before
    assert await shape(connection, "background_jobs") == old_shape
    assert not await connection.fetchval("SELECT to_regclass('job_idempotency_keys') IS NOT NULL")


# Each partition's status CHECK and its part of the unfinished rows' index (its name aside:
# PostgreSQL names a partition's index).
_PARTITION_SHAPES = """
SELECT c.relname,
    (SELECT string_agg(pg_get_constraintdef(k.oid), ' ') FROM pg_constraint AS k
     WHERE k.conrelid = c.oid AND k.conname = 'ck_background_jobs_status'),
    (SELECT string_agg(regexp_replace(pg_get_indexdef(x.indexrelid), 'INDEX \\S+ ', ''), ' ')
     FROM pg_index AS x
     WHERE x.indrelid = c.oid AND pg_get_indexdef(x.indexrelid) LIKE '%(updated_at, job_id)%')
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'background_jobs'::regclass ORDER BY 1
"""


async def test_the_later_migrations_change_every_partition_and_come_back(
    old_table: tuple[str, asyncpg.Connection],
) -> None:
    """0011 and 0012 after 0010: the `waiting` status, the dependencies' columns and the
    unfinished rows' index reach every partition (the old table's too), and going back to
    0010 gives its schema back."""
    url, connection = old_table
    migrate(url, "0010_partitioned_jobs")
    partitioned = await shape(connection, "background_jobs")
    partitions_before = await connection.fetch(_PARTITION_SHAPES)

    migrate(url)

    partitions = await connection.fetch(_PARTITION_SHAPES)
    assert len(partitions) == len(partitions_before) >= 3
    for name, check, index in partitions:
        assert "'waiting'" in check, name
        assert "(updated_at, job_id) WHERE" in index, name
        assert "'waiting'" in index, name
    # A waiting row of the old table's range and one of now: each partition takes it.
    old_id = await connection.fetchval("SELECT job_id FROM background_jobs_legacy LIMIT 1")
    await connection.execute(
        "UPDATE background_jobs SET status = 'waiting', parents_left = 1, has_dependents = true"
        " WHERE job_id = $1",
        old_id,
    )
    now = datetime.now(UTC)
    await connection.execute(
        "INSERT INTO background_jobs (id, job_id, task_name, queue, status, parents_left,"
        " created_at, updated_at) VALUES (gen_random_uuid(), $1, 't', 'q', 'waiting', 1, $2, $2)",
        new_job_id(now),
        now,
    )

    migrate(url, "0010_partitioned_jobs", down=True)

    assert await shape(connection, "background_jobs") == partitioned
    assert await connection.fetch(_PARTITION_SHAPES) == partitions_before
    # The waiting rows were aborted (their parents' record is gone).
    assert await connection.fetchval(
        "SELECT count(*) FROM background_jobs WHERE job_id = $1 AND status = 'aborted'", old_id
    )
    assert not await connection.fetchval("SELECT to_regclass('job_dependencies') IS NOT NULL")
