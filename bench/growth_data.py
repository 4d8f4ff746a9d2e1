"""The table `make bench-growth` reads: a month of a busy service's jobs, built on the server.

Rows come from `INSERT ... SELECT generate_series` in chunks (no round trip per row), each
row's values from hashes of its number, so every run builds the same table: created_at
spread evenly over 30 days (newest first), 20 tasks (skewed: the first ones far more
common), 4 queues, 50 projects, 1,000 users (10 % of jobs have none), 20 workers, 88 %
complete / 7 % failed / 5 % aborted with their errors, wait and run times log-spread (5 ms
to 0.3 s, 50 ms to 7 s), and the newest 2,000 still queued or running (a backlog whose size
does not grow with history). Job ids spell their rows' creation time, as the app makes
them, so the table's CHECK holds and lookups prune. The partitions are a day each, as the
workers make them; `job_stats` is filled as the recorder would have filled it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.jobs.record.counting import COMPACT, count_ended
from app.ops.partitions import Partitions
from bench.common import Bench
from bench.job_ids import job_id_sql

TASKS = 20
QUEUES = ("default", "emails", "reports", "imports")
PROJECTS = 50
USERS = 1000
WORKERS = 20
UNFINISHED = 2_000  # the newest rows, queued or running: the same backlog at every size
CHUNK = 500_000
DAYS = 30


def _uniform(salt: str) -> str:
    """A number in [0, 1) from the row's number: the same table at every run."""
    return f"(abs(hashtext('{salt}' || g)) / 2147483648.0)"


_INSERT = f"""
INSERT INTO background_jobs
    (id, job_id, task_name, queue, status, arguments, result, error, attempts, max_attempts,
     user_id, project_id, worker_id, started_at, completed_at, created_at, updated_at)
SELECT gen_random_uuid(), {job_id_sql("c.created", "g")},
    'task_' || lpad(floor({TASKS} * {_uniform("t")} ^ 2)::integer::text, 2, '0'),
    (ARRAY{list(QUEUES)})[1 + floor({len(QUEUES)} * {_uniform("q")} ^ 3)::integer],
    s.status,
    jsonb_build_object('order_id', g % 100000, 'customer', jsonb_build_object('tier', g % 3)),
    CASE WHEN s.status = 'complete' THEN jsonb_build_object('ok', true) END,
    CASE WHEN s.status = 'failed' THEN
            CASE WHEN g % 10 = 0 THEN 'TimeoutError: took too long'
                 ELSE 'ValueError: bad input ' || g % 97 END
         WHEN s.status = 'aborted' THEN 'cancelled by API request' END,
    CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END, 1,
    CASE WHEN g % 10 <> 0 THEN md5('user-' || abs(hashtext('u' || g)) % {USERS})::uuid END,
    md5('project-' || abs(hashtext('p' || g)) % {PROJECTS})::uuid,
    CASE WHEN s.status <> 'queued' THEN 'worker-' || g % {WORKERS} END,
    CASE WHEN s.status <> 'queued' THEN c.created + d.wait END,
    CASE WHEN s.status IN ('complete', 'failed', 'aborted') THEN c.created + d.wait + d.run END,
    c.created,
    CASE WHEN s.status IN ('complete', 'failed', 'aborted') THEN c.created + d.wait + d.run
         ELSE c.created END
FROM generate_series($1::integer, $2::integer) AS g
CROSS JOIN LATERAL (
    SELECT date_trunc('milliseconds', $4::timestamptz - (g / $3::float8) * interval '{DAYS} days')
        AS created
) AS c
CROSS JOIN LATERAL (
    SELECT 0.005 * exp(4 * {_uniform("w")}) * interval '1 second' AS wait,
           0.05 * exp(5 * {_uniform("r")}) * interval '1 second' AS run
) AS d
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN g <= {UNFINISHED} THEN (ARRAY['queued', 'running'])[1 + g % 2]
        WHEN {_uniform("s")} < 0.88 THEN 'complete'
        WHEN {_uniform("s")} < 0.95 THEN 'failed'
        ELSE 'aborted'
    END AS status
) AS s
"""  # noqa: S608 - constants only
_COUNT_RECENT = count_ended(
    """(SELECT task_name, project_id, status, created_at, started_at, completed_at
        FROM background_jobs WHERE created_at >= now() - interval '8 days')"""
)


async def partition_by_day(bench: Bench) -> Partitions:
    """The table emptied, with a partition a day for the month and 3 days ahead."""
    settings = Settings.from_env({"DATABASE_URL": bench.database_url})
    engine = create_async_engine(settings.database_url)
    partitions = Partitions(lambda: engine, width=timedelta(days=1), ahead=3)
    await bench.db.execute(
        "TRUNCATE background_jobs, job_stats, job_stats_pending, job_idempotency_keys"
    )
    for partition in await partitions.current():
        await bench.db.execute(f"DROP TABLE {partition.name}")
    await partitions.ensure(since=datetime.now(UTC) - timedelta(days=DAYS + 1))
    return partitions


async def build(bench: Bench, rows: int) -> dict[str, Any]:
    """Fill the table with `rows` rows and `job_stats` with their counts; vacuum, analyze."""
    partitions = await partition_by_day(bench)
    started = time.monotonic()
    now = datetime.now(UTC)
    async with bench.db.acquire() as connection:
        await connection.execute("SET synchronous_commit = off")  # the load only
        await connection.execute("SET maintenance_work_mem = '256MB'")
        for low in range(1, rows + 1, CHUNK):
            await connection.execute(_INSERT, low, min(low + CHUNK - 1, rows), rows, now)
        loaded = time.monotonic() - started
        await connection.execute(_COUNT_RECENT)
        await connection.execute(COMPACT)
        await connection.execute("VACUUM ANALYZE background_jobs")
        await connection.execute("VACUUM ANALYZE job_stats")
        await connection.execute("CHECKPOINT")  # written out now, not during the runs
        size = await connection.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'background_jobs'::regclass"
        )
    return {
        "rows": rows,
        "partitions": len(await partitions.current()),
        "load_seconds": round(loaded, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "table_bytes": int(size),
        "bytes_per_row": round(int(size) / rows, 1),
    }
