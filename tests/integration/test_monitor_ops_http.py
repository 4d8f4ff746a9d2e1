"""The cron and workers pages' server side with the checks on: what a viewer's and an
operator's page holds (the Pause button only for operators), the server refusing a viewer's
pause even with a valid CSRF token, an operator's session pausing and resuming (audited),
and the pages' live redraw (`?part=body`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from app.auth.roles import Role
from app.monitor.security import CSRF_HEADER
from tests.integration.test_monitor_http import ORIGIN, log_in, token_of
from tests.support import Servers
from tests.support.access import auth_settings, make_key
from tests.support.app import CRON_REGISTRY, SCHEDULES

NAME = "every_second"


@pytest.fixture
async def keys(database_url: str, servers: Servers) -> tuple[Any, str, str]:
    settings = auth_settings(database_url, servers.redis_url)
    engine = create_async_engine(settings.database_url)
    viewer = (await make_key(engine, Role.VIEWER))[1]
    operator = (await make_key(engine, Role.OPERATOR))[1]
    await engine.dispose()
    return settings, viewer, operator


@pytest.fixture
async def client(keys: tuple[Any, str, str]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(keys[0], CRON_REGISTRY, cron=SCHEDULES)
    async with AsyncTestClient(app=app, base_url=ORIGIN) as test_client:
        yield test_client


async def test_a_viewer_sees_no_pause_button_and_the_server_refuses_its_pause(
    client: AsyncTestClient[Any], keys: tuple[Any, str, str]
) -> None:
    _, viewer, _ = keys
    await log_in(client, viewer)
    page = await client.get("/monitor/cron")
    assert page.status_code == 200
    assert f'id="schedule-{NAME}"' in page.text
    assert "data-schedule-action" not in page.text
    token = {CSRF_HEADER: token_of(page.text)}
    refused = await client.post(f"/api/v1/schedules/{NAME}/pause", headers=token)
    assert refused.status_code == 403
    assert "operator" in refused.json()["detail"]
    listed = await client.get("/api/v1/schedules")
    assert listed.json()["schedules"][0]["paused"] is False


async def test_an_operator_session_pauses_and_resumes_from_the_page(
    client: AsyncTestClient[Any], keys: tuple[Any, str, str]
) -> None:
    _, _, operator = keys
    await log_in(client, operator)
    page = await client.get("/monitor/cron")
    assert 'data-schedule-action="pause"' in page.text
    token = {CSRF_HEADER: token_of(page.text)}
    without = await client.post(f"/api/v1/schedules/{NAME}/pause")
    assert without.status_code == 403, "a session's unsafe call needs the CSRF token"
    paused = await client.post(f"/api/v1/schedules/{NAME}/pause", headers=token)
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused_by"] == operator[:12]
    body = await client.get("/monitor/cron?part=body")
    assert "<html" not in body.text
    assert 'data-schedule-action="resume"' in body.text
    assert f"{operator[:12]}" in body.text
    resumed = await client.post(f"/api/v1/schedules/{NAME}/resume", headers=token)
    assert resumed.json()["paused"] is False


async def test_the_workers_page_and_its_redraw(
    client: AsyncTestClient[Any], keys: tuple[Any, str, str]
) -> None:
    _, viewer, _ = keys
    await log_in(client, viewer)
    page = await client.get("/monitor/workers")
    assert page.status_code == 200
    assert "<h1>Workers</h1>" in page.text
    assert 'src="/monitor/static/ops.js"' in page.text
    body = await client.get("/monitor/workers?part=body")
    assert body.status_code == 200
    assert "<html" not in body.text
    assert "Stopped reporting" in body.text
