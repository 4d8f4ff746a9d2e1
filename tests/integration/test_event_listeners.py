"""Job events are added to the stream only while an API process listens, on real Redis.

Catches: a publisher that adds events nobody can read (the worker's cost of the streams),
one that skips an event of a change made after a stream opened, a hub that does not keep
its listeners key alive, and a resume (`Last-Event-ID`) that finds nothing because the
events after its last one were not kept in the resume window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.jobs.lifecycle import JobStatus
from app.jobs.pipeline import CommandBatcher
from app.jobs.reads import event_hub
from app.jobs.reads.event_hub import EventHub, Subscription
from app.jobs.record.events import LISTENED_FOR, STATUS, EventPublisher, JobEvent, stream_key
from tests.support import eventually


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def hub(redis: Redis, settings: Settings) -> AsyncIterator[EventHub]:
    hub = EventHub(redis, stream_key(settings.queue_name), block_ms=100)
    yield hub
    await hub.close()


def event(status: JobStatus = JobStatus.RUNNING) -> JobEvent:
    return JobEvent(kind=STATUS, job_id=uuid4(), status=status, attempt=1, at=datetime.now(UTC))


async def received(subscription: Subscription) -> JobEvent:
    entry = await subscription.events.get()
    return entry[1]


@pytest.mark.parametrize("through_the_queues_pipelines", [False, True])
async def test_events_are_added_only_while_someone_listens_or_may_resume(
    redis: Redis, hub: EventHub, settings: Settings, through_the_queues_pipelines: bool
) -> None:
    publisher = EventPublisher(redis, settings.queue_name)
    if through_the_queues_pipelines:  # as a worker's queue sends them
        publisher.send_with(CommandBatcher(redis))
    await publisher.publish_now([event()])
    assert await redis.xlen(publisher.key) == 0  # nobody listens: nothing to keep

    subscription = await hub.subscribe(lambda _: True)
    assert 0 < await redis.ttl(publisher.listeners) <= LISTENED_FOR
    seen = event()
    await publisher.publish_now([seen, event(JobStatus.COMPLETE)])
    assert await redis.xlen(publisher.key) == 2
    assert (await received(subscription)).job_id == seen.job_id

    hub.unsubscribe(subscription)  # the client went away; it may come back and resume
    later = event(JobStatus.FAILED)
    await publisher.publish_now([later])
    entries = await redis.xrange(publisher.key)
    assert len(entries) == 3
    resumed = await hub.history(entries[0][0].decode(), entries[-1][0].decode(), lambda _: True)
    assert [e.job_id for _, e in resumed][-1] == later.job_id

    await redis.delete(publisher.listeners)  # the resume window is over
    await publisher.publish_now([event()])
    assert await redis.xlen(publisher.key) == 3


async def test_the_published_events_go_out_through_the_background_task_too(
    redis: Redis, hub: EventHub, settings: Settings
) -> None:
    subscription = await hub.subscribe(lambda _: True)
    publisher = EventPublisher(redis, settings.queue_name)
    sent = [event(), event(JobStatus.COMPLETE)]
    publisher.publish(sent)
    await publisher.close()
    assert [(await received(subscription)).job_id for _ in sent] == [e.job_id for e in sent]


async def test_a_hub_with_subscribers_keeps_its_listeners_key_alive(
    redis: Redis, hub: EventHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_hub, "_ANNOUNCE_EVERY", 0.1)
    await hub.subscribe(lambda _: True)
    await redis.delete(hub.listeners)  # expired, or lost with a restarted Redis

    async def announced() -> bool:
        return bool(await redis.exists(hub.listeners))

    await eventually(announced, what="the listeners key set again")
