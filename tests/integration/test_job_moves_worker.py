"""A real SAQ worker on the tracked queue, its Redis moves under faults.

Tasks that heartbeat without pause hit their timeout while a heartbeat of theirs waits to be
sent; SAQ's worker then retries them (`retry_delay=60`: they stay out of the queue). Filler
jobs keep the worker's Redis moves busy so that heartbeats do wait. Catches a cancelled
heartbeat still sent after the retry, or a retry that takes another path than the heartbeat:
Redis would hold the job `active` with its timeout error erased, on no list, for good.

Then Redis becomes unreachable between a task's end and its finish (the worker's connections
dropped, new ones refused) for longer than the moves' bound. Catches the finish failing SAQ's
worker ("Error processing job", then a retry or a failure of a job that completed) and the
outcome never reaching the row or, once Redis answers, Redis.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from saq.job import Job, Status
from saq.worker import Worker
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import build_parts
from app.config import Settings
from app.jobs.lifecycle import ROW_ID, JobStatus
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY
from tests.support import WaitForRow, eventually
from tests.support.proxy import RedisProxy

HEARTBEATING, FILLERS, CONCURRENCY = 150, 600, 50


async def heartbeating(ctx: dict[str, Any]) -> None:
    job = ctx["job"]
    while True:  # until SAQ's timeout cancels it
        await job.update()


async def filler(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(0)


async def test_no_heartbeat_lands_after_its_jobs_retry(queue: TrackedQueue) -> None:
    beating = [
        await queue.enqueue(Job("heartbeating", timeout=1, retries=2, retry_delay=60.0))
        for _ in range(HEARTBEATING)
    ]
    await asyncio.gather(*(queue.enqueue(Job("filler")) for _ in range(FILLERS)))
    worker = Worker(queue, [heartbeating, filler], concurrency=CONCURRENCY)
    running = asyncio.create_task(worker.start())
    try:

        async def all_retried() -> bool:
            return queue.retried >= HEARTBEATING and queue.complete >= FILLERS

        await eventually(all_retried, within=120, what="every heartbeating job retried once")
        await queue._batcher.idle()  # what the worker staged has reached Redis
        datas = await queue.redis.mget([job.id for job in beating if job is not None])
    finally:
        await worker.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    ends = [json.loads(data) for data in datas]
    wrong = [
        (end["key"], end["status"], (end.get("error") or "")[-40:])
        for end in ends
        if end["status"] != Status.QUEUED or "TimeoutError" not in (end.get("error") or "")
    ]
    assert not wrong, f"{len(wrong)} of {HEARTBEATING} jobs not left as SAQ leaves them: {wrong}"
    active = await queue.redis.lrange(queue.namespace("active"), 0, -1)  # type: ignore[misc]
    assert not {job.id.encode() for job in beating if job is not None} & set(active)


async def test_a_finish_redis_cannot_take_completes_the_row_and_lands_later(
    settings: Settings,
    engine: AsyncEngine,
    wait_for_row: WaitForRow,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await RedisProxy.start(settings.redis_url)
    parts = build_parts(replace(settings, redis_url=proxy.url), REGISTRY)
    queue = parts.queue
    queue._batcher.deliver_within = 1.0  # the moves' bound, short for the test
    await queue.connect()
    ran: list[str] = []

    async def cut_at_its_end(ctx: dict[str, Any]) -> str:
        ran.append(ctx["job"].key)
        await proxy.refuse()  # Redis unreachable from here until allowed again
        return "done"

    job = await queue.enqueue(Job("cut_at_its_end", retries=3, timeout=0))
    assert job is not None
    worker = Worker(queue, [("cut_at_its_end", cut_at_its_end)], concurrency=1)
    running = asyncio.create_task(worker.start())
    try:
        row = await wait_for_row(job.meta[ROW_ID], lambda r: r.status == JobStatus.COMPLETE)
        assert (row.result, row.attempts) == ("done", 1)
        await asyncio.sleep(0.5)  # what the worker would do next, were the finish a failure
        await proxy.allow()

        async def delivered() -> bool:
            data = await queue.redis.get(job.id)
            return data is not None and json.loads(data)["status"] == "complete"

        await eventually(delivered, within=20, what="the finish in Redis once it answers")
    finally:
        await worker.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await parts.close()
        await proxy.close()
    assert ran == [job.key], "run once"
    assert not [r for r in caplog.records if r.getMessage().startswith("Error processing job")]
    row = await wait_for_row(job.meta[ROW_ID], lambda r: r.status == JobStatus.COMPLETE)
    assert row.attempts == 1
