"""`workers run --workers 2` stopped as `docker stop` stops it: SIGTERM to the first process
only. Every process stops gracefully: each running job is re-queued, none ends `failed`
(worker lost), and each runs again on the next worker. And `.env`, where the stack's
secrets live, is never committed."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import build_parts
from app.jobs.lifecycle import SAQ_REASONS
from tests.support import (
    ROOT,
    VENV_BIN,
    Running,
    Servers,
    app_env,
    describe_row,
    eventually,
    make_settings,
    migrate,
    read_rows,
)
from tests.support.app import REGISTRY, TEST_APP, chaos_sleep
from tests.support.executions import executions

JOBS = 20
JOB_SECONDS = 15  # still running when the signal comes; run again in full afterwards
RE_QUEUED = SAQ_REASONS["cancelled"]  # a job its stopping worker re-queued


def group_alive(process: subprocess.Popen[str]) -> bool:
    """Whether any process of the worker's group (the first one and its children) lives."""
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_sigterm_to_the_first_of_two_worker_processes_stops_both_and_requeues_every_job(
    servers: Servers, fresh_database_url: str, processes: list[Running]
) -> None:
    """Catches: the second process left running after the first got SIGTERM (it kept taking
    jobs, was killed at the container's grace limit, and its jobs ended `failed`, worker
    lost); or a job not re-queued."""
    migrate(fresh_database_url)
    settings = make_settings(fresh_database_url, servers.redis_url, worker_concurrency=JOBS)
    env = app_env(settings, WORKER_CONCURRENCY=str(JOBS // 2), WORKER_SHUTDOWN_GRACE_PERIOD="1")
    command = [str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"]
    first = Running([*command, "--workers", "2"], env, "workers x2")
    processes.append(first)
    parts = build_parts(settings, REGISTRY)
    engine = create_async_engine(settings.database_url)
    try:
        await parts.queue.connect()
        started = await eventually(
            lambda: started_lines(first), within=60, what="both worker processes started"
        )
        assert started == 2
        enqueuer = parts.enqueuer
        job_ids = [
            str((await enqueuer.enqueue(chaos_sleep, {"seconds": JOB_SECONDS})).job_id)
            for _ in range(JOBS)
        ]

        async def seen() -> str:
            rows = await read_rows(engine, job_ids)
            described = "\n".join(describe_row(row) for row in rows.values())
            return f"{described}\n{first.tail()}"

        running = await eventually(
            lambda: all_running(engine, job_ids),
            within=60,
            what=f"{JOBS} running jobs",
            explain=seen,
        )
        assert len({row.worker_id for row in running.values()}) == 2, "both processes took jobs"

        os.kill(first.process.pid, signal.SIGTERM)  # the first process only, as docker stop
        first.process.wait(timeout=60)  # the bound only stops a broken test
        await eventually(
            lambda: _false_when(group_alive(first.process)), within=30, what="no process left"
        )
        rows = await read_rows(engine, job_ids)
        seen = {job_id: describe_row(row) for job_id, row in rows.items()}
        assert {row.status for row in rows.values()} == {"queued"}, seen
        assert {row.error for row in rows.values()} == {RE_QUEUED}, seen

        second = Running([*command], {**env, "WORKER_CONCURRENCY": str(JOBS)}, "worker")
        processes.append(second)
        done = await eventually(
            lambda: all_complete(engine, job_ids), within=JOB_SECONDS + 60, what="all complete"
        )
        assert {row.status for row in done.values()} == {"complete"}
        runs = await executions(parts.queue)
        assert {runs[job_id] for job_id in job_ids} == {2}, runs  # stopped once, run again
        second.stop()
    finally:
        await parts.close()
        await engine.dispose()


async def started_lines(worker: Running) -> int | None:
    count = sum('"worker started"' in line for line in worker.lines)
    return count if count == 2 else None


async def _false_when(alive: bool) -> bool:
    return not alive


async def all_running(engine: AsyncEngine, job_ids: list[str]) -> dict[str, Any] | None:
    rows = await read_rows(engine, job_ids)
    return rows if {row.status for row in rows.values()} == {"running"} else None


async def all_complete(engine: AsyncEngine, job_ids: list[str]) -> dict[str, Any] | None:
    rows = await read_rows(engine, job_ids)
    return rows if {row.status for row in rows.values()} == {"complete"} else None


def test_env_holds_the_stacks_secrets_and_git_ignores_it() -> None:
    """`git add -A` would otherwise commit the admin key and the database password."""
    ignored = subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env is not in .gitignore"
    example = subprocess.run(
        ["git", "check-ignore", "--quiet", ".env.example"], cwd=ROOT, check=False
    )
    assert example.returncode == 1, ".env.example must stay committed"
