"""Group the outbox inserts of concurrent requests into one statement.

Under load many trigger requests are in flight at once; each would pay a round trip and a
statement of its own. Here a request hands its row over and waits: one flush at a time
takes every row that arrived meanwhile and inserts them together (autocommit, one round
trip). An idle API pays nothing extra: a lone request is flushed at once. The response is
sent only after the flush committed, so "the row exists before the 202" still holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.jobs.services import insert_rows

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.db.models import BackgroundJob


class InsertBatcher:
    def __init__(self, engine: Callable[[], AsyncEngine], max_batch: int = 500) -> None:
        self._engine = engine  # resolved on first use: nothing connects at start-up
        self._max_batch = max_batch
        self._pending: list[tuple[BackgroundJob, asyncio.Future[bool]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def insert(self, row: BackgroundJob) -> bool:
        """Insert `row` (committed on return); False if its idempotency key was taken."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            try:
                async with self._engine().connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    inserted = await insert_rows(autocommit, [row for row, _ in batch])
            except Exception as exc:  # every waiting request learns it (a 503, nothing enqueued)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for row, done in batch:
                if not done.done():
                    done.set_result(row.job_id in inserted)
