"""Every route, called by every kind of caller, with the checks on: the status each one gets.

The callers: no key, a viewer, an operator, an admin, an operator key scoped to the job's
project and one scoped to another project, a revoked key and a key that never existed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import create_app
from app.auth.keys import generate_key
from app.auth.roles import Role
from app.config import Settings
from tests.support import Servers
from tests.support.access import BOOTSTRAP_KEY, auth_settings, bearer, make_key
from tests.support.app import CRON_REGISTRY, SCHEDULES

WHO = (
    "nobody",
    "viewer",
    "operator",
    "admin",
    "own_project",
    "other_project",
    "revoked",
    "unknown",
)


@dataclass
class World:
    client: AsyncTestClient[Any]
    settings: Settings
    engine: AsyncEngine
    keys: dict[str, str | None]
    project: UUID  # the project of the jobs the calls touch; `own_project`'s scope

    async def new_job(self) -> str:
        """A queued job of `project`, triggered with the bootstrap (admin) key."""
        response = await self.client.post(
            "/api/v1/tasks/trigger-test",
            json={"message": "m", "project_id": str(self.project), "sleep_seconds": 60},
            headers=bearer(BOOTSTRAP_KEY),
        )
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])


@pytest.fixture(scope="module")
async def world(database_url: str, servers: Servers) -> AsyncIterator[World]:
    # A stream of every job's events ends after a moment, so its call returns.
    settings = auth_settings(database_url, servers.redis_url, events_max_stream=0.2)
    engine = create_async_engine(settings.database_url)
    project = uuid4()
    keys: dict[str, str | None] = {"nobody": None, "unknown": generate_key()}
    for who, role, scope in [
        ("viewer", Role.VIEWER, None),
        ("operator", Role.OPERATOR, None),
        ("admin", Role.ADMIN, None),
        ("own_project", Role.OPERATOR, project),
        ("other_project", Role.OPERATOR, uuid4()),
    ]:
        keys[who] = (await make_key(engine, role, scope))[1]
    keys["revoked"] = (await make_key(engine, Role.ADMIN, revoked=True))[1]
    # With a schedule declared, so that pausing and resuming one can succeed.
    app = create_app(settings, CRON_REGISTRY, cron=SCHEDULES)
    async with AsyncTestClient(app=app) as client:
        yield World(client, settings, engine, keys, project)
    await engine.dispose()


Request = tuple[str, str, Any]  # method, path, JSON body


async def trigger(world: World) -> Request:
    body = {"message": "m", "project_id": str(world.project)}
    return "POST", "/api/v1/tasks/trigger-test", body


async def list_all(world: World) -> Request:
    return "GET", "/api/v1/jobs", None


async def list_project(world: World) -> Request:
    return "GET", f"/api/v1/jobs?project_id={world.project}", None


async def list_search(world: World) -> Request:
    return "GET", f"/api/v1/jobs?q=project:{world.project}%20status:queued&limit=5", None


async def stats(world: World) -> Request:
    return "GET", "/api/v1/jobs/stats?window=24h", None


async def stats_project(world: World) -> Request:
    return "GET", f"/api/v1/jobs/stats?project_id={world.project}", None


async def queues(world: World) -> Request:
    return "GET", "/api/v1/queues", None


async def queue_pause(world: World) -> Request:
    return "POST", f"/api/v1/queues/{world.settings.queue_name}/pause", None


async def queue_drain(world: World) -> Request:
    return "POST", f"/api/v1/queues/{world.settings.queue_name}/drain", None


async def queue_resume(world: World) -> Request:
    return "POST", f"/api/v1/queues/{world.settings.queue_name}/resume", None


async def schedules(world: World) -> Request:
    return "GET", "/api/v1/schedules", None


async def schedule_pause(world: World) -> Request:
    return "POST", f"/api/v1/schedules/{SCHEDULES[0].function.__qualname__}/pause", None


async def schedule_resume(world: World) -> Request:
    return "POST", f"/api/v1/schedules/{SCHEDULES[0].function.__qualname__}/resume", None


async def workers(world: World) -> Request:
    return "GET", "/api/v1/workers", None


async def read(world: World) -> Request:
    return "GET", f"/api/v1/jobs/{await world.new_job()}", None


async def cancel(world: World) -> Request:
    return "POST", f"/api/v1/jobs/{await world.new_job()}/cancel", None


async def retry(world: World) -> Request:
    return "POST", f"/api/v1/jobs/{await world.new_job()}/retry", None  # queued: 409 if allowed


async def bulk_cancel(world: World) -> Request:
    return "POST", "/api/v1/jobs/bulk/cancel", {"job_ids": [await world.new_job()]}


async def bulk_retry(world: World) -> Request:
    return "POST", "/api/v1/jobs/bulk/retry", {"filter": {"project_id": str(world.project)}}


async def job_events(world: World) -> Request:
    """The stream of a job that has ended (it ends at once)."""
    job_id = await world.new_job()
    headers = bearer(BOOTSTRAP_KEY)
    assert (await world.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)).is_success
    for _ in range(200):  # the bound only stops a broken test
        job = (await world.client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] == "aborted":
            break
        await asyncio.sleep(0.02)
    return "GET", f"/api/v1/jobs/{job_id}/events", None


async def events(world: World) -> Request:
    return "GET", f"/api/v1/events?project_id={world.project}", None


async def keys_list(world: World) -> Request:
    return "GET", "/api/v1/keys", None


async def keys_create(world: World) -> Request:
    return "POST", "/api/v1/keys", {"role": "viewer", "name": "matrix"}


async def keys_revoke(world: World) -> Request:
    key_id, _ = await make_key(world.engine, Role.VIEWER)
    return "POST", f"/api/v1/keys/{key_id}/revoke", None


async def audit(world: World) -> Request:
    return "GET", "/api/v1/audit?limit=5", None


async def health(world: World) -> Request:
    return "GET", "/health", None


async def ready(world: World) -> Request:
    return "GET", "/ready", None


async def metrics(world: World) -> Request:
    return "GET", "/metrics", None


async def prune(world: World) -> Request:
    return "POST", "/api/v1/ops/prune", {"older_than_days": 365}


async def docs(world: World) -> Request:
    return "GET", "/schema", None


async def openapi(world: World) -> Request:
    return "GET", "/schema/openapi.json", None


async def docs_asset(world: World) -> Request:
    return "GET", "/schema/assets/swagger-ui.css", None


async def saq_page(world: World) -> Request:
    return "GET", "/saq/", None


async def saq_queues(world: World) -> Request:
    return "GET", "/saq/api/queues", None


async def saq_static(world: World) -> Request:
    return "GET", "/saq/static/app.js", None


async def saq_abort(world: World) -> Request:
    queue, job = world.settings.queue_name, await world.new_job()
    return "POST", f"/saq/api/queues/{queue}/jobs/{job}/abort", None


async def saq_retry(world: World) -> Request:
    queue, job = world.settings.queue_name, await world.new_job()
    return "POST", f"/saq/api/queues/{queue}/jobs/{job}/retry", None


ANYONE = (200,) * len(WHO)
# In WHO's order: nobody, viewer, operator, admin, own_project, other_project, revoked, unknown
MATRIX: dict[Callable[[World], Awaitable[Request]], tuple[int, ...]] = {
    trigger: (401, 403, 202, 202, 202, 403, 401, 401),
    list_all: (401, 200, 200, 200, 200, 200, 401, 401),
    list_project: (401, 200, 200, 200, 200, 403, 401, 401),
    list_search: (401, 200, 200, 200, 200, 403, 401, 401),
    stats: (401, 200, 200, 200, 200, 200, 401, 401),
    stats_project: (401, 200, 200, 200, 200, 403, 401, 401),
    queues: (401, 200, 200, 200, 403, 403, 401, 401),
    queue_pause: (401, 403, 200, 200, 403, 403, 401, 401),
    queue_drain: (401, 403, 200, 200, 403, 403, 401, 401),
    queue_resume: (401, 403, 200, 200, 403, 403, 401, 401),
    schedules: (401, 200, 200, 200, 403, 403, 401, 401),
    schedule_pause: (401, 403, 200, 200, 403, 403, 401, 401),
    schedule_resume: (401, 403, 200, 200, 403, 403, 401, 401),
    workers: (401, 200, 200, 200, 403, 403, 401, 401),
    read: (401, 200, 200, 200, 200, 404, 401, 401),  # another project's job: as if none
    cancel: (401, 403, 202, 202, 202, 404, 401, 401),
    retry: (401, 403, 409, 409, 409, 404, 401, 401),
    bulk_cancel: (401, 403, 200, 200, 200, 200, 401, 401),  # not found, nothing done
    bulk_retry: (401, 403, 200, 200, 200, 403, 401, 401),
    job_events: (401, 200, 200, 200, 200, 404, 401, 401),
    events: (401, 200, 200, 200, 200, 403, 401, 401),
    keys_list: (401, 403, 403, 200, 403, 403, 401, 401),
    keys_create: (401, 403, 403, 201, 403, 403, 401, 401),
    keys_revoke: (401, 403, 403, 200, 403, 403, 401, 401),
    audit: (401, 403, 403, 200, 403, 403, 401, 401),
    health: ANYONE,
    ready: ANYONE,
    # Any unscoped key (or METRICS_TOKEN, tests/integration/test_metrics.py).
    metrics: (401, 200, 200, 200, 403, 403, 401, 401),
    prune: (401, 403, 403, 200, 403, 403, 401, 401),
    docs: ANYONE,
    openapi: ANYONE,
    docs_asset: ANYONE,
    saq_page: (401, 200, 200, 200, 403, 403, 401, 401),
    saq_queues: (401, 200, 200, 200, 403, 403, 401, 401),
    saq_static: ANYONE,
    saq_abort: (401, 403, 202, 202, 403, 403, 401, 401),
    saq_retry: (401, 403, 202, 202, 403, 403, 401, 401),
}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("call", list(MATRIX), ids=lambda call: call.__name__)
async def test_each_caller_gets_the_status_its_role_and_scope_allow(
    world: World, call: Callable[[World], Awaitable[Request]], who: str
) -> None:
    method, path, body = await call(world)
    response = await world.client.request(method, path, json=body, headers=bearer(world.keys[who]))
    expected = MATRIX[call][WHO.index(who)]
    assert response.status_code == expected, f"{who}: {method} {path}: {response.text}"
    if expected in (401, 403):  # a JSON body that says why
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["status_code"] == expected
        assert response.json()["detail"]
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


# The monitor's pages answer a browser: no key or a bad one goes to the login page (303), a
# refusal is a page that says why. In WHO's order, as MATRIX.
PAGES = {
    "/monitor/cron": (303, 200, 200, 200, 403, 403, 303, 303),
    "/monitor/workers": (303, 200, 200, 200, 403, 403, 303, 303),
}


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("path", list(PAGES))
async def test_each_caller_gets_the_monitor_page_its_role_and_scope_allow(
    world: World, path: str, who: str
) -> None:
    response = await world.client.get(path, headers=bearer(world.keys[who]), follow_redirects=False)
    expected = PAGES[path][WHO.index(who)]
    assert response.status_code == expected, f"{who}: GET {path}: {response.text[:300]}"
    if expected == 303:
        assert response.headers["location"].startswith("/monitor/login?next=")
    if expected == 403:
        assert 'role="alert"' in response.text
