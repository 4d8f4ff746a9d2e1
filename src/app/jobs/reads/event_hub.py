"""One reader of the job events per API process, fanned out to every open stream.

The hub's task follows the queue's Redis Stream (`app.jobs.record.events`) with one blocking XREAD
at a time, whatever the number of clients, and hands each event to the subscriptions that
want it (their filters and the key's project run here, before anything is queued). A client
that resumes (`Last-Event-ID`) reads what it missed with one XRANGE, up to the position from
which its subscription takes over: nothing is lost or sent twice in between.

A subscriber that cannot keep up (its buffer is full) is dropped: its stream ends after what
it holds, and the client resumes from its last event.

Processes add events to the stream only while some API process listens (see `events.py`):
the hub sets the listeners key before a subscription starts, and keeps it alive while it has
subscribers; after the last one leaves the key lives on for at least `LISTENED_FOR` less
one refresh interval: the time a client has to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from app.jobs.record.events import FIELD, LISTENED_FOR, JobEvent, decode, listeners_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger(__name__)

Entry = tuple[str, JobEvent]  # the stream id (the SSE `id:`), the event
START = "0-0"  # the position before every entry
_HISTORY_PAGE = 500
_ANNOUNCE_EVERY = LISTENED_FOR / 6  # seconds between refreshes of the listeners key


def position(entry_id: str) -> tuple[int, int]:
    """A stream id in its order (`<milliseconds>-<sequence>`)."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


class Subscription:
    """One stream's share of the events: those after `since` that `wants` accepts."""

    def __init__(self, wants: Callable[[JobEvent], bool], since: str, buffer: int) -> None:
        self.since = since
        self.events: asyncio.Queue[Entry] = asyncio.Queue(maxsize=buffer)
        self.dropped = False  # it fell behind: what it holds is good, nothing more comes
        self._wants = wants

    def offer(self, entry: Entry) -> bool:
        """Queue the entry if wanted; False once the subscriber is too far behind."""
        if not self._wants(entry[1]):
            return True
        try:
            self.events.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True


class EventHub:
    def __init__(self, redis: Redis, key: str, *, block_ms: int = 5000, buffer: int = 1000) -> None:
        self._redis = redis
        self.key = key
        self.listeners = listeners_key(key)
        self._announced = float("-inf")  # when the listeners key was last set
        self._block_ms = block_ms
        self._buffer = buffer
        self._position = START
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def subscribe(self, wants: Callable[[JobEvent], bool]) -> Subscription:
        """A subscription to every event after the stream's current end."""
        await self._announce()  # before the subscription starts: no event of it is skipped
        await self._start()
        subscription = Subscription(wants, self._position, self._buffer)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def history(
        self, after: str, until: str, wants: Callable[[JobEvent], bool]
    ) -> list[Entry]:
        """The wanted entries after `after`, up to and including `until` (one XRANGE a page).

        Entries the stream has trimmed since are gone: the client's row says where it stands.
        """
        found: list[Entry] = []
        start = f"({after}"
        while position(start[1:]) < position(until):
            page = await self._redis.xrange(self.key, min=start, max=until, count=_HISTORY_PAGE)
            for raw_id, fields in page:
                entry = _entry(raw_id, fields)
                if entry is not None and wants(entry[1]):
                    found.append(entry)
            if len(page) < _HISTORY_PAGE:
                break
            start = f"({_text(page[-1][0])}"
        return found

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._subscriptions.clear()

    async def _start(self) -> None:
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            last = await self._redis.xrevrange(self.key, count=1)
            self._position = _text(last[0][0]) if last else START
            self._task = asyncio.create_task(self._run(), name="job-event-hub")

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                answer = await self._redis.xread(
                    {self.key: self._position}, count=500, block=self._block_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: streams stay open, and catch up once back
                if not failing:
                    log.warning("job events unavailable, will retry", error=str(exc))
                failing = True
                self._announced = float("-inf")  # a restarted Redis lost the key
                await asyncio.sleep(1.0)
                continue
            failing = False
            if self._subscriptions and time.monotonic() - self._announced > _ANNOUNCE_EVERY:
                await self._announce()
            for _, entries in answer or []:
                for raw_id, fields in entries:
                    self._position = _text(raw_id)
                    entry = _entry(raw_id, fields)
                    if entry is not None:
                        self._deliver(entry)

    async def _announce(self) -> None:
        """Tell the processes that events are read here (for `LISTENED_FOR` seconds)."""
        try:
            await self._redis.set(self.listeners, 1, ex=LISTENED_FOR)
        except Exception as exc:  # Redis away: no event is added meanwhile anyway
            log.warning("could not announce job event listeners", error=str(exc))
            self._announced = float("-inf")  # again at the next turn of the loop
            return
        self._announced = time.monotonic()

    def _deliver(self, entry: Entry) -> None:
        for subscription in list(self._subscriptions):
            if not subscription.offer(entry):
                self._subscriptions.discard(subscription)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(raw_id: bytes | str, fields: dict[bytes, bytes]) -> Entry | None:
    data = fields.get(FIELD)
    if data is None:
        return None
    try:
        return _text(raw_id), decode(data)
    except Exception:  # an entry of another version of the app: skipped, not fatal
        log.warning("job event not understood", entry_id=_text(raw_id))
        return None
