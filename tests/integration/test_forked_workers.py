"""Worker processes forked from one built queue, as `workers run --workers N` makes them, each
take their own jobs.

Catches: the moves' guard (and its count) copied into every process by the fork, so that the
second process's first take was read as a replay of the first's and handed it the same jobs:
both processes ran them (seen in tests/e2e/test_worker_processes_stop.py as jobs started
twice, at attempts 1 and 2 together).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from redis.asyncio import from_url

from app.asgi import build_parts
from app.config import Settings
from app.jobs.queue.gate import open_gate
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test


async def _enqueue(settings: Settings, n: int) -> list[str]:
    parts = build_parts(settings, REGISTRY)
    redis = from_url(settings.redis_url)
    try:
        await open_gate(redis, settings.queue_name)
        arguments = {"message": "m", "sleep_seconds": 0}
        return [
            str((await parts.enqueuer.enqueue(trigger_test, arguments)).job_id) for _ in range(n)
        ]
    finally:
        await redis.aclose()
        await parts.close()


def _take_one(queue: TrackedQueue, answers: Any) -> None:
    """A forked worker process's first take."""

    async def take() -> str | None:
        await queue.connect()
        try:
            job = await queue.dequeue(timeout=10)
            return job.key if job is not None else None
        finally:
            await queue.disconnect()

    answers.put(asyncio.run(take()))


def test_processes_forked_from_one_queue_take_different_jobs(settings: Settings) -> None:
    job_ids = asyncio.run(_enqueue(settings, 2))
    queue = build_parts(settings, REGISTRY).queue  # built, never connected, before the fork
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    taken = []
    for _ in range(2):  # one after the other: the second's take comes after the first's
        child = fork.Process(target=_take_one, args=(queue, answers))
        child.start()
        taken.append(answers.get(timeout=60))  # the bound only stops a broken test
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sorted(taken) == sorted(job_ids), "each process took its own job"
