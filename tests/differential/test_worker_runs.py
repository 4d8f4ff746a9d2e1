"""SAQ's real `Worker` on each side: apply/map, timeouts, heartbeats, retries and aborts.

One job at a time (concurrency 1), so each job's record and messages are the same from run
to run; the upkeep timers are long but for the abort check, so no lock expires mid-test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.base import JobError
from saq.queue.redis import RedisQueue
from saq.types import Context
from saq.worker import Worker

from tests.differential.harness import Differ, Run
from tests.differential.steps import WORKER, until, until_ended

TIMERS: Any = {"schedule": 600, "worker_info": 600, "sweep": 600, "abort": 0.2}
_never = asyncio.Event()


async def double(_ctx: Context, *, n: int) -> int:
    return n * 2


async def failing(_ctx: Context) -> None:
    raise ValueError("failing on purpose")


async def sleeper(_ctx: Context, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def beating(ctx: Context, *, beats: int) -> str:
    job = ctx["job"]
    for beat in range(beats):
        await job.update()  # a heartbeat
        await job.update(progress=(beat + 1) / beats)
        await asyncio.sleep(0.05)
    return "beaten"


async def beat_then_hang(ctx: Context) -> None:
    await ctx["job"].update(progress=0.5)
    await asyncio.sleep(5)  # past its timeout, no heartbeat on the wire


async def waiter(_ctx: Context) -> None:
    await _never.wait()  # until aborted


@asynccontextmanager
async def working(queue: RedisQueue) -> AsyncIterator[Worker]:
    worker = Worker(
        queue,
        functions=[double, failing, sleeper, beating, beat_then_hang, waiter],
        concurrency=1,
        id=WORKER,
        timers=TIMERS,
    )
    # The worker sweeps as it starts, racing its first take (SAQ #277, which SAQ's side
    # loses now and then): swept here first, its lock makes the worker's sweep a no-op.
    assert await queue.sweep(lock=600) == []
    running = asyncio.create_task(worker.start())
    try:
        yield worker
    finally:
        await worker.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_apply_and_map(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        async with working(run.queue):
            run.observe(
                "apply",
                await run.queue.apply("double", key="apply", n=2, timeout=10, poll_interval=0.05),
            )
            run.observe(
                "map",
                await run.queue.map(
                    "double",
                    [{"n": 1, "key": "m1"}, {"n": 3, "key": "m2"}],
                    timeout=10,
                    poll_interval=0.05,
                ),
            )
            outcomes = await run.queue.map(
                "failing", [{"key": "f1"}], timeout=10, return_exceptions=True, poll_interval=0.05
            )
            run.observe("failed", [type(outcome).__name__ for outcome in outcomes])
            assert isinstance(outcomes[0], JobError)

    await differ.check(scenario)


async def test_worker_with_timeouts_heartbeats_and_retries(differ: Differ) -> None:
    jobs = [
        Job("beating", kwargs={"beats": 3}, key="beat", heartbeat=5, timeout=10),
        Job("sleeper", kwargs={"seconds": 5}, key="slow", timeout=1),
        Job("failing", key="flaky", retries=2),
        Job("beat_then_hang", key="hung", timeout=1, retries=2, retry_delay=60),
        Job("double", kwargs={"n": 3}, key="ok"),
    ]

    async def scenario(run: Run) -> None:
        for one in jobs:
            assert await run.queue.enqueue(Job(**{**one.__dict__, "queue": None})) is not None
        async with working(run.queue):
            for one in jobs:
                run.observe(one.key, (await until(run.queue, one.key, _settled)).status)

    await differ.check(scenario)


def _settled(job: Job) -> bool:
    """Ended, or waiting for a retry's delay."""
    return job.status in TERMINAL_STATUSES or (
        job.status == Status.QUEUED and job.error is not None and job.retry_delay > 0
    )


async def test_worker_with_an_abort(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await run.queue.enqueue(Job("waiter", key="held", timeout=30))
        await run.queue.enqueue(Job("double", kwargs={"n": 4}, key="after"))
        async with working(run.queue):
            held = await until(run.queue, "held", lambda job: job.status == Status.ACTIVE)
            await run.queue.abort(held, "stopped by hand")
            run.observe("held", (await until_ended(run.queue, "held")).status)
            run.observe("after", (await until_ended(run.queue, "after")).result)

    await differ.check(scenario)


async def test_worker_stopped_with_a_job_running(differ: Differ) -> None:
    """A worker that stops (SIGTERM, no grace period) puts its running job back."""

    async def scenario(run: Run) -> None:
        await run.queue.enqueue(Job("waiter", key="held", timeout=30))
        async with working(run.queue):
            await until(run.queue, "held", lambda job: job.status == Status.ACTIVE)
        run.observe("held", (await run.queue.job("held")))

    await differ.check(scenario)
