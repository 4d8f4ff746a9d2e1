"""A whole system per scenario: its own PostgreSQL, Redis, API and workers, all real processes.

Each scenario submits jobs, breaks something, lets the system recover on its own, and counts
what became of every job. The counts of all scenarios are printed as one table at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.config import Settings, tracked_queue
from app.jobs.queue import TrackedQueue
from app.jobs.services import BackgroundJobService, Enqueuer
from tests.chaos.app import REGISTRY
from tests.e2e.conftest import Running
from tests.support import (
    APP,
    ROOT,
    VENV_BIN,
    LocalPostgres,
    LocalRedis,
    eventually,
    free_port,
    migrate,
    psql,
)

CHAOS_APP = "tests.chaos.app:create_app"
RESULTS: list[dict[str, Any]] = []

# Small bounds so recovery happens within seconds (production defaults are in the README).
RELIABILITY_ENV = {
    "RECONCILE_INTERVAL": "0.5",
    "RECONCILE_GRACE": "1",
    "WORKER_LOST_AFTER": "3",
    "SWEEP_INTERVAL": "2",
    "WORKER_SHUTDOWN_GRACE_PERIOD": "1",
    "LOG_JSON": "true",
}


@dataclass
class Cluster:
    base: Path
    postgres: LocalPostgres
    redis: LocalRedis
    settings: Settings
    env: dict[str, str]
    api_port: int
    processes: list[Running] = field(default_factory=list)
    _engine: AsyncEngine | None = None
    _queue: TrackedQueue | None = None

    # -- processes ---------------------------------------------------------------------------

    def start_worker(self, name: str = "worker", **env: str) -> Running:
        worker = Running(
            [str(VENV_BIN / "litestar"), "--app", CHAOS_APP, "workers", "run"],
            {**self.env, **env},
            name,
        )
        self.processes.append(worker)
        worker.wait_for_line(lambda line: '"worker started"' in line)
        return worker

    def start_api(self) -> Running:
        api = Running(
            [str(VENV_BIN / "uvicorn"), "--factory", CHAOS_APP, "--host", "127.0.0.1",
             "--port", str(self.api_port)],
            self.env,
            "api",
        )  # fmt: skip
        self.processes.append(api)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.http("GET", "/api/v1/jobs?limit=1")
                return api
            except (OSError, urllib.error.HTTPError):
                if time.monotonic() > deadline or api.process.poll() is not None:
                    raise AssertionError(f"api did not start:\n{api.output[-3000:]}") from None
                time.sleep(0.2)

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    # -- jobs --------------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            # pre-ping: the scenarios restart PostgreSQL under this pool.
            self._engine = create_async_engine(self.settings.database_url, pool_pre_ping=True)
        return self._engine

    async def queue(self) -> TrackedQueue:
        if self._queue is None:
            self._queue = tracked_queue(self.settings)
            await self._queue.connect()
        return self._queue

    async def submit(self, count: int, task: Any, **arguments: Any) -> list[str]:
        """Enqueue through the jobs service, as any handler would."""
        queue = await self.queue()
        async with async_sessionmaker(self.engine, expire_on_commit=False)() as session:
            service = BackgroundJobService(
                session, enqueuer=Enqueuer(queue, REGISTRY, self.settings.job_timeout)
            )
            return [str((await service.enqueue(task, arguments)).job_id) for _ in range(count)]

    async def rows(self, job_ids: Iterable[str]) -> dict[str, Any]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT job_id::text AS job_id, status, error, attempts, errors "
                    "FROM background_jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": list(job_ids)},
            )
            return {row.job_id: row for row in result}

    async def wait_until_status(self, job_ids: list[str], statuses: set[str], count: int) -> None:
        async def enough() -> bool:
            rows = await self.rows(job_ids)
            return sum(row.status in statuses for row in rows.values()) >= count

        await eventually(enough, within=60, what=f"{count} rows in {statuses}")

    async def settle(self, scenario: str, job_ids: list[str], within: float = 90) -> dict[str, int]:
        """Wait (bounded) until every job is final, then count what became of them."""

        async def all_final() -> bool:
            rows = await self.rows(job_ids)
            return len(rows) == len(job_ids) and all(
                row.status in {"complete", "failed", "aborted"} for row in rows.values()
            )

        with contextlib.suppress(AssertionError):  # what is not final is counted below
            await eventually(all_final, within=within, what="every job final")
        rows = await self.rows(job_ids)
        counts = {
            "submitted": len(job_ids),
            "completed": sum(r.status == "complete" for r in rows.values()),
            "failed_with_reason": sum(
                r.status in {"failed", "aborted"} and bool(r.error) for r in rows.values()
            ),
            "failed_without_reason": sum(
                r.status in {"failed", "aborted"} and not r.error for r in rows.values()
            ),
            "lost": len(set(job_ids) - set(rows)),
            "stuck": sum(r.status in {"queued", "running"} for r in rows.values()),
        }
        RESULTS.append({"scenario": scenario, **counts})
        return counts

    async def close(self) -> None:
        for running in self.processes:
            if running.process.poll() is None:
                running.send(signal.SIGKILL)
                running.process.wait()
        if self._queue is not None:
            await self._queue.disconnect()
        if self._engine is not None:
            await self._engine.dispose()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="tracked-jobs-chaos-"))
    os.chmod(base, 0o755)  # noqa: S103 - the postgres user must reach its data folder
    postgres = LocalPostgres(base / "postgres", free_port())
    redis = LocalRedis(base / "redis", free_port(), persistent=False)
    postgres.start()
    redis.start()
    try:
        migrate(postgres.url)
        queue_name = f"chaos-{uuid.uuid4().hex[:6]}"
        env = {
            **os.environ,
            **RELIABILITY_ENV,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SAQ_QUEUE_NAME": queue_name,
            "PYTHONPATH": str(ROOT),
            "LITESTAR_APP": APP,
        }
        settings = Settings.from_env({k: v for k, v in env.items() if k.isupper()})
        running = Cluster(base, postgres, redis, settings, env, free_port())
        yield running
        await running.close()
    finally:
        redis.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    columns = ["scenario", "submitted", "completed", "failed_with_reason",
               "failed_without_reason", "lost", "stuck"]  # fmt: skip
    terminalreporter.write_sep("-", "chaos: what became of every job")
    terminalreporter.write_line("| " + " | ".join(columns) + " |")
    terminalreporter.write_line("|" + "---|" * len(columns))
    for result in RESULTS:
        terminalreporter.write_line("| " + " | ".join(str(result[c]) for c in columns) + " |")


__all__ = ["Cluster", "psql"]
