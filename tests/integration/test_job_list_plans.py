"""At 100,000 rows, every filter of `GET /api/v1/jobs` (and combinations of them) is read by an
index scan in the list's order: `EXPLAIN` shows no sort, no sequential or bitmap scan, and a
count that stops (a `Limit` under it).

The plans are those of the statements the service runs, on a connection opened with the
app's own engine options (`Settings.engine_options`: no sorts, no JIT), on a throwaway
database whose table looks like a busy month: skewed tasks and queues, a rare task and
queue, 1,000 users, 100 projects, 20 workers, a few percent failed or aborted with an error,
and the newest 200 rows still queued or running. The scrape's count of lost workers' jobs
is planned here too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.config import Settings
from app.jobs.reads.queries import count_statement, page_statement, status_breakdown_statement
from app.jobs.reads.search import JobSearch, Position, parse_q
from app.ops.collector import LOST_CAP, LOST_WORKER_JOBS
from tests.support import Servers, create_database, drop_database, migrate
from tests.support.partitions import partition_history
from tests.support.plans import Explain, nodes

ROWS = 100_000

_GENERATE = """
INSERT INTO background_jobs
    (id, job_id, task_name, queue, status, arguments, error, attempts, max_attempts,
     user_id, project_id, worker_id, started_at, completed_at, created_at, updated_at)
SELECT gen_random_uuid(), gen_random_uuid(),
       CASE WHEN h.t < 50 THEN 'send_email' WHEN h.t < 80 THEN 'trigger_test'
            WHEN h.t < 95 THEN 'import_csv' WHEN h.t < 99 THEN 'send_report'
            ELSE 'rare_task' END,
       CASE WHEN h.q < 900 THEN 'default' WHEN h.q < 999 THEN 'reports' ELSE 'rare' END,
       s.status,
       jsonb_build_object('order_id', g % 5000, 'customer', jsonb_build_object('tier', g % 3)),
       CASE WHEN s.status = 'failed' THEN
                CASE WHEN g % 10 = 0 THEN 'TimeoutError: took too long'
                     ELSE 'TestTaskFailure: failed on request' END
            WHEN s.status = 'aborted' THEN 'aborted by API request' END,
       1, 1,
       CASE WHEN g % 10 <> 0 THEN md5('user-' || abs(hashtext('u' || g)) % 1000)::uuid END,
       md5('project-' || abs(hashtext('p' || g)) % 100)::uuid,
       CASE WHEN s.status <> 'queued' THEN 'worker-' || (g % 20) END,
       CASE WHEN s.status <> 'queued' THEN c.created + interval '5 ms' END,
       CASE WHEN s.status IN ('complete', 'failed', 'aborted')
            THEN c.created + interval '105 ms' END,
       c.created, c.created + interval '105 ms'
FROM generate_series(1, CAST(:rows AS integer)) AS g
CROSS JOIN LATERAL (SELECT now() - (g / CAST(:rows AS float8)) * interval '30 days' AS created) AS c
CROSS JOIN LATERAL (SELECT abs(hashtext('t' || g)) % 100 AS t,
                           abs(hashtext('q' || g)) % 1000 AS q) AS h
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN g <= 200 THEN (ARRAY['queued', 'running'])[1 + g % 2]
        WHEN abs(hashtext('s' || g)) % 100 < 88 THEN 'complete'
        WHEN abs(hashtext('s' || g)) % 100 < 95 THEN 'failed'
        ELSE 'aborted'
    END AS status
) AS s
"""


def _md5_uuid(text: str) -> UUID:
    """The uuid PostgreSQL's `md5(text)::uuid` makes."""
    return UUID(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest())


USER = f"user:{_md5_uuid('user-7')}"
PROJECT = f"project:{_md5_uuid('project-7')}"
NOW = datetime.now(UTC)

