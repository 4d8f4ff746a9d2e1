"""`JobRows`: the hottest reads of `background_jobs`, straight through the driver.

The list's pages (`fetch`) are statements built once per shape of search and compiled for
asyncpg's placeholders (`app.jobs.reads.shapes.DriverStatement`): no session, no row processing.
`GET /api/v1/jobs/{job_id}` is one indexed row. Through the ORM (a session, the repository,
an ORM object) the row cost the API four times what the HTTP around it did
(docs/benchmarks.md). Here it is one prepared statement on a pooled connection: asyncpg
prepares it once per connection, and the row comes back as plain column values (JSON columns
decoded by the codecs the engine installs on each connection), as the list's page does.

`background_jobs` is partitioned by `created_at` and a job id spells its row's (app/jobs/ids.py):
the statement names both, so PostgreSQL reads one partition's index, on a custom plan and on
the generic one a prepared statement comes to (pruned when it starts). An id that spells no
time (a row from before the partitioning) is looked up by itself, in every partition.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from app.db.models import BackgroundJob
from app.jobs.ids import created_at_of

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_JOBS = BackgroundJob.__table__
_ASYNCPG = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
# Compiled once, for asyncpg's placeholders ($1, $2): the statements never change.
ONE_JOB = str(
    select(_JOBS)
    .where(_JOBS.c.job_id == bindparam("job_id"), _JOBS.c.created_at == bindparam("created_at"))
    .compile(dialect=_ASYNCPG)
)
ONE_OLD_JOB = str(
    select(_JOBS).where(_JOBS.c.job_id == bindparam("job_id")).compile(dialect=_ASYNCPG)
)


class JobRows:
    """Reads on connections of the process's pool, each given back when the read returns."""

    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine  # resolved on first use: nothing connects at start-up

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection[Any]]:
        async with self._engine().connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None  # a connection of the pool has its driver's
            try:
                yield driver
            except BaseException as exc:
                # The pool would hand a broken connection out again.
                await connection.invalidate()
                if _broken(exc, driver):
                    # The connection failed, not the read: the database ended it (a 503, as
                    # through SQLAlchemy, if a new one fails too), not a misuse of the driver.
                    raise asyncpg.ConnectionDoesNotExistError(str(exc)) from exc
                raise

    async def one(self, job_id: UUID) -> Mapping[str, Any] | None:
        """The row of `job_id`, as column values; None: no such job. A connection found
        ended under the read is replaced once (a read is safe to send again)."""
        created_at = created_at_of(job_id)
        for attempt in range(2):
            try:
                async with self._driver() as driver:
                    row: Mapping[str, Any] | None = (
                        await driver.fetchrow(ONE_OLD_JOB, job_id)
                        if created_at is None
                        else await driver.fetchrow(ONE_JOB, job_id, created_at)
                    )
                    return row
            except asyncpg.ConnectionDoesNotExistError:
                if attempt:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def fetch(self, sql: str, arguments: list[Any]) -> list[Mapping[str, Any]]:
        """The rows of a read compiled for the driver (`shapes.DriverStatement`), as column
        values; replaced once on a connection found ended, as `one`."""
        for attempt in range(2):
            try:
                async with self._driver() as driver:
                    return list(await driver.fetch(sql, *arguments))
            except asyncpg.ConnectionDoesNotExistError:
                if attempt:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")


def _broken(exc: BaseException, driver: asyncpg.Connection[Any]) -> bool:
    """Whether the connection failed rather than the read: closed under it, or left in the
    middle of reading the goodbye of a server that ended it (asyncpg reads it a piece at a
    time; meanwhile the connection says `another operation is in progress`)."""
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and driver.is_closed()
