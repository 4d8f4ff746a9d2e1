"""A paused queue's jobs are taken by no worker process, through a worker restart and a Redis
restarted empty, and are taken again at once when it resumes; a drain waits for the running
job and prints the count left. Two worker processes and two API processes started with the
README's commands, the pause and the resume from the CLI and the API."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from app.jobs.queue.gate import gate_key
from tests.support import (
    ROOT,
    VENV_BIN,
    LocalRedis,
    Running,
    Servers,
    app_env,
    eventually,
    free_port,
    make_settings,
    migrate,
)
from tests.support.processes import wait_until_serving

RECHECK = "60"  # a paused worker looks by itself only this rarely: a quick resume is the message
WATCHED = 4.0  # seconds the paused queue is watched for a job taken
LONG_JOB = 60  # seconds


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(VENV_BIN / "litestar"), "--app", env["LITESTAR_APP"], "queues", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


async def statuses(api: httpx.AsyncClient, job_ids: list[str]) -> list[str]:
    return [(await api.get(f"/api/v1/jobs/{job}")).json()["status"] for job in job_ids]


async def trigger(api: httpx.AsyncClient, sleep_seconds: float = 0) -> str:
    answer = await api.post(
        "/api/v1/tasks/trigger-test", json={"message": "m", "sleep_seconds": sleep_seconds}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


async def test_a_paused_queue_is_taken_by_no_worker_process_until_resumed(
    servers: Servers, fresh_database_url: str, processes: list[Running], tmp_path: Path
) -> None:
    """Catches: a pause one process enforces and another not, a pause held in Redis only (a
    Redis restarted empty resumes it), a worker that takes for a moment after its restart, a
    resume that waits for the workers' next look, a drain that does not wait."""
    redis_server = LocalRedis(tmp_path / "redis", free_port(), persistent=False)
    redis_server.start()
    try:
        await _run(servers, fresh_database_url, processes, redis_server)
    finally:
        for running in processes:
            running.kill()
        redis_server.stop()


async def _run(
    servers: Servers, database_url: str, processes: list[Running], redis_server: LocalRedis
) -> None:
    migrate(database_url)
    settings = make_settings(database_url, redis_server.url)
    name = settings.queue_name
    env = app_env(
        settings,
        QUEUE_PAUSE_RECHECK_SECONDS=RECHECK,
        RECONCILE_INTERVAL="1",
        RECONCILE_GRACE="1",
        ALLOWED_HOSTS="localhost,127.0.0.1",
    )
    worker_command = [str(VENV_BIN / "litestar"), "--app", env["LITESTAR_APP"], "workers", "run"]
    workers = [Running(worker_command, env, f"worker {n}") for n in (1, 2)]
    ports = [free_port(), free_port()]
    api_command = [str(VENV_BIN / "uvicorn"), "--factory", env["LITESTAR_APP"], "--host"]
    apis = [
        Running([*api_command, "127.0.0.1", "--port", str(port)], env, f"api {n}")
        for n, port in enumerate(ports, 1)
    ]
    processes.extend([*workers, *apis])
    for worker in workers:
        worker.wait_for_line(lambda line: '"worker started"' in line)
    for api, port in zip(apis, ports, strict=True):
        wait_until_serving(f"http://127.0.0.1:{port}", api)
    one, two = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") for port in ports)
    redis = Redis.from_url(redis_server.url)

    # A long job runs (longer than the CLI takes to start on a loaded machine); a drain from
    # the API pauses the queue and says it runs; the CLI's drain waits for it, counting.
    long_job = await trigger(one, sleep_seconds=LONG_JOB)
    await eventually(lambda: _all(two, [long_job], "running"), what="the long job to start")
    first = (await two.post(f"/api/v1/queues/{name}/drain?wait=0.5")).json()
    assert (first["paused"], first["running"]) == (True, 1)
    drained = await asyncio.to_thread(cli, env, "drain", name, "--every", "0.5")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    lines = drained.stdout.splitlines()
    assert "1 running" in lines[0], lines
    assert lines[-1] == f"queue {name}: drained, nothing running (paused)", lines
    assert await statuses(one, [long_job]) == ["complete"]
    early = (await one.post(f"/api/v1/queues/{name}/pause")).json()
    assert early["paused_by"] == "anonymous (auth disabled)", "the first pause stands"

    (listed,) = (await two.get("/api/v1/queues")).json()["queues"]
    assert (listed["paused"], listed["paused_by"]) == (True, "anonymous (auth disabled)")
    held = [await trigger(api) for api in (one, two, one, two)]  # accepted while paused
    await asyncio.sleep(WATCHED)
    assert await statuses(two, held) == ["queued"] * 4
    assert await redis.llen(f"saq:{name}:queued") == 4

    # A worker restarted: it reads the pause before any take.
    workers[0].stop()
    workers[0] = Running(worker_command, env, "worker 1, again")
    processes.append(workers[0])
    workers[0].wait_for_line(lambda line: '"worker started"' in line)
    await asyncio.sleep(WATCHED)
    assert await statuses(one, held) == ["queued"] * 4

    # Redis restarted empty: the reconciler enqueues the jobs again, the gate is rewritten
    # from PostgreSQL, and still nothing is taken.
    redis_server.stop()
    redis_server.start()
    await redis.aclose()
    redis = Redis.from_url(redis_server.url)

    async def enqueued_again() -> bool:
        return bool(await redis.llen(f"saq:{name}:queued") == 4)

    await eventually(enqueued_again, within=60, what="the jobs enqueued again after the restart")
    await eventually(lambda: _gate(redis, name), within=30, what="the gate rewritten, paused")
    await asyncio.sleep(WATCHED)
    assert await statuses(two, held) == ["queued"] * 4
    (listed,) = (await one.get("/api/v1/queues")).json()["queues"]
    assert (listed["paused"], listed["queued"], listed["active"]) == (True, 4, 0)

    # Resumed from the API: taken at once, well before a worker's own next look.
    resumed = await two.post(f"/api/v1/queues/{name}/resume")
    assert (resumed.status_code, resumed.json()["paused"]) == (200, False)
    await eventually(lambda: _all(one, held, "complete"), within=20, what="the jobs after resume")
    worked = {
        line.split('"worker_id":"')[1].split('"')[0]
        for worker in workers
        for line in worker.lines
        if '"job finished"' in line and any(job in line for job in held)
    }
    assert worked, "the resumed jobs ran in the worker processes"

    audit = (await one.get("/api/v1/audit?limit=20")).json()
    ours = [
        (row["action"], row["actor"], row["detail"])
        for row in audit
        if (row["filter"] or {}).get("queue")
    ]
    anonymous = "anonymous (auth disabled)"
    assert ours == [
        ("queue_resume", anonymous, f"paused by {anonymous}"),
        ("queue_pause", anonymous, "already paused"),
        ("queue_pause", "cli", "already paused"),  # the CLI's drain
        ("queue_pause", anonymous, None),  # the API's drain
    ]
    for client in (one, two):
        await client.aclose()
    await redis.aclose()


async def _all(api: httpx.AsyncClient, job_ids: list[str], status: str) -> bool:
    return await statuses(api, job_ids) == [status] * len(job_ids)


async def _gate(redis: Redis, name: str) -> Any:
    return await redis.get(gate_key(name)) == b"paused"
