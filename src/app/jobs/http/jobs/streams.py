"""How an event stream runs once its handler has checked the request: its first messages,
then the subscription's events as they come, a heartbeat comment when none has been sent for
`EVENTS_HEARTBEAT_SECONDS`, until its time is up (`EVENTS_MAX_STREAM_SECONDS`), its job has
ended, or the key or session it was opened with no longer stands (asked every `recheck`
seconds: a revoked key or a logout ends it, in this process at once, in others within the
key cache time)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from litestar.di import Provide
from litestar.response.sse import ServerSentEventMessage

from app.jobs.reads.event_hub import EventHub, Subscription, position
from app.jobs.record.events import STATUS, JobEvent, encode

_HEARTBEAT = ServerSentEventMessage(data=None, comment="heartbeat")


@dataclass(frozen=True)
class EventStreams:
    hub: EventHub
    heartbeat: float  # seconds without an event before a heartbeat comment
    max_seconds: float  # a stream's life; 0: no limit
    recheck: float = 1.0  # seconds between two checks that the caller's key still stands


def event_message(entry_id: str, event: JobEvent) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=encode(event).decode(), event=event.kind, id=entry_id)


async def follow(
    first: list[ServerSentEventMessage],
    subscription: Subscription,
    streams: EventStreams,
    last_event_id: str | None,
    *,
    until_final: bool,
    still_valid: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEventMessage]:
    """`first`, then the subscription's events as they come, heartbeats while none does;
    until the stream's time is up or its caller's key or session no longer stands."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + streams.max_seconds if streams.max_seconds > 0 else math.inf
    # A client's id past the stream's end (a stream that was reset) must not repeat events.
    seen = max(position(subscription.since), position(last_event_id or "0-0"))
    try:
        for message in first:
            yield message
        sent_at = next_check = loop.time()
        while not (subscription.dropped and subscription.events.empty()):
            now = loop.time()
            if now >= ends_at:
                return
            if now >= next_check:
                if not await still_valid():
                    return
                next_check = now + streams.recheck
            heartbeat_at = sent_at + max(streams.heartbeat, 0.05)
            if now >= heartbeat_at:
                yield _HEARTBEAT
                sent_at = now
                continue
            try:
                entry_id, event = await asyncio.wait_for(
                    subscription.events.get(), min(heartbeat_at, ends_at, next_check) - now
                )
            except TimeoutError:
                continue
            if position(entry_id) <= seen:
                continue
            yield event_message(entry_id, event)
            sent_at = loop.time()
            if until_final and event.kind == STATUS and event.final:
                return
    finally:
        streams.hub.unsubscribe(subscription)


def events_dependencies(
    hub: EventHub, heartbeat: float, max_seconds: float, recheck: float = 1.0
) -> dict[str, Provide]:
    """`event_streams`: the process's hub and the streams' timing."""
    streams = EventStreams(hub, heartbeat, max_seconds, recheck)

    def provide_event_streams() -> EventStreams:
        return streams

    return {"event_streams": Provide(provide_event_streams, use_cache=True, sync_to_thread=False)}
