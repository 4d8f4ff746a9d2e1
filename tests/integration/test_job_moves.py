"""The tracked queue's own Redis moves (`app.jobs.queue.moves`), on real Redis.

A worker takes, marks active and finishes jobs in fewer round trips than SAQ, the jobs of
concurrent callers sharing a pipeline. These tests catch: takes that lose SAQ's order or do
not leave the job on the active list, a worker that no longer wakes for a job enqueued while
it waits, a finish or a mark without SAQ's pub/sub message (`queue.apply` and `listen` would
hang), a Redis that lost its scripts (a restart) failing every finish, a taker cancelled
mid-take leaving its job astray, and one caller's error reply reaching another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ResponseError
from saq.job import TERMINAL_STATUSES, Status

from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.pipeline import CommandBatcher
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test
from tests.support import StartWorker, eventually

ARGUMENTS = {"message": "m", "sleep_seconds": 0}


async def command_calls(queue: TrackedQueue, command: str) -> int:
    stats = await queue.redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def listed(queue: TrackedQueue, kind: str) -> list[str]:
    ids = await queue.redis.lrange(queue.namespace(kind), 0, -1)  # type: ignore[misc]
    return [queue.job_key_from_id(job_id.decode()) for job_id in ids]


async def enqueue(enqueuer: Enqueuer, n: int) -> list[str]:
    return [str((await enqueuer.enqueue(trigger_test, dict(ARGUMENTS))).job_id) for _ in range(n)]


async def test_concurrent_takes_get_the_jobs_in_order_sharing_script_calls(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    warm_up, *keys = await enqueue(make_enqueuer(REGISTRY), 6)
    assert (await queue.dequeue(timeout=5)).key == warm_up  # type: ignore[union-attr]
    blocking, moves, scripts = [
        await command_calls(queue, c) for c in ("blmove", "lmove", "evalsha")
    ]

    taken = await asyncio.gather(*(queue.dequeue(timeout=5) for _ in keys))

    assert [job.key for job in taken if job is not None] == keys
    assert all(job.status == Status.QUEUED for job in taken if job is not None)
    assert await listed(queue, "active") == [warm_up, *keys]  # taken, until marked active or swept
    assert await listed(queue, "queued") == []
    assert await command_calls(queue, "blmove") == blocking  # SAQ's path not needed
    assert await command_calls(queue, "lmove") == moves + 5
    # Five takers share script calls: one, or two when the first was written at once (the
    # channel had been quiet) and the four others came while it was on the wire.
    assert await command_calls(queue, "evalsha") - scripts in (1, 2)


async def test_an_idle_taker_wakes_for_a_job_enqueued_later(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    waiting = asyncio.create_task(queue.dequeue(timeout=20))

    async def blocked() -> bool:
        clients = await queue.redis.client_list()
        return any(client["cmd"] == "blmove" for client in clients)

    await eventually(blocked, what="the taker waiting in BLMOVE")
    [key] = await enqueue(make_enqueuer(REGISTRY), 1)
    job = await asyncio.wait_for(waiting, 20)
    assert job is not None
    assert job.key == key
    assert await listed(queue, "active") == [key]


async def test_marking_active_and_finishing_publish_on_the_jobs_channel(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    [key] = await enqueue(make_enqueuer(REGISTRY), 1)
    heard: list[Status] = []

    def hear(_: str, status: Status) -> bool:
        heard.append(status)
        return status in TERMINAL_STATUSES

    listening = asyncio.create_task(queue.listen([key], hear, timeout=20))

    async def subscribed() -> bool:
        return bool(await queue.redis.pubsub_numpat())

    await eventually(subscribed, what="the queue's pub/sub subscription")
    job = await queue.dequeue(timeout=5)
    assert job is not None
    job.attempts += 1
    await job.update(status=Status.ACTIVE)
    stored = await queue.job(key)
    assert stored is not None
    assert stored.status == Status.ACTIVE
    assert stored.touched
    await queue.finish(job, Status.COMPLETE, result={"ok": True})
    await listening
    assert heard == [Status.ACTIVE, Status.COMPLETE]
    stored = await queue.job(key)
    assert stored is not None
    assert (stored.status, stored.result) == (Status.COMPLETE, {"ok": True})
    assert await listed(queue, "active") == []
    assert await queue.redis.zscore(queue.namespace("incomplete"), job.id) is None
    assert 0 < await queue.redis.ttl(job.id) <= job.ttl


async def test_apply_returns_the_result_of_a_job_a_worker_ran(
    queue: TrackedQueue, start_worker: StartWorker
) -> None:
    await start_worker()
    result = await queue.apply("trigger_test", timeout=30, message="applied", sleep_seconds=0)
    assert result == {"message": "applied", "slept_seconds": 0}


async def test_a_finish_after_redis_lost_its_scripts_still_finishes(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    await enqueue(make_enqueuer(REGISTRY), 2)
    job = await queue.dequeue(timeout=5)
    assert job is not None
    await queue.redis.script_flush()  # what a Redis restart does
    await queue.finish(job, Status.FAILED, error="boom")
    stored = await queue.job(job.key)
    assert stored is not None
    assert (stored.status, stored.error) == (Status.FAILED, "boom")
    await queue.redis.script_flush()
    assert await queue.dequeue(timeout=5) is not None  # the take script, loaded again


async def test_a_job_taken_for_a_cancelled_taker_goes_back_to_the_head_of_the_queue(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    first, second = await enqueue(make_enqueuer(REGISTRY), 2)
    await queue.version()  # known before the pause: both takers stage at once
    admin = queue.redis.client()
    try:
        await admin.execute_command("CLIENT", "PAUSE", 500, "ALL")  # the take stays in flight
        gone = asyncio.create_task(queue.dequeue(timeout=5))
        kept = asyncio.create_task(queue.dequeue(timeout=5))
        await asyncio.sleep(0.1)
        gone.cancel()
        job = await asyncio.wait_for(kept, 20)
    finally:
        await admin.aclose()
    assert job is not None
    assert job.key == first
    await eventually(
        lambda: _equals(listed(queue, "queued"), [second]), what="the job put back on the queue"
    )
    assert await listed(queue, "active") == [first]


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_one_callers_error_reply_is_raised_to_it_alone(queue: TrackedQueue) -> None:
    batcher = CommandBatcher(queue.redis)
    key = queue.namespace("test-text")
    await queue.redis.set(key, "not a number")
    wrong = asyncio.ensure_future(batcher.execute(("INCR", key)))
    right = asyncio.ensure_future(batcher.execute(("SET", key + "-2", "2"), ("GET", key + "-2")))
    with pytest.raises(ResponseError):
        await wrong
    assert await right == [True, b"2"]
    await batcher.idle()


async def test_a_queue_connected_again_after_it_was_closed_still_moves_jobs(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    await queue.disconnect()
    await queue.connect()
    [key] = await enqueue(make_enqueuer(REGISTRY), 1)
    job = await queue.dequeue(timeout=5)
    assert job is not None
    assert job.key == key
    await queue.finish(job, Status.COMPLETE)
    stored = await queue.job(key)
    assert stored is not None
    assert stored.status == Status.COMPLETE


async def test_a_closed_queue_still_reads_a_job_as_saqs_does(
    queue: TrackedQueue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    """Reads go on the moves' channel while it is open; once it is closed, on a pool
    connection (SAQ's `queue.job` after `disconnect` reads all the same)."""
    [key] = await enqueue(make_enqueuer(REGISTRY), 1)
    await queue.disconnect()
    stored = await queue.job(key)
    assert stored is not None
    assert stored.status == Status.QUEUED
    assert [job.key for job in await queue.jobs([key]) if job is not None] == [key]
