"""Probes for load balancers and orchestrators, both public: `GET /health` says the process
serves (a liveness probe: nothing else is asked), `GET /ready` that it can do its work:
PostgreSQL and Redis answer and the database's migrations are the code's (a readiness
probe: `503` naming what is not).

The code's migration heads are read from the Alembic script folder once, at start-up, so
a deployment whose database is behind (or ahead of) its code is not ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog
from alembic.config import Config
from alembic.script import ScriptDirectory
from litestar import Request, Response, get
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins import InitPluginProtocol
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from litestar_saq import TaskQueues
from sqlalchemy import Select, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guard import PUBLIC

log = structlog.get_logger(__name__)

CHECK_TIMEOUT = 3.0  # seconds each dependency has to answer a readiness probe
_STATE_KEY = "migration_heads"
_UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE


class Alive(msgspec.Struct):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct):
    status: Literal["ready", "not ready"]
    database: str  # "ok", or "unavailable: <error type>"
    redis: str  # "ok", or "unavailable: <error type>"
    migrations: str  # "ok", or what differs: "database at 0003, code at 0006"


READINESS_CHECKS = ("database", "redis", "migrations")  # Readiness's fields other than status


def migration_heads(script_location: Path) -> frozenset[str]:
    """The head revisions of the Alembic migrations in `script_location`."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


@get("/health", tags=["system"], opt=PUBLIC)
async def health() -> Alive:
    """`200` while the process serves requests; it asks nothing of PostgreSQL or Redis."""
    return Alive()


@get(
    "/ready",
    tags=["system"],
    opt=PUBLIC,  # for probes: no key
    responses={
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            data_container=Readiness,
            description="PostgreSQL or Redis does not answer, or the database's migrations "
            "are not the code's; the body says which.",
            generate_examples=False,
        )
    },
)
async def ready(
    request: Request[Any, Any, Any],
    db_session: NamedDependency[AsyncSession],
    task_queues: NamedDependency[TaskQueues],
) -> Response[Readiness]:
    """`200` when PostgreSQL and Redis answer and the migrations are at the code's head,
    else `503` naming what is not."""
    checked = await readiness(request.app.state, db_session, task_queues)
    ok = checked.status == "ready"
    return Response(checked, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


async def readiness(state: State, session: AsyncSession, task_queues: TaskQueues) -> Readiness:
    """What `/ready` answers, checked now (the scrape of `/metrics` reports it too)."""
    heads: frozenset[str] | str = state[_STATE_KEY]
    version_table = state["migration_version_table"]
    (database, migrations), redis = await asyncio.gather(
        _database(session, version_table, heads), _redis(task_queues)
    )
    ok = database == redis == migrations == "ok"
    return Readiness("ready" if ok else "not ready", database, redis, migrations)


async def _database(
    session: AsyncSession, version_table: str, heads: frozenset[str] | str
) -> tuple[str, str]:
    """(database, migrations): whether PostgreSQL answers, and its revisions vs the code's."""
    try:
        versions: Select[Any] = select(column("version_num")).select_from(table(version_table))
        result = await _within(session.execute(versions))
    except Exception as exc:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == _UNDEFINED_TABLE:
            return "ok", "database not migrated"  # it answers, with no version table
        return f"unavailable: {type(exc).__name__}", "unknown: the database does not answer"
    return "ok", _compare(frozenset(str(version) for version in result.scalars()), heads)


async def _redis(task_queues: TaskQueues) -> str:
    try:
        for queue in task_queues.queues.values():
            await _within(queue.redis.ping())  # type: ignore[attr-defined]
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def _within(answer: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(answer, CHECK_TIMEOUT)


def _compare(applied: frozenset[str], heads: frozenset[str] | str) -> str:
    if isinstance(heads, str):  # the code's heads could not be read at start-up
        return heads
    if applied == heads:
        return "ok"
    database = ", ".join(sorted(applied)) or "nothing"
    return f"database at {database}, code at {', '.join(sorted(heads))}"


class Probes(InitPluginProtocol):
    """`/health` and `/ready`, and the code's migration heads read once at start-up."""

    def __init__(self, script_location: Path, version_table: str) -> None:
        self._script_location = script_location
        self._version_table = version_table

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.route_handlers.extend([health, ready])
        app_config.state[_STATE_KEY] = "unknown: the application has not started"
        app_config.state["migration_version_table"] = self._version_table
        app_config.on_startup.append(self._read_heads)
        return app_config

    def _read_heads(self, app: Any) -> None:
        try:
            app.state[_STATE_KEY] = migration_heads(self._script_location)
        except Exception as exc:  # /ready says so; the rest of the API still serves
            log.error("could not read the migrations' heads", error=str(exc))
            app.state[_STATE_KEY] = f"unknown: the code's migrations cannot be read ({exc})"
