"""A paused cron schedule runs in no worker process, even after Redis lost everything, and runs
again once resumed: two worker processes started with the README's command, a schedule each
second, the pause and the resume through the API."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import create_app
from app.jobs.queue.pauses import PAUSES_TTL
from tests.support import VENV_BIN, Running, Servers, app_env, eventually, make_settings, migrate
from tests.support.app import CRON_REGISTRY, SCHEDULES, TEST_CRON_APP

NAME = "every_second"
NIGHTLY = "nightly_cleanup"
WATCHED = 6.0  # seconds without a run: six ticks of the schedule in each worker process


async def runs(engine: AsyncEngine, name: str = NAME) -> list[Any]:
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT created_at, job_id, status, error FROM background_jobs"
                " WHERE task_name = :name"
            ),
            {"name": name},
        )
        return list(found.all())


async def forget_the_queue(redis_url: str, queue_name: str) -> None:
    """Every key SAQ holds for the queue, gone (its jobs, lists, worker records)."""
    redis = Redis.from_url(redis_url)
    for pattern in (f"saq:{queue_name}:*", f"saq:job:{queue_name}:*"):
        async for key in redis.scan_iter(match=pattern):
            await redis.delete(key)
    await redis.aclose()


async def test_a_paused_schedule_runs_in_no_worker_process_until_resumed(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    """Catches: a pause enforced in one process only, read from Redis (a Redis that lost its
    data would resume it), or never lifted."""
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url)
    command = [str(VENV_BIN / "litestar"), "--app", TEST_CRON_APP, "workers", "run"]
    workers = [Running(command, app_env(settings), f"worker {n}") for n in (1, 2)]
    processes.extend(workers)
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)
    engine = create_async_engine(settings.database_url)
    app = create_app(settings, CRON_REGISTRY, cron=SCHEDULES)
    async with AsyncTestClient(app=app) as client:

        async def completed(at_least: int, after: Any = None) -> list[Any] | None:
            done = [
                row
                for row in await runs(engine)
                if row.status == "complete" and (after is None or row.created_at > after)
            ]
            return done if len(done) >= at_least else None

        await eventually(lambda: completed(2), within=30, what="the schedule to run")
        reporting = (await client.get("/api/v1/workers")).json()["workers"]
        assert len({worker["pid"] for worker in reporting}) == 2, "both processes report"

        paused = await client.post(f"/api/v1/schedules/{NAME}/pause")
        assert paused.status_code == 200, paused.text
        # Every process sees the pause within PAUSES_TTL; a run enqueued before then (due
        # within a second) still runs. Then no run is left unfinished.
        await asyncio.sleep(PAUSES_TTL + 1)

        async def settled() -> list[Any] | None:
            found = await runs(engine)
            return found if all(row.status in ("complete", "aborted") for row in found) else None

        before = await eventually(settled, what="the runs enqueued before the pause to end")
        # Redis loses what it held of the queue, as a restart without persistence would.
        await forget_the_queue(settings.redis_url, settings.queue_name)
        await asyncio.sleep(WATCHED)
        assert await runs(engine) == before, "a run of the paused schedule was enqueued"
        listed = (await client.get("/api/v1/schedules")).json()["schedules"][0]
        assert listed["paused"] is True

        # The nightly schedule's next run waits in Redis (the newest, enqueued again after the
        # loss; the reconciler ends the lost one): pausing it withdraws that run.
        async def nightly_waiting() -> Any:
            return [row for row in await runs(engine, NIGHTLY) if row.status == "queued"]

        waiting = max(await eventually(nightly_waiting, what="a nightly run waiting"))
        assert (await client.post(f"/api/v1/schedules/{NIGHTLY}/pause")).status_code == 200

        async def withdrawn() -> Any:
            row = {row.job_id: row for row in await runs(engine, NIGHTLY)}[waiting.job_id]
            return row.status == "aborted" and f"schedule {NIGHTLY} paused by" in row.error

        await eventually(withdrawn, what="the nightly run to be withdrawn")

        resumed_at = (await client.post(f"/api/v1/schedules/{NAME}/resume")).json()
        assert resumed_at["paused"] is False
        last = max(row.created_at for row in before)
        await eventually(lambda: completed(1, after=last), within=30, what="a run after resuming")
    await engine.dispose()
