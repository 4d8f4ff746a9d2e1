"""Counting a task's runs inside the task itself, where a second run cannot hide.

The worker logs `job started` only for transitions the row applied, and a row ignores a
repeated event: a job run twice can leave one line and one row. A counter bumped by the
task function on every call counts every run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from saq.queue.redis import RedisQueue

from app.jobs.registry import TaskFunction, policy_of, tracked_task


def counted(task: TaskFunction) -> TaskFunction:
    """`task` under its own name and policy, counting each run (by job key) in Redis."""

    async def run(ctx: dict[str, Any], **arguments: Any) -> Any:
        job = ctx["job"]
        await job.queue.redis.hincrby(_counter(job.queue), job.key, 1)
        return await task(ctx, **arguments)

    run.__name__ = run.__qualname__ = task.__qualname__  # the worker finds tasks by this name
    return tracked_task(**asdict(policy_of(task)))(run)


async def executions(queue: RedisQueue) -> dict[str, int]:
    """How many times each job of `queue` (by key) has been run so far."""
    counts = await queue.redis.hgetall(_counter(queue))  # type: ignore[misc]
    return {key.decode(): int(value) for key, value in counts.items()}


def _counter(queue: RedisQueue) -> str:
    return queue.namespace("test-executions")
