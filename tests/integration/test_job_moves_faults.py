"""The worker's Redis moves under faults leave Redis as SAQ's would, on a real Redis.

A proxy (tests/support/proxy.py) loses the reply to one move after Redis ran it, or makes
Redis unreachable, at a chosen moment. These tests catch: a heartbeat that lands after the
job's retry (a cancelled caller's move still sent, or the retry on another path than the
heartbeat), a lost take reply that takes more jobs and strands the first ones, a finish sent
again that undoes the next run of the same key, a retry sent again that re-queues a job
another worker took meanwhile, a finish that cannot reach Redis failing its caller
instead of reaching the row and Redis later, and a read during an outage waiting for the
moves' reconnect instead of failing at once as SAQ's does; and job events, which ride on
the same channel, held for the moves' bound during an outage instead of dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis, from_url
from redis.exceptions import ConnectionError as RedisConnectionError
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from structlog.testing import capture_logs

from app.asgi import Parts, build_parts
from app.config import Settings
from app.jobs.lifecycle import JobStatus
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.gate import open_gate
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.record.events import STATUS, JobEvent
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test
from tests.support import WaitForRow, eventually
from tests.support.proxy import RedisProxy

ARGUMENTS = {"message": "m", "sleep_seconds": 0}


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the real Redis, beside any proxy."""
    client = from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[RedisProxy]:
    proxy = await RedisProxy.start(settings.redis_url)
    yield proxy
    await proxy.close()


@pytest.fixture
async def proxied(
    settings: Settings, engine: Any, proxy: RedisProxy
) -> AsyncIterator[Callable[..., Any]]:
    """A process's parts whose Redis is behind the proxy (its moves' bound `deliver_within`)."""
    made: list[Parts] = []

    async def make(deliver_within: float | None = None) -> TrackedQueue:
        parts = build_parts(replace(settings, redis_url=proxy.url), REGISTRY)
        if deliver_within is not None:
            parts.queue._batcher.deliver_within = deliver_within
        made.append(parts)
        await parts.queue.connect()
        return parts.queue

    yield make
    await proxy.allow()
    for parts in made:
        await parts.close()


async def enqueue(enqueuer: Enqueuer, n: int) -> list[str]:
    return [str((await enqueuer.enqueue(trigger_test, dict(ARGUMENTS))).job_id) for _ in range(n)]


async def listed(redis: Redis, queue: RedisQueue, kind: str) -> list[str]:
    ids = await redis.lrange(queue.namespace(kind), 0, -1)  # type: ignore[misc]
    return [queue.job_key_from_id(job_id.decode()) for job_id in ids]


async def stored(redis: Redis, queue: RedisQueue, key: str) -> dict[str, Any]:
    data = await redis.get(queue.job_id(key))
    assert data is not None, f"job {key} missing from Redis"
    return dict(json.loads(data))


async def running(queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]) -> Job:
    """A job taken and marked active, as a worker starts it."""
    await enqueue(make_enqueuer(REGISTRY, on=queue), 1)
    job = await queue.dequeue(timeout=5)
    assert job is not None
    job.attempts += 1
    await job.update(status=Status.ACTIVE)
    return job


async def test_a_heartbeat_waiting_behind_a_move_on_the_wire_never_lands_after_the_retry(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer], admin: Redis
) -> None:
    """SAQ's timeout cancels a task whose heartbeat waits to be sent, then retries the job:
    the heartbeat must not land after the retry (Redis would hold `active` with the error
    erased, and `active` published after `queued`)."""
    job = await running(queue, make_enqueuer)
    job.retries, job.retry_delay, job.retry_backoff = 2, 60.0, False
    heard = await listen(admin, job.id)

    # Writes wait in Redis for a while (reads go on): a move on the wire stays there.
    await admin.execute_command("CLIENT", "PAUSE", 500, "WRITE")
    on_the_wire = asyncio.ensure_future(queue._batcher.execute(("SET", job.id + ":x", "1")))
    await asyncio.sleep(0.05)
    heartbeat = asyncio.create_task(job.update())  # reads the job, then sends its SET
    await asyncio.sleep(0.1)
    heartbeat.cancel()
    await queue.retry(job, "TimeoutError")
    await on_the_wire
    await queue._batcher.idle()
    await admin.delete(job.id + ":x")

    await retried_with(admin, queue, job, "TimeoutError")
    messages = await heard()
    assert messages[-1:] == ["queued"], f"nothing after the retry's message: {messages}"


