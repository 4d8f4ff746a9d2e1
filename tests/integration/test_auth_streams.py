"""An open event stream ends once the key it was opened with is revoked, or its session logged
out: real streams from a real API process (`uvicorn`, as deployed), read as they come.

Streams live `EVENTS_MAX_STREAM_SECONDS` (an hour here), so a stream that outlives the test's
bound would have gone on receiving every job's events."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.roles import Role
from app.config import Settings
from app.db.models import ApiKey
from tests.support import Servers, StartWorker, app_env, eventually
from tests.support.access import BOOTSTRAP_KEY, api, auth_settings, bearer, make_key

# Only stops a broken test: a stream ends within the key cache time (10 s) and a second.
ENDS_WITHIN = 30.0
TOKEN = re.compile(r'name="_csrf_token" value="([^"]+)"')


@dataclass
class Stream:
    task: asyncio.Task[None]
    lines: list[str] = field(default_factory=list)

    def events(self) -> list[str]:
        return [line for line in self.lines if line.startswith("event: ")]

    async def ended(self) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self.task), ENDS_WITHIN)
        except TimeoutError:
            return False
        return True


@dataclass
class Api:
    client: httpx.AsyncClient
    engine: AsyncEngine

    @asynccontextmanager
    async def stream(self, headers: dict[str, str]) -> AsyncIterator[Stream]:
        """`GET /api/v1/events`, read line by line as the server sends them."""
        opened = asyncio.Event()
        stream = Stream(task=asyncio.create_task(asyncio.sleep(0)))

        async def read() -> None:
            async with self.client.stream("GET", "/api/v1/events", headers=headers) as answer:
                assert answer.status_code == 200, await answer.aread()
                opened.set()
                async for line in answer.aiter_lines():
                    stream.lines.append(line)

        stream.task = asyncio.create_task(read())
        await asyncio.wait_for(opened.wait(), ENDS_WITHIN)
        try:
            yield stream
        finally:
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)

    async def trigger(self) -> str:
        answer = await self.client.post(
            "/api/v1/tasks/trigger-test",
            json={"message": "m", "sleep_seconds": 60},
            headers=bearer(BOOTSTRAP_KEY),
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["job_id"])

    async def live(self, stream: Stream) -> None:
        """The stream gets a job's event: it is open and followed."""
        job_id = await self.trigger()

        async def seen() -> bool:
            return any(job_id in line for line in stream.lines)

        await eventually(seen, within=ENDS_WITHIN, what="the job's event on the stream")


@pytest.fixture
def settings(database_url: str, servers: Servers) -> Settings:
    return auth_settings(database_url, servers.redis_url)


@pytest.fixture
async def running(
    settings: Settings, engine: AsyncEngine, start_worker: StartWorker
) -> AsyncIterator[Api]:
    """The API as a process, and a worker (whose jobs' changes are the streams' events), on
    an emptied table: the worker's reconciler would enqueue other tests' unfinished rows
    into this test's queue, and their long jobs would take every slot."""
    await start_worker()
    env = app_env(settings, ADMIN_API_KEY=BOOTSTRAP_KEY, EVENTS_MAX_STREAM_SECONDS="3600")
    with api(env) as (_, port):
        timeout = httpx.Timeout(10.0, read=None)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as c:
            yield Api(c, engine)


async def test_revoking_a_key_ends_its_open_stream(running: Api) -> None:
    key_id, key = await make_key(running.engine, Role.VIEWER)
    async with running.stream(bearer(key)) as stream:
        await running.live(stream)
        revoked = await running.client.post(
            f"/api/v1/keys/{key_id}/revoke", headers=bearer(BOOTSTRAP_KEY)
        )
        assert revoked.status_code == 200
        assert await stream.ended(), "the revoked key's stream goes on"


async def test_a_key_revoked_elsewhere_ends_its_stream_once_the_cache_expires(
    running: Api,
) -> None:
    """As with the CLI, or another API process: this one learns it from the table."""
    key_id, key = await make_key(running.engine, Role.VIEWER)
    async with running.stream(bearer(key)) as stream:
        await running.live(stream)
        await revoke_in_the_table(running.engine, key_id)
        assert await stream.ended(), "the revoked key's stream goes on"


async def test_logging_out_ends_the_sessions_open_stream(running: Api) -> None:
    _, key = await make_key(running.engine, Role.VIEWER)
    client = running.client
    form = await client.get("/monitor/login")
    logged_in = await client.post(
        "/monitor/login",
        data={"key": key, "next": "/monitor", "_csrf_token": token_of(form.text)},
    )
    assert logged_in.status_code in (200, 303), logged_in.text
    page = await client.get("/monitor")
    assert page.status_code == 200  # the session works
    async with running.stream({}) as stream:  # the session cookie, no key
        await running.live(stream)
        out = await client.post("/monitor/logout", data={"_csrf_token": token_of(page.text)})
        assert out.status_code in (200, 303)
        assert await stream.ended(), "the logged-out session's stream goes on"


def token_of(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


async def revoke_in_the_table(engine: AsyncEngine, key_id: UUID) -> Any:
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=ApiKey.created_at)
        )
