"""A whole system for one chaos scenario: its own PostgreSQL, Redis, API and workers, all real.

A scenario submits jobs, breaks something, lets the system recover on its own, and settles:
it counts what became of every job (`Settled.counts`, one line of the table the chaos suite
prints) and keeps the rows, so the scenario can also check which mechanism recovered each
job and within which bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.asgi import Parts, build_parts
from app.config import Settings
from app.db.models import BackgroundJob
from app.jobs.lifecycle import TERMINAL_STATUSES, UNFINISHED_STATUSES
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import TaskFunction
from tests.support.app import REGISTRY, TEST_APP
from tests.support.executions import executions
from tests.support.processes import Running
from tests.support.rows import describe_row, eventually, read_rows
from tests.support.servers import APP, ROOT, VENV_BIN, LocalPostgres, LocalRedis, free_port, migrate

# Small bounds so recovery happens within seconds (production defaults are in the README).
RELIABILITY_ENV = {
    "RECONCILE_INTERVAL": "0.5",
    "RECONCILE_GRACE": "1",
    "WORKER_LOST_AFTER": "3",
    "SWEEP_INTERVAL": "2",
    "WORKER_SHUTDOWN_GRACE_PERIOD": "1",
    "LOG_JSON": "true",
}
# What a loaded two-core machine may add to a bound (process start, scheduling).
MARGIN = 10.0
# One line per scenario, printed as the chaos table at the end of the run.
RESULTS: list[dict[str, Any]] = []
COUNTS = ["submitted", "completed", "failed_with_reason", "failed_without_reason", "lost", "stuck"]


def json_events(lines: Iterable[str], event: str) -> list[dict[str, Any]]:
    """The JSON log records named `event` among a process's output lines."""
    found = []
    for line in lines:
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


