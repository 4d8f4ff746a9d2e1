"""Enqueue and take: Redis after SAQ's calls equals Redis after the project's."""

from __future__ import annotations

import asyncio

from saq.job import CronJob
from saq.types import Context
from saq.worker import Worker

from app.jobs.queue.tracked import TrackedQueue
from tests.differential.harness import Differ, Run
from tests.differential.steps import WORKER, enqueue, job, take


async def tick(_ctx: Context) -> None:
    """A cron task (never run here: only scheduled)."""


async def test_enqueue_with_own_key(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        run.observe("first", await run.queue.enqueue(job("own", timeout=5, retries=3)))
        run.observe("again while unfinished", await run.queue.enqueue(job("own")))
        run.observe("another", await run.queue.enqueue(job("other", ttl=0, meta={"by": "x"})))

    await differ.check(scenario)


async def test_enqueue_on_a_cron_key(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        worker = Worker(
            run.queue, functions=[], cron_jobs=[CronJob(tick, cron="0 0 1 1 *")], id=WORKER
        )
        await worker.schedule(lock=60)  # the cron key `cron:tick`, due next New Year
        await worker.schedule(lock=60)  # the same key again: refused while unfinished
        run.observe("incomplete", await run.queue.count("incomplete"))

    await differ.check(scenario)


async def test_enqueue_scheduled(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "later", scheduled=run.at)
        await enqueue(run.queue, "overdue", scheduled=run.at - 7200)
        run.observe("moved to the queue", sorted(await run.queue.schedule(lock=60)))

    await differ.check(scenario)


async def test_the_outbox_enqueue_many_is_saqs_enqueue(differ: Differ) -> None:
    """The outbox's jobs (row ids as keys) in one pipeline, against SAQ's enqueue one by one."""
    keys = ["5a4cc0a4-2f54-4a0e-9a38-000000000001", "5a4cc0a4-2f54-4a0e-9a38-000000000002"]

    async def scenario(run: Run) -> None:
        jobs = [job(key) for key in [*keys, keys[0]]]  # the last one: a key still unfinished
        if isinstance(run.queue, TrackedQueue):
            accepted = await run.queue.enqueue_many(jobs)
        else:
            accepted = [await run.queue.enqueue(one) is not None for one in jobs]
        run.observe("accepted", accepted)

    await differ.check(scenario)


async def test_take_in_order(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        for key in ("a", "b", "c"):
            await enqueue(run.queue, key)
        run.observe("taken", [await take(run.queue) for _ in range(3)])

    await differ.check(scenario)


async def test_take_with_more_callers_than_jobs(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        for key in ("a", "b"):
            await enqueue(run.queue, key)
        taken = await asyncio.gather(*(take(run.queue, wait=0.3) for _ in range(4)))
        run.observe("taken", sorted(found.key if found else "" for found in taken))

    await differ.check(scenario)


async def test_take_from_an_empty_queue_times_out(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        run.observe("taken", await take(run.queue, wait=0.2))
        await enqueue(run.queue, "late")  # the next take still finds it
        run.observe("then", await take(run.queue, wait=0.2))

    await differ.check(scenario)


async def test_take_a_job_whose_data_is_gone(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        lost = await enqueue(run.queue, "lost")
        await enqueue(run.queue, "kept")
        await run.redis.delete(lost.id)
        run.observe("taken", [await take(run.queue), await take(run.queue)])

    await differ.check(scenario)
