"""One autocommit connection kept open for a stream of small writes.

The lifecycle recorder and the API's grouped inserts each write one statement at a time,
hundreds of times a second. Through a pooled session each write would also pay a pool
checkout (and its pre-ping round trip), BEGIN and COMMIT. Held open in autocommit mode, a
write is one round trip, and its statement is prepared once for the connection's life.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Executable, Row
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnection:
    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine  # resolved on first use: nothing connects at start-up
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under it
        self._lock = asyncio.Lock()

    async def fetch(
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
        if self._connection is not None and self._driver.is_closed():
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
