"""Group the work of concurrent requests into one flush.

Under load many trigger requests are in flight at once; each would pay its own database
and Redis round trips. Here a request hands its item over and waits: one flush at a time
takes every item that arrived meanwhile and handles them together. An idle API pays
nothing extra: a lone request is flushed at once. A request is answered only after the
flush that carried its item returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Batcher(Generic[Item, Outcome]):
    def __init__(
        self,
        flush: Callable[[list[Item]], Awaitable[Sequence[Outcome]]],
        max_batch: int = 500,
    ) -> None:
        self._flush_batch = flush  # one outcome per item, in order
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Outcome:
        """`item`'s outcome, once the flush that carried it has returned."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
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
                outcomes = await self._flush_batch([item for item, _ in batch])
            except Exception as exc:  # every waiting request learns it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(outcome)
