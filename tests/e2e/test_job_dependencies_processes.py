"""Jobs that wait for other jobs, with two API processes taking the triggers and two worker
processes running them (real processes, the README's commands): no dependent is on the
queue, let alone run, before every parent completed, and none is left waiting after."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import build_parts
from tests.support import (
    VENV_BIN,
    Running,
    Servers,
    app_env,
    eventually,
    free_port,
    make_settings,
    migrate,
)
from tests.support.access import call
from tests.support.app import REGISTRY, TEST_APP
from tests.support.executions import executions

CHAINS, LENGTH = 6, 6


def _start_api(env: dict[str, str], name: str) -> tuple[Running, int]:
    port = free_port()
    command = [str(VENV_BIN / "uvicorn"), "--factory", TEST_APP, "--host", "127.0.0.1"]
    process = Running([*command, "--port", str(port)], env, name)
    process.wait_for_line(lambda line: "Uvicorn running on" in line)
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(port, "GET", "/health")[0] == 200:
                return process, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not start:\n{process.tail()}")
        time.sleep(0.2)


async def _rows(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        rows = (await connection.execute(text(
            "SELECT job_id::text, status, started_at, completed_at FROM background_jobs"
        ))).all()  # fmt: skip
    return {row.job_id: row for row in rows}


async def test_dependents_run_only_after_their_parents_across_two_apis_and_two_workers(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    """Catches: a child enqueued at its insert or by a parent's first event rather than its
    end, a fan-in child released by its first parent, a child left waiting (a release lost
    between processes); a child seen on the queue while its row waits fails at once."""
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url, worker_concurrency=4)
    env = app_env(settings, WORKER_CONCURRENCY="4")
    worker_command = [str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"]
    workers = [Running(worker_command, env, f"worker {n}") for n in (1, 2)]
    processes.extend(workers)
    apis = [_start_api(env, f"api {n}") for n in (1, 2)]
    processes.extend(process for process, _ in apis)
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)

    def trigger(n: int, after: list[str], sleep: float = 0.05) -> str:
        port = apis[n % 2][1]  # each job through one API or the other, alternately
        body = {"message": f"job {n}", "sleep_seconds": sleep, "after": after}
        status, answer = call(port, "POST", "/api/v1/tasks/trigger-test", body=body)
        assert status == 202, answer
        return str(answer["job_id"])

    links: list[tuple[str, str]] = []  # (parent, child)
    chains: list[list[str]] = []
    for c in range(CHAINS):
        chain = [trigger(c * LENGTH, [], sleep=0.3)]
        for i in range(1, LENGTH):
            chain.append(trigger(c * LENGTH + i, [chain[-1]]))
            links.append((chain[-2], chain[-1]))
        chains.append(chain)
    tails = [chain[-1] for chain in chains]
    fan_in = trigger(1000, tails)  # waits for every chain
    links += [(tail, fan_in) for tail in tails]
    fan_out = [trigger(1001 + i, [fan_in], sleep=0) for i in range(4)]
    links += [(fan_in, child) for child in fan_out]
    every_job = {job for link in links for job in link}

    engine = create_async_engine(settings.database_url)
    parts = build_parts(settings, REGISTRY)
    await parts.queue.connect()
    try:

        async def all_complete() -> dict[str, Any] | None:
            # Redis first, then the rows: a release commits the row before it enqueues, so
            # a job seen on the queue has a row no longer waiting when read after.
            seen = [job.key for job in await parts.queue.jobs(sorted(every_job)) if job]
            rows = await _rows(engine)
            on_queue = [job_id for job_id in seen if rows[job_id].status == "waiting"]
            assert not on_queue, f"waiting jobs already on the queue: {on_queue}"
            done = {job_id for job_id, row in rows.items() if row.status == "complete"}
            return rows if done >= every_job else None

        rows = await eventually(all_complete, within=180, what="every job complete")
        for parent, child in links:
            assert rows[child].started_at >= rows[parent].completed_at, (parent, child)
        await asyncio.sleep(1)
        runs = await executions(parts.queue)
        assert {runs.get(job) for job in every_job} == {1}  # each ran once
    finally:
        await parts.close()
        await engine.dispose()
    for process in processes:
        process.stop()
