"""A paused queue, where its jobs are taken: the gate key `saq:<queue>:gate` in Redis.

The pause is recorded in PostgreSQL (`queue_pauses`, written by `app.jobs.control.queues`);
the gate mirrors it where the take script can read it in the same step as it moves a job
(`scripts.TAKE`): `open` lets the take move jobs, `paused` makes it move none. An absent gate
means unknown (a Redis restarted empty, a queue never seen): the take moves nothing and the
worker reads the record (`restore`), then writes the gate only if it is still absent, so that
a read made before a pause or a resume can never overwrite the gate that pause or resume
wrote. A worker that cannot read PostgreSQL keeps its last read; one that never read it takes
nothing until it can. A read made less than FRESH seconds ago (at connect, typically) is used
without a new query, so a worker's first take does not wait for PostgreSQL.

While its queue is paused a worker does not spin: it waits for the resume's message on the
gate's channel, and looks again every `recheck` seconds, or at once when its subscription was
lost (a message may have been: a Redis restarted empty also lost the gate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import QueuePause

log = structlog.get_logger(__name__)

OPEN: Final = "open"
PAUSED: Final = "paused"
RECHECK = 5.0  # seconds a paused worker waits for the resume's message before it looks itself
FRESH = 0.5  # seconds a read of the record is used again to restore the gate (no query)
_LISTEN_BACKOFF = 1.0


def gate_key(queue_name: str) -> str:
    """The gate's key, and the channel its resumes are announced on."""
    return f"saq:{queue_name}:gate"


async def read_pause(sessions: Callable[[], AsyncSession], queue_name: str) -> QueuePause | None:
    async with sessions() as session:
        pause: QueuePause | None = await session.scalar(
            select(QueuePause).where(QueuePause.queue == queue_name)
        )
        return pause


async def close_gate(redis: Redis, queue_name: str) -> str | None:
    """Set the gate to `paused`; the value it held before (None: absent)."""
    before = await redis.set(gate_key(queue_name), PAUSED, get=True)
    return before.decode() if isinstance(before, bytes) else before


async def open_gate(redis: Redis, queue_name: str) -> None:
    """Set the gate to `open` and wake the workers that wait for it."""
    key = gate_key(queue_name)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, OPEN)
        pipe.publish(key, OPEN)
        await pipe.execute()


async def put_gate_back(redis: Redis, queue_name: str, before: str | None) -> None:
    """A pause that could not be recorded: the gate as it was."""
    if before is None:
        await redis.delete(gate_key(queue_name))
    elif before == OPEN:
        await open_gate(redis, queue_name)


class QueueGate:
    """A worker process's side of its queue's gate."""

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        sessions: Callable[[], AsyncSession],
        *,
        recheck: float = RECHECK,
        fresh: float = FRESH,
    ) -> None:
        self.key = gate_key(queue_name)
        self._redis = redis
        self._queue_name = queue_name
        self._sessions = sessions
        self.recheck = recheck
        self._fresh = fresh
        self.paused: bool | None = None  # the record as last read; None: never read
        self._read_at: float | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._listener: asyncio.Task[None] | None = None

    async def held(self, *, known: bool) -> None:
        """The take moved nothing: the gate said `paused` (`known`), or nothing even after a
        `restore` (PostgreSQL never read): wait, rather than take again at once."""
        if known:
            await self._wait_for_resume()
        else:
            await asyncio.sleep(self.recheck)

    async def read(self) -> None:
        """Read the record (at connect, so that a first take need not wait for it)."""
        try:
            self.paused = await read_pause(self._sessions, self._queue_name) is not None
            self._read_at = time.monotonic()
        except Exception as exc:  # PostgreSQL away: the last read still holds
            log.warning("queue pause not read", queue=self._queue_name, error=str(exc))

    async def restore(self) -> bool:
        """Write the gate from the record if it is still absent; False if nothing is known."""
        if self._read_at is None or time.monotonic() - self._read_at >= self._fresh:
            await self.read()
        if self.paused is None:
            return False
        written = await self._redis.set(self.key, PAUSED if self.paused else OPEN, nx=True)
        if written:
            log.info("queue gate restored", queue=self._queue_name, paused=self.paused)
        return True

    async def _wait_for_resume(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="queue-gate-listener")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=self.recheck)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _listen(self) -> None:
        """Wakes every waiter at each message on the gate's channel (a resume)."""
        while True:
            pubsub: PubSub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self.key)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a resume may be missed: the waiters look now
                log.debug("queue gate listener lost", error=str(exc))
                self._wake()
                await asyncio.sleep(_LISTEN_BACKOFF)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
