"""Database access outside the ORM's unit of work: one held connection for streams of small
writes, and the sessions the service reads with.

The lifecycle recorder and the outbox each write one statement at a time, hundreds of times
a second. Through a pooled session each write would also pay a pool checkout (and its
pre-ping round trip), BEGIN and COMMIT. Held open in autocommit mode, a write is one round
trip, and its statement is prepared once for the connection's life (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from sqlalchemy import Executable, Row
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class Connection(Protocol):
    """What the recorder and the outbox write through; unit tests stand in for it."""

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]: ...

    async def close(self) -> None: ...


class HeldConnection:
    """One autocommit connection from `engine`'s pool, kept open for the process's life."""

    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine  # resolved on first use: nothing connects at start-up
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under it
        self._lock = asyncio.Lock()

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        """Run `statement`, committed on return, and return its rows.

        A connection that failed is thrown away and replaced on the next call.
        """
        async with self._lock:
            connection = await self._open()
            try:
                rows = (await connection.execute(statement, parameters)).all()
                await connection.commit()  # no round trip in autocommit: resets SQLAlchemy's state
            except BaseException:
                await self._discard()
                raise
            return rows

    async def close(self) -> None:
        async with self._lock:
            await self._discard()

    async def _open(self) -> AsyncConnection:
        # A server restart closes the socket, which asyncpg notices without a round trip:
        # checking that is the pre-ping of a held connection.
        if self._connection is not None and (
            self._driver.is_closed() or _ended_unread(self._driver)
        ):
            await self._discard()
        if self._connection is None:
            connection = await self._engine().connect()
            try:
                self._driver = (await connection.get_raw_connection()).driver_connection
                self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                await connection.close()
                raise
        return self._connection

    async def _discard(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it is being thrown away
                await connection.invalidate()  # never hand a broken connection to the pool


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """The process's engine: a connection is checked when it leaves the pool, without a
    round trip.

    SQLAlchemy's `pool_pre_ping` costs every read three round trips (BEGIN, a ping,
    ROLLBACK: a third of a `GET` one job's API CPU, docs/benchmarks.md). A server that
    restarts or ends a backend closes its socket, which asyncpg notices on its own (as
    `HeldConnection` relies on): such a connection is thrown away at checkout and the pool
    hands over another.
    """
    engine = create_async_engine(url, **options)
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    driver = dbapi_connection.driver_connection
    if driver.is_closed() or _ended_unread(driver):
        raise DisconnectionError("the server closed this connection")  # the pool tries another


def _ended_unread(driver: Any) -> bool:
    """Whether the server ended this idle connection and asyncpg has not read all of it yet.

    The server's goodbye (a FATAL message, then the end of the stream) is read by the event
    loop one piece at a time; in between, asyncpg neither calls the connection closed nor
    can use it (`another operation is in progress`: a 500). An idle connection is sent
    nothing else, so anything waiting on its socket means it is ended. One non-blocking peek,
    no round trip."""
    transport = getattr(driver, "_transport", None)  # asyncpg keeps no public handle on it
    wrapped = transport.get_extra_info("socket") if transport is not None else None
    if wrapped is None:
        return False
    with wrapped.dup() as sock:  # asyncio hides the socket's recv; a copy shares its queue
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing waiting: alive
        except OSError:
            return True
    return True


def autocommit_sessions(engine: Callable[[], AsyncEngine]) -> Callable[[], AsyncSession]:
    """Sessions on `engine` (made on first use) whose statements each commit on their own.

    A read is one statement, so a transaction would only add BEGIN and ROLLBACK round trips.
    """
    made: list[async_sessionmaker[AsyncSession]] = []

    def open_session() -> AsyncSession:
        if not made:
            autocommit = engine().execution_options(isolation_level="AUTOCOMMIT")
            made.append(async_sessionmaker(autocommit, expire_on_commit=False))
        return made[0]()

    return open_session
