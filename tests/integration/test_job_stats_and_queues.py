"""`GET /api/v1/jobs/stats` from the table, `GET /api/v1/queues` from SAQ, what a key scoped
to one project sees of the list and the stats, and what a viewer may search for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from saq.job import Job
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import create_app
from app.auth.roles import Role
from app.config import Settings
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY
from tests.support import Servers, StartWorker, eventually
from tests.support.access import BOOTSTRAP_KEY, auth_settings, bearer, make_key
from tests.support.rows import insert_rows, record_rows

STATS = "/api/v1/jobs/stats"
TRIGGER = "/api/v1/tasks/trigger-test"


def within_bound(estimate: dict[str, float], exact: dict[str, float]) -> bool:
    """app/jobs/histogram.py's bound: a factor 2^(1/8) either way (the durations here are
    all over 0.1 ms)."""
    factor = 2 ** (1 / 8)
    return all(exact[p] / factor <= estimate[p] <= exact[p] * factor for p in exact)


def timed_row(
    task: str, status: str, *, age: float, wait: float | None, run: float | None, **columns: Any
) -> dict[str, Any]:
    """A row created `age` seconds ago, started `wait` s later and ended `run` s after that."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    started = created + timedelta(seconds=wait) if wait is not None else None
    ended = started + timedelta(seconds=run) if started is not None and run is not None else None
    return {
        "id": uuid4(),
        "job_id": uuid4(),
        "task_name": task,
        "queue": "q",
        "status": status,
        "started_at": started,
        "completed_at": ended,
        "project_id": None,
        "created_at": created,
        "updated_at": created,
        **columns,
    }


async def test_stats_count_each_status_and_give_the_percentiles_of_the_window(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    rows = [timed_row("a", "complete", age=60, wait=1, run=run) for run in (1.0, 2.0, 3.0, 4.0)]
    rows += [
        timed_row("a", "failed", age=60, wait=3, run=10),
        timed_row("a", "aborted", age=60, wait=None, run=None),
        timed_row("a", "queued", age=60, wait=None, run=None),
        timed_row("a", "waiting", age=60, wait=None, run=None),
        timed_row("a", "failed", age=7200, wait=1, run=1),  # before the window
        timed_row("b", "running", age=30, wait=2, run=None),
    ]
    await record_rows(engine, rows)
    response = await client.get(STATS, params={"window": "1h"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window"] == "1h"
    a, b = body["tasks"]
    assert (a["task_name"], a["total"]) == ("a", 8)
    counts = {"queued": 1, "running": 0, "complete": 4, "failed": 1, "aborted": 1, "waiting": 1}
    assert a["counts"] == counts
    assert a["failure_rate"] == round(1 / 6, 4)
    # percentile_cont would say: run times 1, 2, 3, 4, 10 -> 3.0 and 8.8; waits 1, 1, 1, 1,
    # 3 -> 1.0 and 2.6; the buckets' answer is within their bound of it.
    assert within_bound(a["run_seconds"], {"p50": 3.0, "p95": 8.8})
    assert within_bound(a["wait_seconds"], {"p50": 1.0, "p95": 2.6})
    assert (b["task_name"], b["failure_rate"], b["run_seconds"]) == ("b", None, None)
    assert within_bound(b["wait_seconds"], {"p50": 2.0, "p95": 2.0})
    week = (await client.get(STATS, params={"window": "7d"})).json()
    assert week["tasks"][0]["total"] == 9


@pytest.mark.parametrize("window", ["2h", "1m", "", "7D", "null"])
async def test_a_window_not_offered_is_a_400(client: AsyncTestClient[Any], window: str) -> None:
    response = await client.get(STATS, params={"window": window})
    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == "window"


async def test_queues_show_queued_active_and_scheduled_jobs_and_live_workers(
    client: AsyncTestClient[Any], queue: TrackedQueue, start_worker: StartWorker
) -> None:
    for _ in range(3):
        body = {"message": "m", "sleep_seconds": 60}
        assert (await client.post(TRIGGER, json=body)).status_code == 202
    later = Job("trigger_test", kwargs={"message": "later"}, scheduled=int(time_in(3600)))
    await queue.enqueue(later)

    async def report() -> dict[str, Any]:
        response = await client.get("/api/v1/queues")
        assert response.status_code == 200, response.text
        (mine,) = response.json()["queues"]
        assert mine["name"] == queue.name
        return mine

    before = await report()
    assert (before["queued"], before["active"], before["scheduled"]) == (3, 0, 1)
    assert (before["live_workers"], before["workers"]) == (0, [])
    await start_worker(REGISTRY)
    during = await eventually(
        lambda: _when(report(), lambda r: r["active"] == 3 and r["live_workers"] == 1),
        what="three active jobs and one live worker",
    )
    assert (during["queued"], during["scheduled"]) == (0, 1)
    assert during["workers"][0]["id"]


def time_in(seconds: float) -> float:
    return datetime.now(UTC).timestamp() + seconds


async def _when(report: Any, condition: Any) -> dict[str, Any] | None:
    found = await report
    return found if condition(found) else None


@pytest.fixture
async def scoped(database_url: str, servers: Servers) -> Any:
    """An app with the checks on, and a viewer key scoped to a project of its own."""
    settings: Settings = auth_settings(database_url, servers.redis_url)
    engine = create_async_engine(settings.database_url)
    project = uuid4()
    _, key = await make_key(engine, Role.VIEWER, project)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client, engine, project, bearer(key)
    await engine.dispose()


async def test_a_viewer_may_not_search_the_arguments_it_sees_masked(scoped: Any) -> None:
    client, engine, project, viewer = scoped
    row = timed_row("mine", "complete", age=10, wait=1, run=1, project_id=project)
    await insert_rows(engine, [{**row, "arguments": {"order_id": 7, "auth": {"Token": "s3"}}}])
    page = (await client.get("/api/v1/jobs?q=args.order_id:7", headers=viewer)).json()
    assert [item["arguments"] for item in page["items"]] == [
        {"order_id": 7, "auth": {"Token": "***"}}
    ]
    refused = await client.get("/api/v1/jobs?q=args.auth.token:s3", headers=viewer)
    assert refused.status_code == 403
    assert "args.auth.token" in refused.json()["detail"]
    admin = bearer(BOOTSTRAP_KEY)
    found = (await client.get("/api/v1/jobs?q=args.auth.Token:s3", headers=admin)).json()
    assert [item["job_id"] for item in found["items"]] == [str(row["job_id"])]


async def test_a_scoped_key_lists_and_counts_its_own_project_only(scoped: Any) -> None:
    client, engine, project, key = scoped
    other = uuid4()
    await record_rows(
        engine,
        [
            timed_row("mine", "failed", age=10, wait=1, run=1, project_id=project),
            timed_row("theirs", "failed", age=10, wait=1, run=1, project_id=other),
        ],
    )
    page = (await client.get("/api/v1/jobs?status=failed", headers=key)).json()
    assert {item["task_name"] for item in page["items"]} == {"mine"}
    stats = (await client.get(STATS, headers=key)).json()
    assert [task["task_name"] for task in stats["tasks"]] == ["mine"]
    for path in (
        f"/api/v1/jobs?q=project:{other}",
        f"/api/v1/jobs?project_id={other}",
        f"{STATS}?project_id={other}",
        "/api/v1/queues",
    ):
        assert (await client.get(path, headers=key)).status_code == 403, path
    admin = bearer(BOOTSTRAP_KEY)
    everyone = (await client.get(f"{STATS}?window=5m", headers=admin)).json()
    assert {"mine", "theirs"} <= {task["task_name"] for task in everyone["tasks"]}
