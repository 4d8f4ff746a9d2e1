"""One Idempotency-Key raced across two API processes: one row, one job in Redis, one run.

Within one process, concurrent requests share one batcher and one connection, so the race
that the unique index and `INSERT ... ON CONFLICT DO NOTHING` exist for never happens there.
Here two `uvicorn` processes (same database, Redis and queue) each take half of a burst of
requests with one key and one body. Would catch: the unique index or ON CONFLICT replaced by
a check-then-insert or a per-process memory of keys (two rows, two jobs, two runs), a losing
request answered with a job id of its own, or a replayed request that enqueues its job again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import uuid4

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.registry import TaskRegistry
from app.worker.tasks import trigger_test
from tests.support import (
    APP,
    VENV_BIN,
    Running,
    StartWorker,
    WaitForRow,
    app_env,
    eventually,
    free_port,
)
from tests.support.executions import counted, executions

TRIGGER = "/api/v1/tasks/trigger-test"
REQUESTS = 24
WORKER_REGISTRY = TaskRegistry([counted(trigger_test)])


def start_api(settings: Settings, port: int) -> Running:
    return Running(
        [str(VENV_BIN / "uvicorn"), "--factory", APP, "--host", "127.0.0.1",
         "--port", str(port)],
        app_env(settings),
        f"api on {port}",
    )  # fmt: skip


def healthy(http: httpx.AsyncClient, port: int, api: Running) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        assert api.process.poll() is None, f"the API exited:\n{api.tail()}"
        try:
            return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
        except httpx.TransportError:
            return False

    return probe


async def test_one_key_raced_across_two_api_processes_makes_one_row_one_job_and_one_run(
    settings: Settings,
    engine: AsyncEngine,
    queue: TrackedQueue,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    ports = [free_port(), free_port()]
    apis = [start_api(settings, port) for port in ports]
    key, body = f"race-{uuid4()}", {"message": "raced", "sleep_seconds": 0}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for port, api in zip(ports, apis, strict=True):
                await eventually(healthy(http, port, api), within=60, what=f"{api.name} up")
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"http://127.0.0.1:{ports[i % 2]}{TRIGGER}",
                        json=body,
                        headers={"Idempotency-Key": key},
                    )
                    for i in range(REQUESTS)
                )
            )
    finally:
        for api in apis:
            api.kill()

    assert [answer.status_code for answer in answers] == [202] * REQUESTS, answers[0].text
    job_ids = {answer.json()["job_id"] for answer in answers}
    assert len(job_ids) == 1, f"one key answered with {len(job_ids)} job ids"
    job_id = job_ids.pop()
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT job_id::text FROM background_jobs WHERE idempotency_key = :key"),
                {"key": key},
            )
        ).scalars()
        assert list(rows) == [job_id]
    assert (await queue.count("incomplete"), await queue.count("queued")) == (1, 1)
    assert await queue.job(job_id) is not None

    await start_worker(WORKER_REGISTRY)
    done = await wait_for_row(job_id, lambda r: r.status == "complete")
    assert done.result == {"message": "raced", "slept_seconds": 0}
    assert await executions(queue) == {job_id: 1}
    assert await queue.count("incomplete") == 0
