"""`GET /api/v1/jobs` on real PostgreSQL: keyset pages, every filter and `q` term, the capped
count, `offset` for older clients, and a 400 that says what is wrong."""

from __future__ import annotations

import base64
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.jobs.reads.job_rows import JobRows
from app.jobs.reads.queries import TOTAL_LIMIT
from app.jobs.reads.search import SCAN_LIMIT, parse_q
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reads.shapes import PAGE_STATEMENTS
from tests.support.rows import insert_rows

JOBS = "/api/v1/jobs"
T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def job_row(n: int, **columns: Any) -> dict[str, Any]:
    """A row created `n` seconds before T0 (unless `created_at` is given)."""
    created = columns.pop("created_at", T0 - timedelta(seconds=n))
    return {
        "id": uuid4(),
        "job_id": uuid4(),
        "task_name": "trigger_test",
        "queue": "background-jobs",
        "status": "complete",
        "arguments": {"n": n},
        "error": None,
        "worker_id": None,
        "user_id": None,
        "project_id": None,
        "created_at": created,
        "updated_at": created,
        **columns,
    }


async def newest_first(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        found = await connection.execute(
            text("SELECT job_id FROM background_jobs ORDER BY created_at DESC, id DESC")
        )
        return [str(job_id) for (job_id,) in found]


async def follow(client: AsyncTestClient[Any], query: str, limit: int) -> list[dict[str, Any]]:
    """Every page of a list, following `next_cursor` to the end."""
    pages, cursor = [], None
    for _ in range(1000):  # bounded: a cursor that never ends fails the test
        after = f"&cursor={cursor}" if cursor else ""
        response = await client.get(f"{JOBS}?limit={limit}{query}{after}")
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never reached the end")


def ids(page: dict[str, Any]) -> list[str]:
    return [item["job_id"] for item in page["items"]]


async def test_pages_follow_the_cursor_to_the_end_newest_first(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    rows = [job_row(n) for n in range(100)]
    rows += [job_row(0, created_at=T0 + timedelta(seconds=5)) for _ in range(30)]  # one moment
    await insert_rows(engine, rows)
    pages = await follow(client, "", limit=40)
    assert [len(page["items"]) for page in pages] == [40, 40, 40, 10]
    assert [job for page in pages for job in ids(page)] == await newest_first(engine)
    assert all((page["total"], page["total_is_exact"]) == (130, True) for page in pages)


async def test_a_page_that_ends_the_list_has_no_next_cursor(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    await insert_rows(engine, [job_row(n) for n in range(80)])
    pages = await follow(client, "", limit=40)
    assert [len(page["items"]) for page in pages] == [40, 40]
    assert pages[0]["next_cursor"] is not None
    empty = (await client.get(f"{JOBS}?status=failed")).json()
    assert (empty["items"], empty["next_cursor"], empty["total"]) == ([], None, 0)


async def test_rows_added_while_paging_neither_repeat_nor_skip_rows(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    await insert_rows(engine, [job_row(n) for n in range(100)])
    before = await newest_first(engine)
    first = (await client.get(f"{JOBS}?limit=30")).json()
    await insert_rows(engine, [job_row(-n - 1) for n in range(20)])  # newer than every page
    rest = await follow(client, f"&cursor={first['next_cursor']}", limit=30)
    seen = ids(first) + [job for page in rest for job in ids(page)]
    assert seen == before  # no repeat, no gap, the newer rows wait for a new first page
    assert (await client.get(f"{JOBS}?limit=30")).json()["total"] == 120


async def test_offset_still_pages_and_is_capped(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    await insert_rows(engine, [job_row(n) for n in range(5)])
    order = await newest_first(engine)
    page = (await client.get(f"{JOBS}?limit=2&offset=1")).json()
    assert (ids(page), page["offset"], page["total"]) == (order[1:3], 1, 5)
    assert (await client.get(f"{JOBS}?offset=10000")).json()["items"] == []
    assert (await client.get(f"{JOBS}?offset=10001")).status_code == 400


async def test_the_total_is_counted_up_to_a_thousand(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO background_jobs (id, job_id, task_name, queue, status, created_at,"
                " updated_at) SELECT gen_random_uuid(), gen_random_uuid(), 'trigger_test', 'q',"
                " CASE WHEN g <= 7 THEN 'failed' ELSE 'complete' END, now() - g * interval '1s',"
                " now() FROM generate_series(1, :n) AS g"
            ),
            {"n": TOTAL_LIMIT + 5},
        )
    page = (await client.get(f"{JOBS}?limit=1")).json()
    assert (page["total"], page["total_is_exact"]) == (TOTAL_LIMIT, False)
    failed = (await client.get(f"{JOBS}?status=failed&limit=1")).json()
    assert (failed["total"], failed["total_is_exact"]) == (7, True)


async def test_each_filter_picks_its_rows(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    user, project = uuid4(), uuid4()
    rows = [
        job_row(1, status="failed", error="TimeoutError: took too long", worker_id="w-1"),
        job_row(2, status="aborted", error="cancelled", task_name="send_email", user_id=user),
        job_row(3, status="queued", queue="emails", project_id=project),
        job_row(4, status="running", worker_id="w-2", user_id=user, project_id=project),
        job_row(5, created_at=T0 - timedelta(days=2)),
    ]
    await insert_rows(engine, rows)
    by_n = {row["arguments"]["n"]: str(row["job_id"]) for row in rows}

    async def found(query: str) -> set[int]:
        response = await client.get(f"{JOBS}?{query}")
        assert response.status_code == 200, response.text
        return {n for n, job_id in by_n.items() if job_id in ids(response.json())}

    assert await found("status=failed&status=aborted") == {1, 2}
    assert await found("status=failed,aborted,queued") == {1, 2, 3}
    assert await found("task_name=send_email") == {2}
    assert await found("queue=emails") == {3}
    assert await found("worker_id=w-2") == {4}
    assert await found(f"user_id={user}") == {2, 4}
    assert await found(f"project_id={project}") == {3, 4}
    assert await found(f"user_id={user}&project_id={project}") == {4}
    after, before = (T0 - timedelta(days=1)).isoformat(), (T0 - timedelta(seconds=2)).isoformat()
    assert await found(f"created_after={after.replace('+', '%2B')}") == {1, 2, 3, 4}
    assert await found(f"created_before={before.replace('+', '%2B')}") == {3, 4, 5}
    assert await found("has_error=true") == {1, 2}
    assert await found("has_error=false") == {3, 4, 5}


async def test_q_terms_and_parameters_all_apply(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    user = uuid4()
    rows = [
        job_row(1, arguments={"order_id": 123, "customer": {"tier": 2}, "vip": True}),
        job_row(2, arguments={"order_id": "123"}, task_name="send_email", user_id=user),
        job_row(3, status="failed", error="TimeoutError: Took too long", worker_id="w:1"),
        job_row(4, status="failed", error="100% _done_", queue="mail box"),
    ]
    await insert_rows(engine, rows)
    by_n = {n: str(row["job_id"]) for n, row in enumerate(rows, start=1)}

    async def found(q: str, extra: dict[str, str] | None = None) -> set[int]:
        response = await client.get(JOBS, params={"q": q, **(extra or {})})
        assert response.status_code == 200, response.text
        return {n for n, job_id in by_n.items() if job_id in ids(response.json())}

    assert await found("args.order_id:123") == {1}  # a number, not the string "123"
    assert await found('args.order_id:"123"') == {2}
    assert await found("args.customer.tier:2 args.vip:true") == {1}
    assert await found("args.customer.tier:3") == set()
    assert await found(f"user:{user} task:send_email") == {2}
    assert await found('error:"took too"') == {3}  # any case
    assert await found("error:100%") == {4}  # % and _ are plain characters
    assert await found('worker:w:1 status:failed queue:"mail box"') == set()
    assert await found('queue:"mail box" status:failed,aborted') == {4}
    assert await found("send") == {2}  # the start of a task's name
    assert await found("TIMEOUT") == {3}  # or a text in the error
    assert await found("status:failed", {"status": "complete"}) == set()
    assert await found("task:send_email", {"user_id": str(user)}) == {2}


async def test_a_text_search_looks_at_ten_thousand_rows_a_page_and_its_cursor_goes_on(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments,"
                " created_at, updated_at) SELECT gen_random_uuid(), gen_random_uuid(),"
                " 'trigger_test', 'q', 'complete', jsonb_build_object('order_id',"
                " CASE WHEN g > :n - 3 THEN 7 ELSE 1 END), now() - g * interval '1s', now()"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": SCAN_LIMIT + 10},
        )
    first = (await client.get(JOBS, params={"q": "args.order_id:7", "limit": 2})).json()
    assert (first["items"], first["total"], first["total_is_exact"]) == ([], None, False)
    assert first["next_cursor"] is not None  # it stopped after SCAN_LIMIT rows
    rest = await follow(client, f"&q=args.order_id:7&cursor={first['next_cursor']}", limit=2)
    found = [item["arguments"]["order_id"] for page in rest for item in page["items"]]
    assert found == [7, 7, 7]
    assert rest[-1]["next_cursor"] is None


BAD: list[tuple[str, str, str]] = [
    ("status=exploded", "status", "'exploded' is not a job status"),
    ("status=failed,", "status", "'' is not a job status"),
    ("q=foo:bar", "q", "unknown qualifier 'foo'"),
    ("q=status:done", "q", "status takes job statuses"),
    ("q=user:bob", "q", "user takes a UUID"),
    ('q=error:"open', "q", "error takes a word or a quoted text"),
    ("q=args:1", "q", "args.<key>"),
    ("q=task:", "q", "nothing follows the colon"),
    ("q=" + "x" * 1001, "q", "length <= 1000"),
    ("cursor=abc", "cursor", "not a cursor this API returned"),
    ("cursor=" + "=" * 32, "cursor", "not a cursor this API returned"),
    ("has_error=yes", "has_error", "'yes' is not true or false"),
    ("created_after=2026-11-30T10:00:00", "created_after", "needs its offset"),
    ("created_after=yesterday", "created_after", "'yesterday' is not an RFC 3339 date-time"),
    ("created_before=0.5", "created_before", "'0.5' is not an RFC 3339 date-time"),
    ("created_before=null", "created_before", "'null' is not an RFC 3339 date-time"),
    ("user_id=null", "user_id", "'null' is not a UUID"),
    ("limit=201", "limit", "<= 200"),
    ("limit=0", "limit", ">= 1"),
    ("offset=-1", "offset", ">= 0"),
    ("worker_id=%00", "worker_id", "without NUL characters"),
]


@pytest.mark.parametrize(("query", "key", "reason"), BAD, ids=[b[0][:40] for b in BAD])
async def test_a_bad_filter_query_or_cursor_is_a_400_naming_it(
    client: AsyncTestClient[Any], query: str, key: str, reason: str
) -> None:
    response = await client.get(f"{JOBS}?{query}")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400
    assert any(e.get("key") == key and reason in e["message"] for e in body["extra"]), body


async def test_a_cursor_is_a_position_and_reads_any_list(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    await insert_rows(engine, [job_row(n) for n in range(3)])
    first = (await client.get(f"{JOBS}?limit=1")).json()
    second = (await client.get(f"{JOBS}?limit=5&cursor={first['next_cursor']}")).json()
    assert len(second["items"]) == 2
    # Past the oldest row (1970), and before the newest (past what a datetime holds).
    assert (await client.get(f"{JOBS}?cursor={'A' * 32}")).json()["items"] == []
    latest = base64.urlsafe_b64encode(struct.pack(">q16s", 2**63 - 1, b"\xff" * 16)).decode()
    everything = (await client.get(f"{JOBS}?cursor={latest}")).json()
    assert [item["job_id"] for item in everything["items"]] == await newest_first(engine)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "status:failed,aborted",
        "status:queued",
        "task:send_email",
        "queue:emails",
        "worker:w-2",
        "user:{user}",
        "project:{project} status:running",
    ],
)
@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "a window"])
async def test_a_page_through_the_driver_is_the_page_through_the_session(
    engine: AsyncEngine, query: str, bounded: bool
) -> None:
    """The list's pages run on the driver (`JobRows.fetch`, asyncpg's placeholders) hold the
    same column values, cursor and count as the same statement through the session."""
    user, project = uuid4(), uuid4()
    rows = [
        job_row(1, status="failed", error="TimeoutError", worker_id="w-1", result={"ok": [1]}),
        job_row(2, status="aborted", error="cancelled", task_name="send_email", user_id=user),
        job_row(3, status="queued", queue="emails", project_id=project),
        job_row(4, status="running", worker_id="w-2", user_id=user, project_id=project),
        *[job_row(n, created_at=T0 - timedelta(days=2, seconds=n)) for n in range(5, 12)],
    ]
    for row in rows:
        row.setdefault("result", None)
    await insert_rows(engine, rows)
    search = parse_q(query.format(user=user, project=project))
    if bounded:
        search = replace(search, created_after=T0 - timedelta(days=3), created_before=T0)
    assert PAGE_STATEMENTS.for_driver(search, after=None, limit=3, offset=0) is not None
    driver, session = (
        BackgroundJobService(AsyncSession(engine), job_rows=JobRows(lambda: engine)),
        BackgroundJobService(AsyncSession(engine)),
    )
    after = None
    for _ in range(10):  # every page of 3, following the cursor
        through_driver = await driver.search_page(search, after=after, limit=3, offset=0)
        through_session = await session.search_page(search, after=after, limit=3, offset=0)
        assert [dict(row) for row in through_driver.rows] == [
            dict(row) for row in through_session.rows
        ]
        assert (through_driver.next, through_driver.total, through_driver.total_is_exact) == (
            through_session.next, through_session.total, through_session.total_is_exact,
        )  # fmt: skip
        if through_driver.next is None:
            break
        after = through_driver.next
