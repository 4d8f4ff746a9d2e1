"""Two worker processes on one queue, started with the README's command: each job runs once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from tests.e2e.conftest import Running
from tests.support import APP, VENV_BIN, Servers, app_env, eventually, make_settings, migrate

JOBS = 200


def job_events(lines: list[str], event: str) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                events.append(record)
    return events


async def test_two_workers_share_a_queue_and_run_each_job_once(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url, worker_concurrency=5)
    env = app_env(settings, WORKER_CONCURRENCY="5")
    command = [str(VENV_BIN / "litestar"), "--app", APP, "workers", "run"]
    workers = [Running(command, env, f"worker {n}") for n in (1, 2)]
    processes.extend(workers)
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)

    async with AsyncTestClient(app=create_app(settings)) as client:
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

    for worker in workers:
        worker.stop()
    started = Counter(
        event["job_id"] for worker in workers for event in job_events(worker.lines, "job started")
    )
    assert set(started) == job_ids
    assert set(started.values()) == {1}, "a job was started more than once"
    per_worker = [len(job_events(worker.lines, "job started")) for worker in workers]
    assert all(count > 0 for count in per_worker), per_worker
    assert len({row.worker_id for row in rows}) == 2
