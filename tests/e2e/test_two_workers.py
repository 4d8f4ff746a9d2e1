"""Two worker processes on one queue, started with the README's command: each job runs once.

Runs are counted inside the task (tests/support/executions.py), not from log lines: the
worker logs `job started` only when the row takes the transition, and a row that is already
final ignores a second run, so a job run twice would leave one line.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import build_parts, create_app
from app.config import Settings
from tests.support import (
    VENV_BIN,
    Running,
    Servers,
    app_env,
    eventually,
    make_settings,
    migrate,
)
from tests.support.app import REGISTRY, TEST_APP
from tests.support.executions import executions

JOBS = 200


async def test_two_workers_share_a_queue_and_run_each_job_once(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    """Catches: a job run twice, by both workers or again after it finished, which the rows and
    the `job started` lines would hide (seen failing with finished jobs delivered again, while
    the log-counting version passed). Sweeps run every second here, among the dequeues; the
    narrow race of SAQ #277 itself is provoked in tests/integration/test_sweep.py."""
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url, worker_concurrency=5)
    env = app_env(settings, WORKER_CONCURRENCY="5", SWEEP_INTERVAL="1")
    command = [str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"]
    workers = [Running(command, env, f"worker {n}") for n in (1, 2)]
    processes.extend(workers)
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)

    async with AsyncTestClient(app=create_app(settings, REGISTRY)) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/tasks/trigger-test",
                    json={"message": f"job {n}", "sleep_seconds": 0.02},
                )
                for n in range(JOBS)
            )
        )
        job_ids = {answer.json()["job_id"] for answer in answers}
        assert len(job_ids) == JOBS

        engine = create_async_engine(settings.database_url)

        async def all_complete() -> list[Any] | None:
            async with engine.connect() as connection:
                rows = (await connection.execute(text(
                    "SELECT job_id::text, status, attempts, worker_id FROM background_jobs"
                ))).all()  # fmt: skip
            done = [row for row in rows if row.status == "complete"]
            return rows if len(done) == JOBS else None

        rows = await eventually(all_complete, within=120, what=f"{JOBS} complete rows")
        await engine.dispose()
        assert {row.job_id for row in rows} == job_ids
        assert {row.attempts for row in rows} == {1}
        assert len({row.worker_id for row in rows}) == 2, "both workers took jobs"

        await asyncio.sleep(2)  # two sweep intervals: time for a redelivered job to run again
        runs = await executions_of(settings)
    assert set(runs) == job_ids
    assert set(runs.values()) == {1}, {k: v for k, v in runs.items() if v != 1}
    for worker in workers:
        worker.stop()


async def executions_of(settings: Settings) -> dict[str, int]:
    parts = build_parts(settings, REGISTRY)
    try:
        await parts.queue.connect()
        return await executions(parts.queue)
    finally:
        await parts.close()
