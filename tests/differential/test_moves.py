"""A worker's moves of a job it took: mark active, heartbeat and progress, finish, retry, abort."""

from __future__ import annotations

import asyncio

import pytest
from saq.job import Status

from tests.differential.allowed import ABORT_ENDS_WAITING_JOB
from tests.differential.harness import Differ, Run
from tests.differential.steps import enqueue, start, stored, take, take_and_start


async def test_mark_active(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "a")
        await enqueue(run.queue, "b")
        run.observe("started", await take_and_start(run.queue))

    await differ.check(scenario)


async def test_heartbeat_and_progress(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "a", heartbeat=30)
        running = await take_and_start(run.queue)
        await running.update()  # a heartbeat: the status Redis holds is kept
        await running.update(progress=0.25)
        await running.update(progress=0.5, meta={"step": 2})
        run.observe("job", running)

    await differ.check(scenario)


@pytest.mark.parametrize("ttl", [600, 0, -1])
@pytest.mark.parametrize("status", [Status.COMPLETE, Status.FAILED, Status.ABORTED])
async def test_finish(differ: Differ, ttl: int, status: Status) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "done", ttl=ttl)
        await enqueue(run.queue, "next")
        running = await take_and_start(run.queue)
        error = None if status == Status.COMPLETE else f"{status.value} on purpose"
        await run.queue.finish(running, status, result={"n": 2}, error=error)
        run.observe("job", running)

    await differ.check(scenario)


async def test_a_read_begun_before_a_finish_sees_the_finish(differ: Differ) -> None:
    """SAQ's own `test_refresh`: SAQ's finish has written to Redis before it first yields, so
    a read begun just before it (a task already scheduled) returns the finished job."""

    async def scenario(run: Run) -> None:
        enqueued = await enqueue(run.queue, "read")
        reading = asyncio.create_task(enqueued.refresh())
        await run.queue.finish(enqueued, Status.COMPLETE, result=1)
        await reading
        run.observe("status read", enqueued.status)

    await differ.check(scenario)


async def test_a_read_begun_before_a_finish_sees_it_with_another_move_on_the_wire(
    differ: Differ,
) -> None:
    """The finish waits for its turn on the moves' channel (another job's start is on the
    wire): a read begun meanwhile is answered after it all the same."""

    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "other")
        enqueued = await enqueue(run.queue, "read")
        other = await take(run.queue)
        assert other is not None
        # SAQ's side: a connection ready for each of the three, none waits for a handshake.
        await asyncio.gather(*(run.queue.redis.ping() for _ in range(3)))
        await asyncio.sleep(0.01)  # the channel is quiet: the start is written at once
        starting = asyncio.create_task(start(other))
        await asyncio.sleep(0)
        reading = asyncio.create_task(enqueued.refresh())
        await run.queue.finish(enqueued, Status.COMPLETE, result=1)
        await asyncio.gather(reading, starting)
        run.observe("status read", enqueued.status)

    await differ.check(scenario)


async def test_retry_at_once(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "again", retries=3)
        await enqueue(run.queue, "next")
        running = await take_and_start(run.queue)
        await running.update(progress=0.5)
        await run.queue.retry(running, "ValueError: boom")
        run.observe("job", running)

    await differ.check(scenario)


async def test_retry_after_a_delay(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "later", retries=3, retry_delay=120)
        running = await take_and_start(run.queue)
        await run.queue.retry(running, "ValueError: boom")

    await differ.check(scenario)


async def test_retry_of_a_scheduled_job(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        scheduled = await enqueue(run.queue, "scheduled", scheduled=run.at, retries=2)
        await run.queue.retry(scheduled, "retried by hand")

    await differ.check(scenario)


async def test_abort_a_queued_job(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        queued = await enqueue(run.queue, "queued")
        await enqueue(run.queue, "next")
        await run.queue.abort(queued, "stop")

    await differ.check(scenario)


async def test_abort_an_active_job(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "active")
        await take_and_start(run.queue)
        await run.queue.abort(await stored(run.queue, "active"), "stop")  # as `/saq` does

    await differ.check(scenario)


@pytest.mark.parametrize("ttl", [600, 0, -1])
async def test_abort_a_scheduled_job(differ: Differ, ttl: int) -> None:
    async def scenario(run: Run) -> None:
        scheduled = await enqueue(run.queue, "scheduled", scheduled=run.at, ttl=ttl)
        await enqueue(run.queue, "queued")
        await run.queue.abort(scheduled, "stop")

    await differ.check(scenario, allowed=(ABORT_ENDS_WAITING_JOB,))


async def test_abort_a_job_waiting_for_its_retry(differ: Differ) -> None:
    async def scenario(run: Run) -> None:
        await enqueue(run.queue, "waiting", retries=3, retry_delay=120)
        running = await take_and_start(run.queue)
        await run.queue.retry(running, "ValueError: boom")
        await run.queue.abort(await stored(run.queue, "waiting"), "stop")

    await differ.check(scenario, allowed=(ABORT_ENDS_WAITING_JOB,))