async def test_a_heartbeat_cancelled_before_it_was_sent_is_never_sent(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    """The moves' connection is lost and a heartbeat waits for the next one when the timeout
    cancels its task: it is dropped, as a plain redis-py call cancelled before it was sent."""
    queue: TrackedQueue = await proxied()
    job = await running(queue, make_enqueuer)
    job.retries, job.retry_delay, job.retry_backoff = 2, 60.0, False
    heard = await listen(admin, job.id)
    await proxy.refuse(drop=False)  # no new connection, the open ones go on
    await queue._batcher._connection.disconnect()  # the moves' connection lost

    heartbeat = asyncio.create_task(job.update())  # reads the job, then waits to send
    await asyncio.sleep(0.2)
    heartbeat.cancel()
    retrying = asyncio.create_task(queue.retry(job, "TimeoutError"))
    await asyncio.sleep(0.1)
    await proxy.allow()
    await asyncio.wait_for(retrying, 10)

    await retried_with(admin, queue, job, "TimeoutError")
    assert await heard() == ["queued"], "the retry's message alone"


async def test_a_heartbeat_whose_reply_was_lost_is_sent_again_before_the_retry(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    """A heartbeat ran in Redis but its reply was lost; its task is cancelled by the timeout
    and the job retried before the moves' connection is back: the heartbeat, sent again, must
    land before the retry, which waits behind it."""
    queue: TrackedQueue = await proxied()
    job = await running(queue, make_enqueuer)
    job.retries, job.retry_delay, job.retry_backoff = 2, 60.0, False
    heard = await listen(admin, job.id)
    lost = proxy.lose_reply_to(b"0.123456", then_hold=True)
    heartbeat = asyncio.create_task(job.update(progress=0.123456))
    await asyncio.wait_for(lost.wait(), 10)
    heartbeat.cancel()
    retrying = asyncio.create_task(queue.retry(job, "TimeoutError"))
    await asyncio.sleep(0.2)
    proxy.release()
    await asyncio.wait_for(retrying, 10)

    await retried_with(admin, queue, job, "TimeoutError")
    messages = await heard()
    assert messages[-1:] == ["queued"], f"nothing after the retry's message: {messages}"


async def listen(admin: Redis, channel: str) -> Callable[[], Any]:
    """Start hearing `channel`; the returned call gives what was published on it since."""
    pubsub = admin.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscription's confirmation

    async def heard() -> list[str]:
        messages = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            messages.append(message["data"].decode())
        await pubsub.aclose()
        return messages

    return heard


async def retried_with(admin: Redis, queue: RedisQueue, job: Job, error: str) -> None:
    data = await stored(admin, queue, job.key)
    assert (data["status"], data.get("error")) == ("queued", error)
    assert await admin.zscore(queue.namespace("incomplete"), job.id) is not None
    assert job.key not in await listed(admin, queue, "active")


async def test_a_lost_take_reply_hands_out_the_jobs_it_took_and_takes_no_more(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    queue: TrackedQueue = await proxied()
    keys = await enqueue(make_enqueuer(REGISTRY, on=queue), 6)
    # The gate open, as a worker's first take leaves it: the reply lost is a take's that moved
    # jobs, not the one that found the gate unknown.
    await open_gate(admin, queue.name)
    lost = proxy.lose_reply_to(queue.namespace("queued").encode())  # the next take

    taken = await asyncio.gather(*(queue.dequeue(timeout=1) for _ in range(3)))

    assert lost.is_set(), "the take's reply was lost"
    assert [job.key for job in taken if job is not None] == keys[:3]
    assert await listed(admin, queue, "active") == keys[:3]
    assert await listed(admin, queue, "queued") == keys[3:]


async def test_a_finish_sent_again_does_not_undo_the_next_run_of_its_key(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    """A cron job's key is enqueued again as soon as its run finished: a finish sent again
    after its reply was lost must not take the new run off the queue."""
    queue: TrackedQueue = await proxied()
    await queue.finish(await running(queue, make_enqueuer), Status.COMPLETE)  # warm: scripts
    job = await running(queue, make_enqueuer)
    lost = proxy.lose_reply_to(b"finish-marker", then_hold=True)
    finishing = asyncio.create_task(queue.finish(job, Status.COMPLETE, result="finish-marker"))
    await asyncio.wait_for(lost.wait(), 10)

    plain = RedisQueue(admin, name=queue.name)
    assert await plain.enqueue(Job("trigger_test", key=job.key, kwargs=ARGUMENTS)) is not None
    proxy.release()
    await asyncio.wait_for(finishing, 10)

    data = await stored(admin, queue, job.key)
    assert data["status"] == "queued", "the next run, untouched"
    assert await listed(admin, queue, "queued") == [job.key]
    assert await admin.zscore(queue.namespace("incomplete"), job.id) is not None


async def test_a_retry_sent_again_does_not_requeue_a_job_another_worker_took(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    queue: TrackedQueue = await proxied()
    warm = await running(queue, make_enqueuer)  # the scripts loaded
    await queue.retry(warm, "warm")
    await queue.finish(warm, Status.COMPLETE)
    job = await running(queue, make_enqueuer)
    job.retries, job.retry_delay, job.retry_backoff = 3, 0.0, False  # queued again at once
    lost = proxy.lose_reply_to(b"retry-marker", then_hold=True)
    retrying = asyncio.create_task(queue.retry(job, "retry-marker"))
    await asyncio.wait_for(lost.wait(), 10)

    other = RedisQueue(admin, name=queue.name)  # another worker, plain SAQ
    taken = await other.dequeue(timeout=1)
    assert taken is not None
    assert taken.key == job.key
    await taken.update(status=Status.ACTIVE)
    proxy.release()
    await asyncio.wait_for(retrying, 10)

    assert (await stored(admin, queue, job.key))["status"] == "active"
    assert await listed(admin, queue, "active") == [job.key]
    assert await listed(admin, queue, "queued") == [], "run once, not queued again"


async def test_a_finish_that_cannot_reach_redis_reaches_the_row_and_redis_later(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
    wait_for_row: WaitForRow,
) -> None:
    """Redis unreachable past the moves' bound while a job finishes: the caller (SAQ's worker)
    is not failed, the row gets the outcome, one line says so, and the finish lands once
    Redis answers again."""
    queue: TrackedQueue = await proxied(deliver_within=1.0)
    job = await running(queue, make_enqueuer)
    await proxy.refuse()
    with capture_logs() as logs:
        await queue.finish(job, Status.COMPLETE, result={"ok": 1})
    said = [entry for entry in logs if entry["event"].startswith("job move not in redis yet")]
    assert [(entry["log_level"], entry["job_key"]) for entry in said] == [("error", job.key)]

    row = await wait_for_row(job.key, lambda row: row.status == JobStatus.COMPLETE)
    assert row.result == {"ok": 1}
    assert (await stored(admin, queue, job.key))["status"] == "active", "not delivered yet"
    await proxy.allow()

    async def delivered() -> bool:
        return (await stored(admin, queue, job.key))["status"] == "complete"

    await eventually(delivered, within=15, what="the parked finish delivered")
    assert await listed(admin, queue, "active") == []


async def test_a_read_while_the_moves_wait_out_their_backoff_fails_at_once_as_saqs_does(
    proxied: Callable[..., Any],
    proxy: RedisProxy,
    make_enqueuer: Callable[..., Enqueuer],
    admin: Redis,
) -> None:
    """Redis down, a finish waiting for the channel's next reconnect (far off): a read
    (`queue.job`, so `Job.refresh`) makes its own attempt and fails with a connection error,
    as a read on SAQ's pool does; once Redis is back, a read gets through and takes the
    parked finish along."""
    queue: TrackedQueue = await proxied(deliver_within=3600.0)
    job = await running(queue, make_enqueuer)
    await proxy.refuse()
    finish = asyncio.create_task(queue.finish(job, Status.COMPLETE, result={"ok": 1}))
    channel = queue._batcher
    loop = asyncio.get_running_loop()

    async def failed_once() -> bool:
        return channel._attempted > -math.inf

    await eventually(failed_once, what="the finish's first connect refused")
    channel._next_attempt = loop.time() + 3600  # the backoff of a long outage, made longer
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(queue.job(job.key), timeout=60)  # only stops a hang
    assert not finish.done()
    assert (await stored(admin, queue, job.key))["status"] == "active"

    await proxy.allow()
    read = await asyncio.wait_for(queue.job(job.key), timeout=60)
    assert read is not None
    await asyncio.wait_for(finish, timeout=60)
    assert (await stored(admin, queue, job.key))["status"] == "complete"


async def test_job_events_during_an_outage_are_dropped_at_once_not_waited_for(
    proxied: Callable[..., Any], proxy: RedisProxy
) -> None:
    """The events ride on the moves' channel, but a live view does not wait out an outage:
    `publish_now` (which the recorder awaits before releasing a parent's children) gives up
    at the first failed connect and says so, instead of holding the recorder for the moves'
    bound."""
    queue: TrackedQueue = await proxied(deliver_within=3600.0)
    events = queue.recorder.events
    assert events is not None
    await proxy.refuse()
    event = JobEvent(
        kind=STATUS, job_id=uuid4(), status=JobStatus.QUEUED, attempt=1, at=datetime.now(UTC)
    )
    for _ in range(2):  # the first finds the connection gone, the second none to be had
        await asyncio.wait_for(events.publish_now([event]), timeout=60)  # stops a hang
        # Dropped, not sent: its warning is logged once (not read from the logs here:
        # structlog may have cached the module's logger before a capture could see it).
        assert events._failing
    assert not queue._batcher._connection.is_connected
