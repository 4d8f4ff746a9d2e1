"""`Batcher`: the items of concurrent callers handed to one flush at a time (the outbox's
INSERT and Redis pipeline for every trigger that arrived during the previous flush)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Batcher(Generic[Item, Outcome]):
    """Hands the items of concurrent callers to one flush at a time.

    A caller's item waits while a flush is running; the next flush takes every item that
    arrived meanwhile. A caller is answered only after the flush that carried its item.
    """

    def __init__(
        self, flush: Callable[[list[Item]], Awaitable[Sequence[Outcome]]], max_batch: int = 500
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
            batch = self._pending[: self._max_batch]
            self._pending = self._pending[self._max_batch :]
            try:
                outcomes = await self._flush_batch([item for item, _ in batch])
            except Exception as exc:  # every waiting caller learns it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():
                    done.set_result(outcome)
