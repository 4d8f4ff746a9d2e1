"""`/health` says the process serves; `/ready` that PostgreSQL and Redis answer and the
database's migrations are the code's, naming what is not. The scrape of `/metrics` reports
the same checks (`bgjobs_ready{check}`), for the alert on `/ready` failing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.asgi import create_app
from app.config import Settings
from app.ops.probes import READINESS_CHECKS, migration_heads
from tests.support import APP, ROOT, VENV_BIN, Servers, create_database, drop_database, free_port
from tests.support.scrape import samples, value


async def probe(settings: Settings) -> tuple[Any, Any]:
    """(/health, /ready) answered by an app on `settings`; its scrape of `/metrics` says the
    same as /ready, check by check."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        health, ready = await client.get("/health"), await client.get("/ready")
        scraped = samples((await client.get("/metrics")).text)
    gauges = {check: value(scraped, "bgjobs_ready", check=check) for check in READINESS_CHECKS}
    assert gauges == {check: float(ready.json()[check] == "ok") for check in READINESS_CHECKS}
    return health, ready


async def test_ready_when_every_check_passes(settings: Settings) -> None:
    _, ready = await probe(settings)
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")


async def test_postgres_down_is_not_ready_but_alive(settings: Settings) -> None:
    dead = f"postgresql+asyncpg://user:password@127.0.0.1:{free_port()}/app_db"
    health, ready = await probe(replace(settings, database_url=dead))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["database"].startswith("unavailable: ")
    assert body["redis"] == "ok"
    assert body["migrations"].startswith("unknown")


async def test_redis_down_is_not_ready_but_alive(settings: Settings) -> None:
    health, ready = await probe(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not ready",
        "database": "ok",
        "redis": "unavailable: ConnectionError",
        "migrations": "ok",
    }


@pytest.fixture
def database_at_0003(servers: Servers) -> Iterator[str]:
    """A database whose migrations stopped at 0003, as after a deploy that skipped them."""
    name = create_database(servers)
    url = servers.database_url(name)
    done = subprocess.run(
        [str(VENV_BIN / "litestar"), "--app", APP, "database", "upgrade", "0003", "--no-prompt"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DATABASE_URL": url},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield url
    drop_database(servers, name)


async def test_migrations_behind_the_code_are_not_ready(
    settings: Settings, database_at_0003: str
) -> None:
    behind = Settings.from_env({"DATABASE_URL": database_at_0003}).database_url
    _, ready = await probe(replace(settings, database_url=behind))
    assert ready.status_code == 503
    body = ready.json()
    (head,) = migration_heads(settings.migrations_path)
    assert (body["database"], body["redis"]) == ("ok", "ok")
    assert body["migrations"] == f"database at 0003, code at {head}"


async def test_a_database_never_migrated_is_not_ready(settings: Settings, servers: Servers) -> None:
    name = create_database(servers)
    try:
        url = Settings.from_env({"DATABASE_URL": servers.database_url(name)}).database_url
        _, ready = await probe(replace(settings, database_url=url))
    finally:
        drop_database(servers, name)
    assert ready.status_code == 503
    assert (ready.json()["database"], ready.json()["migrations"]) == (
        "ok",
        "database not migrated",
    )
