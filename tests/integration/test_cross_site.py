"""Other web pages cannot drive the API through a visitor's browser (app/auth/cross_site.py):
in open mode no cross-site change and no request under a foreign `Host` (DNS rebinding);
in both modes no non-JSON body (what another site sends without a preflight)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.config import Settings
from tests.support import Servers, make_settings
from tests.support.access import BOOTSTRAP_KEY, auth_settings, bearer

TRIGGER = "/api/v1/tasks/trigger-test"
BODY = '{"message": "sent by another site"}'


@pytest.fixture
async def open_client(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[AsyncTestClient[Any]]:
    assert settings.open_mode
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def jobs_made(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT count(*) FROM background_jobs")) or 0)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame, a data: page
        {"Origin": "http://testserver.local.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another site's page too
    ],
    ids=["foreign-origin", "null-origin", "lookalike-origin", "cross-site", "same-site"],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", TRIGGER, BODY),
        ("POST", "/api/v1/jobs/bulk/cancel", '{"filter": {"status": ["queued"]}}'),
        ("POST", "/api/v1/ops/prune", '{"older_than_days": 1}'),
        ("POST", "/api/v1/keys", '{"role": "admin", "name": "planted"}'),
    ],
    ids=["trigger", "bulk-cancel", "prune", "key"],
)
async def test_open_mode_refuses_a_change_from_another_sites_page(
    open_client: AsyncTestClient[Any],
    engine: AsyncEngine,
    headers: dict[str, str],
    method: str,
    path: str,
    body: str,
) -> None:
    answer = await open_client.request(
        method, path, content=body, headers={"Content-Type": "application/json", **headers}
    )
    assert answer.status_code == 403, answer.text
    assert "another site" in answer.json()["detail"]
    assert await jobs_made(engine) == 0


async def test_open_mode_takes_a_change_from_its_own_pages_and_from_clients_without_origin(
    open_client: AsyncTestClient[Any],
) -> None:
    json = {"Content-Type": "application/json"}
    for headers in (
        {},  # curl, a script: no Origin
        {"Origin": "http://testserver.local", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
    ):
        answer = await open_client.post(TRIGGER, content=BODY, headers={**json, **headers})
        assert answer.status_code == 202, (headers, answer.text)
    # Reading is not refused: another site's page cannot read the answer (no CORS).
    got = await open_client.get("/api/v1/jobs", headers={"Sec-Fetch-Site": "cross-site"})
    assert got.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_body_that_is_not_json_is_refused_before_any_route(
    open_client: AsyncTestClient[Any], engine: AsyncEngine, content_type: str | None
) -> None:
    """The bodies another site's form or fetch sends without a CORS preflight."""
    headers = {"Content-Type": content_type} if content_type else {}
    answer = await open_client.post(TRIGGER, content=BODY, headers=headers)
    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()["detail"]
    assert await jobs_made(engine) == 0
    json_kin = await open_client.post(
        TRIGGER, content=BODY, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert json_kin.status_code == 202


async def test_a_call_without_a_body_needs_no_content_type(
    open_client: AsyncTestClient[Any],
) -> None:
    answer = await open_client.post(f"/api/v1/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}/cancel")
    assert answer.status_code == 404  # past the checks: there is no such job


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8000", 200),
        ("127.0.0.1:8000", 200),
        ("[::1]:8000", 200),
        ("LOCALHOST", 200),
        ("evil.example", 400),  # a name that re-resolves to 127.0.0.1: DNS rebinding
        ("evil.example:8000", 400),
        ("localhost.evil.example", 400),
        ("", 400),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/jobs", "/saq/api/queues", "/monitor"])
async def test_open_mode_answers_only_its_own_host_names(
    open_client: AsyncTestClient[Any], host: str, status: int, path: str
) -> None:
    answer = await open_client.get(path, headers={"Host": host})
    assert answer.status_code == status, answer.text
    if status == 400:  # a JSON body, or the monitor's error page
        assert "ALLOWED_HOSTS" in answer.text


async def test_allowed_hosts_adds_names_and_a_star_allows_any(
    database_url: str, servers: Servers, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, servers.redis_url, allowed_hosts=("jobs.example",))
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/api/v1/jobs", headers={"Host": "jobs.example"})).is_success
        assert (
            await client.get("/api/v1/jobs", headers={"Host": "other.example"})
        ).status_code == 400
    anyone = make_settings(database_url, servers.redis_url, allowed_hosts=("*",))
    async with AsyncTestClient(app=create_app(anyone)) as client:
        assert (await client.get("/api/v1/jobs", headers={"Host": "other.example"})).is_success


async def test_with_the_checks_on_the_host_is_checked_only_once_allowed_hosts_is_set(
    database_url: str, servers: Servers, engine: AsyncEngine
) -> None:
    """A rebound page holds neither a key nor the real name's session cookie."""
    key = bearer(BOOTSTRAP_KEY)
    unset = auth_settings(database_url, servers.redis_url, allowed_hosts=())
    async with AsyncTestClient(app=create_app(unset)) as client:
        answer = await client.get("/api/v1/jobs", headers={**key, "Host": "jobs.example"})
        assert answer.status_code == 200
        # A key's call may come from anywhere, but its body must be JSON too.
        plain = await client.post(
            TRIGGER, content=BODY, headers={**key, "Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
    named = auth_settings(database_url, servers.redis_url, allowed_hosts=("jobs.example",))
    async with AsyncTestClient(app=create_app(named)) as client:
        assert (
            await client.get("/api/v1/jobs", headers={**key, "Host": "jobs.example"})
        ).is_success
        other = await client.get("/api/v1/jobs", headers={**key, "Host": "rebound.example"})
        assert other.status_code == 400