# Each filter the API offers, as the handler builds it (query parameters or `q`), and
# combinations of them.
SEARCHES: dict[str, JobSearch] = {
    "no filter": JobSearch(),
    "status (common)": parse_q("status:complete"),
    "status (rare)": parse_q("status:queued"),
    "several statuses (rare)": parse_q("status:queued,running"),
    "several statuses": parse_q("status:failed,aborted"),
    "task_name (common)": parse_q("task:send_email"),
    "task_name (rare)": parse_q("task:rare_task"),
    "queue (common)": parse_q("queue:default"),
    "queue (rare)": parse_q("queue:rare"),
    "user_id": parse_q(USER),
    "project_id": parse_q(PROJECT),
    "worker_id": parse_q("worker:worker-3"),
    "created_after": JobSearch(created_after=NOW - timedelta(hours=6)),
    "created_before": JobSearch(created_before=NOW - timedelta(days=10)),
    "a window": JobSearch(
        created_after=NOW - timedelta(days=3), created_before=NOW - timedelta(days=2)
    ),
    "has_error=true": JobSearch(has_error=True),
    "has_error=false": JobSearch(has_error=False),
    "q error:": parse_q('error:"took too long"'),
    "q args": parse_q("args.order_id:123"),
    "q nested args": parse_q("args.customer.tier:2"),
    "q word": parse_q("timeout"),
    "user and status": parse_q(f"{USER} status:failed"),
    "user and a rare status": parse_q(f"{USER} status:queued"),
    "project, task and status": parse_q(f"{PROJECT} task:send_email status:failed"),
    "statuses and user": parse_q(f"status:failed,aborted {USER}"),
    "task and queue (rare)": parse_q("task:rare_task queue:rare"),
    "worker and has_error": JobSearch(has_error=True).and_(parse_q("worker:worker-3")),
    "args and task": parse_q("args.order_id:123 task:send_email"),
    "error and a window": JobSearch(created_after=NOW - timedelta(days=7)).and_(
        parse_q("error:timeout status:failed")
    ),
    "word and user": parse_q(f"send {USER}"),
    "everything": JobSearch(
        created_after=NOW - timedelta(days=20), created_before=NOW, has_error=True
    ).and_(
        parse_q(
            f"status:failed,aborted task:send_email queue:default {USER} {PROJECT} "
            'worker:worker-1 args.customer.tier:1 error:"failed" request'
        )
    ),
}
CURSOR = Position(NOW - timedelta(days=4), UUID(int=2**127))


@pytest.fixture(scope="module")
async def table(servers: Servers) -> AsyncIterator[AsyncEngine]:
    """A throwaway database, migrated, with ROWS rows, vacuumed and analyzed."""
    name = create_database(servers)
    url = servers.database_url(name)
    migrate(url)
    settings = Settings.from_env({"DATABASE_URL": url})
    engine = create_async_engine(settings.database_url, **settings.engine_options())
    await partition_history(engine, timedelta(days=31))  # a partition a day, as in production
    async with engine.begin() as connection:
        await connection.execute(text(_GENERATE), {"rows": ROWS})
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE background_jobs"))
    yield engine
    await engine.dispose()
    drop_database(servers, name)


async def plan_of(
    engine: AsyncEngine, statement: Any, *, analyze: bool = False
) -> list[dict[str, Any]]:
    """The plan's nodes, planned as the service plans a page."""
    async with AsyncSession(engine) as session:
        explained = (await session.execute(Explain(statement, analyze=analyze))).scalar_one()
    document = explained if isinstance(explained, list) else json.loads(explained)
    return list(nodes(document[0]["Plan"]))


def assert_ordered_index_scans(found: list[dict[str, Any]], what: str) -> None:
    kinds = [node["Node Type"] for node in found]
    assert not {"Sort", "Incremental Sort"} & set(kinds), f"{what} sorts: {kinds}"
    assert not {"Seq Scan", "Bitmap Heap Scan"} & set(kinds), (
        f"{what} does not use an index: {kinds}"
    )
    assert {"Index Scan", "Index Only Scan"} & set(kinds), f"{what}: {kinds}"


@pytest.mark.parametrize("after", [None, CURSOR], ids=["first page", "after a cursor"])
@pytest.mark.parametrize("name", list(SEARCHES))
async def test_each_filter_is_an_index_scan_in_order(
    table: AsyncEngine, name: str, after: Position | None
) -> None:
    search = SEARCHES[name]
    found = await plan_of(table, page_statement(search, after=after, limit=50, offset=0))
    assert_ordered_index_scans(found, name)
    if not search.scans_text:
        count = await plan_of(table, count_statement(search))
        assert_ordered_index_scans(count, f"{name} (count)")
        assert "Limit" in [node["Node Type"] for node in count], f"{name}: a full count"


@pytest.mark.parametrize(
    "name", [name for name, search in SEARCHES.items() if not search.scans_text]
)
async def test_the_monitors_status_counts_walk_the_newest_rows_only(
    table: AsyncEngine, name: str
) -> None:
    """One index walk in the list's order that stops at its limit, whatever the statuses."""
    found = await plan_of(table, status_breakdown_statement(SEARCHES[name], 2_000))
    assert_ordered_index_scans(found, f"{name} (status counts)")
    assert "Limit" in [node["Node Type"] for node in found], f"{name}: counts every match"


@pytest.mark.parametrize("name", ["no filter", "several statuses", "q args"])
async def test_an_offset_page_is_an_index_scan_in_order(table: AsyncEngine, name: str) -> None:
    statement = page_statement(SEARCHES[name], after=None, limit=200, offset=10_000)
    assert_ordered_index_scans(await plan_of(table, statement), name)


