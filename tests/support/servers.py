"""Throwaway PostgreSQL and Redis servers, databases on them, and settings that point there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_servers import LocalPostgres, LocalRedis, free_port  # noqa: E402

from app.config import Settings  # noqa: E402

VENV_BIN = Path(sys.executable).parent
APP = "app.asgi:create_app"

__all__ = [
    "APP",
    "ROOT",
    "VENV_BIN",
    "LocalPostgres",
    "LocalRedis",
    "Servers",
    "app_env",
    "create_database",
    "drop_database",
    "free_port",
    "make_settings",
    "migrate",
    "psql",
    "start_servers",
]


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


def migrate(database_url: str, revision: str = "head", *, down: bool = False) -> None:
    """Apply the real Alembic migrations with the command the README gives (up to
    `revision`; `down`: back to it)."""
    command = "downgrade" if down else "upgrade"
    done = subprocess.run(
        [str(VENV_BIN / "litestar"), "--app", APP, "database", command, revision, "--no-prompt"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=ROOT,
    )
    assert done.returncode == 0, f"migrations failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    base = Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SAQ_QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}",
            "WORKER_SHUTDOWN_GRACE_PERIOD": "0",
            "LOG_JSON": "true",
            "DB_POOL_SIZE": "5",
            # Open mode: only the tests of access itself (tests/integration/test_auth*.py)
            # turn the checks on, with `auth_disabled=False`.
            "AUTH_DISABLED": "true",
        }
    )
    # The name Litestar's test client sends as `Host` (the checks allow loopback names).
    return replace(base, **{"allowed_hosts": ("testserver.local",), **overrides})


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
        "AUTH_DISABLED": "true" if settings.auth_disabled else "false",
        "ALLOWED_HOSTS": ",".join(settings.allowed_hosts),
        **extra,
    }