@dataclass
class Settled:
    """What became of a scenario's jobs once it settled."""

    counts: dict[str, int]
    rows: dict[str, BackgroundJob]
    logs: str
    result: dict[str, Any]  # its line of the printed table

    def saw(self, evidence: str) -> None:
        """Put what the scenario checked of its mechanism on its line of the table."""
        self.result["seen"] = evidence

    def explain(self) -> str:
        """Each unfinished or failed job with its last status, then the processes' log tails."""
        notable = [
            f"job {job_id}: {describe_row(row)}"
            for job_id, row in self.rows.items()
            if row.status not in {"complete"}
        ]
        return "\n".join([str(self.counts), *notable[:20], self.logs])

    def expect(self, **counts: int) -> None:
        """The counts are exactly these (others 0; `submitted` as submitted)."""
        expected = {name: 0 for name in COUNTS} | {"submitted": self.counts["submitted"]} | counts
        assert self.counts == expected, self.explain()


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
    _parts: Parts | None = None

    # -- processes ---------------------------------------------------------------------------

    def start_worker(self, name: str = "worker", **env: str) -> Running:
        worker = Running(
            [str(VENV_BIN / "litestar"), "--app", TEST_APP, "workers", "run"],
            {**self.env, **env},
            name,
        )
        self.processes.append(worker)
        worker.wait_for_line(lambda line: '"worker started"' in line)
        return worker

    def start_api(self) -> Running:
        api = Running(
            [str(VENV_BIN / "uvicorn"), "--factory", TEST_APP, "--host", "127.0.0.1",
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

    def logs(self, lines: int = 30) -> str:
        return "\n".join(running.tail(lines) for running in self.processes)

    def events(self, event: str) -> list[dict[str, Any]]:
        """Log records named `event`, from every process this cluster started."""
        return [e for running in self.processes for e in json_events(running.lines, event)]

    # -- jobs --------------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            # pre-ping: the scenarios restart PostgreSQL under this pool.
            self._engine = create_async_engine(self.settings.database_url, pool_pre_ping=True)
        return self._engine

    async def parts(self) -> Parts:
        """What an API process of this cluster would build (its queue, its enqueuer)."""
        if self._parts is None:
            self._parts = build_parts(self.settings, REGISTRY)
            await self._parts.queue.connect()
        return self._parts

    async def queue(self) -> TrackedQueue:
        return (await self.parts()).queue

    async def submit(self, count: int, task: TaskFunction, **arguments: Any) -> list[str]:
        """Enqueue through the jobs service, as any handler would."""
        parts = await self.parts()
        service = BackgroundJobService(parts.sessions(), enqueuer=parts.enqueuer)
        return [str((await service.enqueue(task, arguments)).job_id) for _ in range(count)]

    async def rows(self, job_ids: Iterable[str]) -> dict[str, BackgroundJob]:
        return await read_rows(self.engine, job_ids)

    async def executions(self) -> dict[str, int]:
        """How many times each job's task function ran, counted inside the task."""
        return await executions(await self.queue())

    async def wait_until_status(self, job_ids: list[str], statuses: set[str], count: int) -> None:
        async def enough() -> bool:
            rows = await self.rows(job_ids)
            return sum(row.status in statuses for row in rows.values()) >= count

        async def explain() -> str:
            rows = await self.rows(job_ids)
            seen = "\n".join(f"job {i}: {describe_row(rows.get(i))}" for i in job_ids[:10])
            return f"{seen}\n{self.logs()}"

        await eventually(enough, within=60, what=f"{count} rows in {statuses}", explain=explain)

    async def settle(
        self, scenario: str, job_ids: list[str], *, recovered_by: str, within: float
    ) -> Settled:
        """Wait until every job is final, at most `within` s (the bound), then count them."""

        async def all_final() -> bool:
            rows = await self.rows(job_ids)
            return len(rows) == len(job_ids) and all(
                row.status in TERMINAL_STATUSES for row in rows.values()
            )

        with contextlib.suppress(AssertionError):  # what is not final is counted below
            await eventually(all_final, within=within, what="every job final")
        rows = await self.rows(job_ids)
        final = [r for r in rows.values() if r.status in TERMINAL_STATUSES]
        counts = {
            "submitted": len(job_ids),
            "completed": sum(r.status == "complete" for r in final),
            "failed_with_reason": sum(r.status != "complete" and bool(r.error) for r in final),
            "failed_without_reason": sum(r.status != "complete" and not r.error for r in final),
            "lost": len(set(job_ids) - set(rows)),
            "stuck": sum(r.status in UNFINISHED_STATUSES for r in rows.values()),
        }
        result = {"scenario": scenario, **counts, "recovered by": recovered_by, "seen": ""}
        RESULTS.append({**result, "within": within})
        return Settled(counts, rows, self.logs(), RESULTS[-1])

    async def close(self) -> None:
        for running in self.processes:
            running.kill()
        if self._parts is not None:
            await self._parts.close()
        if self._engine is not None:
            await self._engine.dispose()


@contextlib.asynccontextmanager
async def start_cluster() -> AsyncIterator[Cluster]:
    """Fresh PostgreSQL (migrated) and Redis (no persistence) on free ports; no process yet."""
    base = Path(tempfile.mkdtemp(prefix="tracked-jobs-chaos-"))
    os.chmod(base, 0o755)  # noqa: S103 - the postgres user must reach its data folder
    postgres = LocalPostgres(base / "postgres", free_port())
    redis = LocalRedis(base / "redis", free_port(), persistent=False)
    postgres.start()
    redis.start()
    try:
        migrate(postgres.url)
        env = {
            **os.environ,
            **RELIABILITY_ENV,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SAQ_QUEUE_NAME": f"chaos-{uuid.uuid4().hex[:6]}",
            "PYTHONPATH": str(ROOT),
            "LITESTAR_APP": APP,
            "AUTH_DISABLED": "true",  # open mode: these scenarios are about jobs, not access
        }
        settings = Settings.from_env({k: v for k, v in env.items() if k.isupper()})
        running = Cluster(base, postgres, redis, settings, env, free_port())
        try:
            yield running
        finally:
            await running.close()
    finally:
        redis.stop()
        postgres.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
