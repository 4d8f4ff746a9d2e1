"""The sweep of the active list: stuck jobs, lost data, jobs taken and never started."""

from __future__ import annotations

import asyncio

from saq.utils import now

from tests.differential.allowed import SWEEP_SECOND_LOOK
from tests.differential.harness import Differ, Run
from tests.differential.steps import enqueue, start, take, take_and_start

SWEEP = {"lock": 60, "abort": 0.1}  # SAQ waits `abort` seconds for a worker to end the job


async def test_sweep_a_stuck_job(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "stuck", timeout=1)
        await enqueue(run.queue, "stuck-retried", timeout=1, retries=2)
        await enqueue(run.queue, "fine", timeout=60)
        for _ in range(2):
            taken = await take(run.queue)
            assert taken is not None
            await start(taken, started=now() - 5000)  # started 5 s ago: past its timeout
        await take_and_start(run.queue)
        run.observe("swept", sorted(await run.queue.sweep(**SWEEP)))

    await differ.check(scenario)


async def test_sweep_a_job_whose_data_is_gone(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        lost = await enqueue(run.queue, "lost")
        await take(run.queue)
        await run.redis.delete(lost.id)
        run.observe("swept", await run.queue.sweep(**SWEEP))

    await differ.check(scenario)


async def test_sweep_a_job_taken_and_never_started(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "orphan")
        await enqueue(run.queue, "orphan-retried", retries=2)
        await take(run.queue)
        await take(run.queue)
        run.observe("swept", sorted(await run.queue.sweep(**SWEEP)))

    await differ.check(scenario)


async def test_sweep_of_a_job_a_worker_is_starting(differ: Differ) -> None:
    """SAQ #277: SAQ sweeps a job taken a moment ago, and its worker runs it all the same."""

    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "starting")
        taken = await take(run.queue)
        assert taken is not None
        sweep = asyncio.create_task(run.queue.sweep(**SWEEP))
        await asyncio.sleep(0.5)  # the worker marks it active (SAQ's sweep is over by then)
        await start(taken)
        run.observe("swept", await sweep)

    await differ.check(scenario, allowed=(SWEEP_SECOND_LOOK,))
