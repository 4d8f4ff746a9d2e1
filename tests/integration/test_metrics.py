"""`GET /metrics`: HTTP metrics by route template, job metrics of every process through
Redis, no job, user or project id as a label; and who may scrape it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.auth.roles import Role
from app.config import Settings
from tests.support import Servers, StartWorker, WaitForRow, eventually
from tests.support.access import auth_settings, bearer, make_key
from tests.support.scrape import samples, value

TRIGGER = "/api/v1/tasks/trigger-test"
FORBIDDEN_LABELS = {"job_id", "user_id", "project_id"}


async def test_a_job_run_by_a_worker_reaches_the_scrape_without_ids_as_labels(
    client: AsyncTestClient[Any],
    settings: Settings,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    # The worker builds its own parts (its own counters), as a worker process does: what it
    # counts reaches this API's scrape only through Redis.
    await start_worker()
    user, project = uuid4(), uuid4()
    body = {"message": "m", "sleep_seconds": 0, "user_id": str(user), "project_id": str(project)}
    done = (await client.post(TRIGGER, json=body)).json()["job_id"]
    failed = (await client.post(TRIGGER, json={**body, "fail": True})).json()["job_id"]
    await wait_for_row(done, lambda row: row.status == "complete")
    await wait_for_row(failed, lambda row: row.status == "failed")
    assert (await client.get(f"/api/v1/jobs/{done}")).status_code == 200
    queue = {"queue": settings.queue_name, "task": "trigger_test"}

    async def scraped() -> dict[Any, float] | None:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        scrape = samples(response.text)
        finished = value(scrape, "bgjobs_finished_total", **queue, status="failed")
        return scrape if finished == 1 else None

    scrape = await eventually(scraped, what="the worker's counts in the scrape")
    assert value(scrape, "bgjobs_enqueued_total", **queue) == 2
    assert value(scrape, "bgjobs_finished_total", **queue, status="complete") == 1
    assert value(scrape, "bgjobs_attempt_failures_total", **queue, exception="TestTaskFailure")
    assert value(scrape, "bgjobs_run_seconds_count", **queue) == 2
    assert value(scrape, "bgjobs_run_seconds_bucket", **queue, le="+Inf") == 2
    assert value(scrape, "bgjobs_wait_seconds_count", **queue) == 2
    for state in ("queued", "active", "scheduled"):
        depth = value(scrape, "bgjobs_queue_depth", queue=settings.queue_name, state=state)
        assert depth == 0, state
    assert value(scrape, "bgjobs_live_workers", queue=settings.queue_name) == 1
    assert value(scrape, "bgjobs_oldest_queued_age_seconds", queue=settings.queue_name) == 0
    assert value(scrape, "bgjobs_rows", status="complete") == 1
    assert value(scrape, "bgjobs_rows", status="failed") == 1
    assert value(scrape, "bgjobs_source_up", source="redis") == 1
    assert value(scrape, "bgjobs_source_up", source="database") == 1
    # HTTP metrics: the route's template, never the job's id.
    read = {"method": "GET", "path": "/api/v1/jobs/{job_id}", "status_code": "200"}
    # (HTTP metrics live in the process's registry: other tests' reads count there too.)
    assert value(scrape, "bgjobs_http_requests_total", app_name="tracked-jobs", **read)
    labels = {name for _, labelset in scrape for name, _ in labelset}
    assert not labels & FORBIDDEN_LABELS
    text = (await client.get("/metrics")).text
    for identifier in (done, failed, user, project):
        assert str(identifier) not in text


async def test_the_oldest_waiting_job_and_the_queue_depth(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    for _ in range(3):  # no worker: they wait
        assert (await client.post(TRIGGER, json={"message": "wait"})).status_code == 202

    async def aged() -> dict[Any, float] | None:
        scrape = samples((await client.get("/metrics")).text)
        age = value(scrape, "bgjobs_oldest_queued_age_seconds", queue=settings.queue_name)
        return scrape if age else None

    scrape = await eventually(aged, what="an age for the oldest job")
    assert value(scrape, "bgjobs_queue_depth", queue=settings.queue_name, state="queued") == 3
    assert value(scrape, "bgjobs_live_workers", queue=settings.queue_name) == 0


@pytest.fixture
async def scrape_keys(settings: Settings, engine: AsyncEngine) -> dict[str, str]:
    project = uuid4()
    return {
        "viewer": (await make_key(engine, Role.VIEWER))[1],
        "scoped": (await make_key(engine, Role.OPERATOR, project))[1],
    }


SCRAPE_TOKEN = "metrics-scrape-token-0123456789abcdef"  # noqa: S105 - a test's own


@pytest.mark.parametrize(
    ("public", "authorization", "status"),
    [
        (False, None, 401),
        (False, "token", 200),
        (False, "wrong token", 401),
        (False, "viewer", 200),
        (False, "scoped", 403),
        (True, None, 200),
    ],
)
async def test_who_may_scrape(
    database_url: str,
    servers: Servers,
    scrape_keys: dict[str, str],
    public: bool,
    authorization: str | None,
    status: int,
) -> None:
    settings = auth_settings(
        database_url,
        servers.redis_url,
        metrics_token_digest=hashlib.sha256(SCRAPE_TOKEN.encode()).hexdigest(),
        metrics_public=public,
    )
    key = {"token": SCRAPE_TOKEN, "wrong token": "not-the-token", None: None}.get(
        authorization, scrape_keys.get(authorization or "")
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/metrics", headers=bearer(key))
    assert response.status_code == status, response.text
    if status == 200:
        assert re.search(r"^bgjobs_source_up\{source=\"redis\"\} 1", response.text, re.M)
    else:
        assert response.json()["status_code"] == status


async def test_in_open_mode_the_scrape_is_open(settings: Settings) -> None:
    assert settings.open_mode
    async with AsyncTestClient(app=create_app(replace(settings, metrics_public=False))) as client:
        assert (await client.get("/metrics")).status_code == 200
