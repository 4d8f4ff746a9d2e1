"""What a scenario does with a queue, as SAQ's worker and callers do it, on either side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

WORKER = "differential-worker"  # the same worker id on both sides
TASK = "trigger_test"  # a task the project's registry knows (rows are created for its jobs)


def job(key: str, **fields: Any) -> Job:
    return Job(TASK, kwargs={"n": 1}, key=key, **fields)


async def enqueue(queue: RedisQueue, key: str, **fields: Any) -> Job:
    enqueued = await queue.enqueue(job(key, **fields))
    assert enqueued is not None, f"{key} was refused"
    return enqueued


async def take(queue: RedisQueue, wait: float = 0.3) -> Job | None:
    """The next job, as a worker takes it (`Worker.process`: `queue.dequeue`)."""
    return await queue.dequeue(timeout=wait)


async def start(taken: Job, started: int | None = None) -> None:
    """What `Worker.process` does to a job it took, before running it."""
    taken.started = now() if started is None else started
    taken.attempts += 1
    taken.worker_id = WORKER
    await taken.update(status=Status.ACTIVE)


async def take_and_start(queue: RedisQueue) -> Job:
    taken = await take(queue)
    assert taken is not None
    await start(taken)
    return taken


async def stored(queue: RedisQueue, key: str) -> Job:
    found = await queue.job(key)
    assert found is not None, f"{key} is not in Redis"
    return found


async def until(
    queue: RedisQueue, key: str, check: Callable[[Job], bool], within: float = 20
) -> Job:
    """Wait until the job `key` is stored and passes `check`."""
    async with asyncio.timeout(within):
        while True:
            found = await queue.job(key)
            if found is not None and check(found):
                return found
            await asyncio.sleep(0.02)


async def until_ended(queue: RedisQueue, key: str) -> Job:
    return await until(queue, key, lambda found: found.status in TERMINAL_STATUSES)
