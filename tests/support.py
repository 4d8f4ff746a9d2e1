"""Helpers the test layers share: throwaway servers, settings, waiting for a row."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from local_servers import LocalPostgres, LocalRedis, free_port  # noqa: E402

from app.config import Settings  # noqa: E402

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
APP = "app.asgi:create_app"


@dataclass
class Servers:
    """Where the test session's PostgreSQL (admin URL, no database) and Redis live."""

    postgres_base_url: str  # postgresql://user:pw@host:port
    redis_url: str
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None

    def database_url(self, database: str) -> str:
        parts = urlsplit(self.postgres_base_url)
        return urlunsplit(parts._replace(path=f"/{database}"))


@contextmanager
def start_servers() -> Iterator[Servers]:
    """Servers from DATABASE_URL / REDIS_URL when given, else throwaway ones on free ports."""
    given_db, given_redis = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    # A folder the `postgres` user can reach when we run as root (mkdtemp makes it 0700).
    base = Path(tempfile.mkdtemp(prefix="tracked-jobs-test-"))
    base.chmod(0o755)
    postgres = redis = None
    try:
        if given_db:
            db_base = given_db.replace("postgresql+asyncpg://", "postgresql://")
        else:
            postgres = LocalPostgres(base / "postgres", free_port())
            postgres.start()
            db_base = postgres.url
        if given_redis:
            redis_url = given_redis
        else:
            redis = LocalRedis(base / "redis", free_port())
            redis.start()
            redis_url = redis.url
        parts = urlsplit(db_base)
        yield Servers(urlunsplit(parts._replace(path="")), redis_url, postgres, redis)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def psql(url: str, sql: str) -> str:
    """Run SQL with the psql client, as the README tells a user to."""
    result = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-tA", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def create_database(servers: Servers) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    psql(servers.database_url("postgres"), f"CREATE DATABASE {name}")
    return name


def drop_database(servers: Servers, name: str) -> None:
    psql(servers.database_url("postgres"), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(database_url: str) -> None:
    """Apply the real Alembic migrations with the command the README gives."""
    subprocess.run(
        [str(VENV_BIN / "litestar"), "--app", APP, "database", "upgrade", "--no-prompt"],
        check=True,
        capture_output=True,
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=ROOT,
    )


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    base = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SAQ_QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}",
            "WORKER_SHUTDOWN_GRACE_PERIOD": "0",
            "LOG_JSON": "true",
            "DB_POOL_SIZE": "5",
        }
    )
    return replace(base, **overrides)


def app_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a real process use these settings."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SAQ_QUEUE_NAME": settings.queue_name,
        "WORKER_SHUTDOWN_GRACE_PERIOD": str(settings.shutdown_grace_period),
        "LOG_JSON": "true",
        "LITESTAR_APP": APP,
        **extra,
    }


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; the bound only stops a broken test."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within}s")
        await asyncio.sleep(0.05)
