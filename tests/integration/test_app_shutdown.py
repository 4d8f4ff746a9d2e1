"""The API's shutdown closes the database connections its process opened.

Catches: the engine left open at shutdown. advanced-alchemy's lifespan disposes the engine
only under the state key it was first given; a second app in one process (every test, a
second `create_app`) gets a renamed key and its engine was never disposed: the whole suite
exhausted PostgreSQL's connections that way (each app's start freezes what exists, so an
app left in a reference cycle was never collected either)."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app
from app.config import Settings


async def _connections(engine: AsyncEngine) -> Any:
    async with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        return (await connection.execute(text(query))).scalar_one()


async def test_each_app_s_shutdown_closes_its_connections(
    settings: Settings, engine: AsyncEngine
) -> None:
    before = await _connections(engine)
    apps = [create_app(settings) for _ in range(2)]  # the second's key is renamed
    for app in apps:  # still referenced after shutdown, as the suite's apps stayed (gc.freeze)
        async with AsyncTestClient(app=app) as client:
            listed = await client.get("/api/v1/jobs")  # the pool keeps its connection
            assert listed.status_code == 200, listed.text
    assert await _connections(engine) == before