async def test_several_statuses_are_merged_from_one_index_scan_each(table: AsyncEngine) -> None:
    statement = page_statement(SEARCHES["several statuses (rare)"], after=None, limit=50, offset=0)
    found = await plan_of(table, statement, analyze=True)
    assert "Merge Append" in [node["Node Type"] for node in found]
    async with table.connect() as connection:
        status_index = set((await connection.execute(text(_PARTS_OF_THE_STATUS_INDEX))).scalars())
    scans = [node for node in found if node["Node Type"] == "Index Scan"]
    # Each partition's part of the status index; a partition whose rows are all of those
    # statuses (today's, just after midnight) may be walked in time order instead: what
    # matters is that no partition is read row by row for a few matches.
    used = {node["Index Name"] for node in scans if node["Index Name"] in status_index}
    assert len(used) >= 30
    assert rows_read(found) <= FEW, rows_read(found)


def rows_read(found: list[dict[str, Any]]) -> int:
    """Index entries an `EXPLAIN ANALYZE` plan's scans read, kept or filtered out."""
    scans = [node for node in found if "Index Name" in node]
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in scans
    )


FEW = ROWS // 100  # a walk of the few rows sought, not of a partition (~3,300) or the table


_PARTS_OF_THE_STATUS_INDEX = """
SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'ix_background_jobs_status_created_at_id'::regclass
"""


async def test_the_newest_first_list_reads_the_newest_partitions_only(table: AsyncEngine) -> None:
    """An ordered Append: the partitions in the list's order, each read only if the newer
    ones did not fill the page, so a page costs the same with 30 partitions or 300."""
    statement = page_statement(SEARCHES["no filter"], after=None, limit=50, offset=0)
    async with AsyncSession(table) as session:
        explained = (await session.execute(Explain(statement, analyze=True))).scalar_one()
    found = list(
        nodes((explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"])
    )
    appends = [node for node in found if node["Node Type"] == "Append"]
    assert appends, [node["Node Type"] for node in found]
    scans = [node for node in nodes(appends[0]) if node["Node Type"].startswith("Index")]
    read = [node for node in scans if node["Actual Loops"] > 0]
    assert len(scans) >= 30
    # The empty partitions ahead of now (3), today's, and perhaps yesterday's.
    assert 1 <= len(read) <= 3 + 2, [node["Relation Name"] for node in read]


async def test_the_rows_and_the_planner_statistics_are_there(table: AsyncEngine) -> None:
    # The plans above are only worth something on a table of this size, analyzed.
    async with table.connect() as connection:
        estimate = await connection.scalar(
            text("SELECT reltuples FROM pg_class WHERE relname = 'background_jobs'")
        )
    assert estimate is not None
    assert estimate >= ROWS * 0.9


_BACKLOG = """
INSERT INTO background_jobs (id, job_id, task_name, queue, status, created_at, updated_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'send_email', 'default', 'queued', now(), now()
FROM generate_series(1, 50000)
"""


@pytest.mark.parametrize("backlog", [False, True], ids=["few waiting", "a backlog of 50,000"])
async def test_the_scrapes_count_of_lost_workers_jobs_reads_the_running_rows_only(
    table: AsyncEngine, backlog: bool
) -> None:
    """`bgjobs_lost_worker_jobs` is counted at every scrape: a walk of the status index's
    running entries that stops at its cap, never of the table, of the queue's rows (here
    90 % of it) or of a backlog of queued jobs."""
    params = {"queue": "default", "live": ["worker-1", "worker-2"], "cap": LOST_CAP}
    async with table.connect() as connection:
        transaction = await connection.begin()
        if backlog:  # rolled back with its statistics
            await connection.execute(text(_BACKLOG))
            await connection.execute(text("ANALYZE background_jobs"))
        lost = LOST_WORKER_JOBS.bindparams(**params)
        explained = await connection.execute(Explain(lost, analyze=True))
        document = explained.scalar_one()
        await transaction.rollback()
    plan = document if isinstance(document, list) else json.loads(document)
    found = list(nodes(plan[0]["Plan"]))
    assert_ordered_index_scans(found, "lost workers' jobs")
    assert "Limit" in [node["Node Type"] for node in found]
    async with table.connect() as connection:  # each partition's part of the status index
        status_index = set((await connection.execute(text(_PARTS_OF_THE_STATUS_INDEX))).scalars())
    assert {node.get("Index Name") for node in found} & status_index
    # The running entries only: not the table, the queue's rows or the backlog of 50,000.
    assert rows_read(found) <= FEW, rows_read(found)
