"""What every scenario shares: settings, throwaway servers, child processes, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio import from_url as redis_from_url

# The bootstrap admin key of the benchmark's API (a throwaway server of its own).
BENCH_API_KEY = "bench-Qm2xV9pL4rT8wZ1nK6sD3fH0jB5cY7aE"  # the app refuses a guessable one

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from local_servers import LocalPostgres, LocalRedis, free_port  # noqa: E402

VENV_BIN = Path(sys.executable).parent
APP = "app.asgi:create_app"
TERMINAL = ("complete", "failed", "aborted")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass(frozen=True)
class Config:
    """Sizes and durations; BENCH_QUICK=1 shrinks them all for a smoke run."""

    quick: bool
    pairs: int
    drain_jobs: int
    concurrency: int
    high_concurrency: int  # the drain's second concurrency; 0: none
    trigger_seconds: float
    trigger_connections: int
    e2e_rate: float
    e2e_seconds: float
    query_rows: int
    query_seconds: float
    query_connections: int
    loadgen: str  # "wrk" or "python"
    only: tuple[str, ...]
    profile: bool
    output: Path
    # BENCH_RELAXED=1: PostgreSQL without fsync, synchronous_commit, full_page_writes; labelled,
    # never the committed figures.
    relaxed: bool = False

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        loadgen = os.environ.get("BENCH_LOADGEN") or ("wrk" if shutil.which("wrk") else "python")
        only = tuple(s for s in os.environ.get("BENCH_ONLY", "").split(",") if s)
        relaxed = os.environ.get("BENCH_RELAXED", "") not in ("", "0")
        # Only a full run on durable settings replaces the committed figures; git ignores *.tmp.
        partial = quick or bool(only)
        default_output = "bench/results/smoke.tmp" if partial else "bench/results/latest.json"
        if relaxed:
            default_output = "bench/results/relaxed.tmp"
        return cls(
            quick=quick,
            pairs=_env_int("BENCH_PAIRS", 1 if quick else 3),
            drain_jobs=_env_int("BENCH_DRAIN_JOBS", 1_000 if quick else 10_000),
            concurrency=_env_int("BENCH_CONCURRENCY", 10),
            high_concurrency=_env_int("BENCH_HIGH_CONCURRENCY", 50),
            trigger_seconds=_env_float("BENCH_TRIGGER_SECONDS", 2 if quick else 10),
            trigger_connections=_env_int("BENCH_TRIGGER_CONNECTIONS", 64),
            e2e_rate=_env_float("BENCH_E2E_RATE", 50),
            e2e_seconds=_env_float("BENCH_E2E_SECONDS", 3 if quick else 20),
            query_rows=_env_int("BENCH_QUERY_ROWS", 20_000 if quick else 1_000_000),
            query_seconds=_env_float("BENCH_QUERY_SECONDS", 2 if quick else 10),
            query_connections=_env_int("BENCH_QUERY_CONNECTIONS", 8),
            loadgen=loadgen,
            only=only,
            profile=os.environ.get("BENCH_PROFILE", "") not in ("", "0"),
            output=ROOT / os.environ.get("BENCH_OUT", default_output),
            relaxed=relaxed,
        )

    def overrides(self) -> dict[str, str]:
        """The BENCH_* variables of this run, to repeat it exactly."""
        return {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")}


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rounded(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


# -- child processes -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def share_priority(pid: int) -> None:
    """Give the scheduling group of `pid` (a process we started) our own niceness.

    Under `nice -n -N make bench` the harness should win the CPU from whatever else runs,
    but Linux schedules each session (autogroup) as a whole and ignores a process's nice
    across sessions; every server and child here has a session of its own.
    """
    niceness = os.nice(0)
    if niceness != 0:
        with contextlib.suppress(OSError):  # no autogroup scheduling: nice already works
            Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


class Child:
    """A process group we started, its output in a log file; stopped by its own id only."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.port = 0  # where it listens, for a server

    @classmethod
    async def start(cls, name: str, command: list[str], env: dict[str, str], log: Path) -> Child:
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        share_priority(process.pid)
        return cls(name, process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def wait_for_output(self, needle: str, within: float = 60.0, times: int = 1) -> None:
        """Until `needle` appears in the log (`times` times: once per process of a server that
        forks); the log file is the only signal a child gives."""
        deadline = time.monotonic() + within
        while self.log.read_text(errors="replace").count(needle) < times:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {needle!r} within {within}s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process ever had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for {self.name}")

    def cpu_seconds(self) -> tuple[float, float]:
        return cpu_seconds(self.pid)

    def tree_cpu_seconds(self) -> float:
        """CPU seconds of the process and the processes it started (uvicorn --workers)."""
        used = 0.0
        for pid in [self.pid, *children_of(self.pid)]:
            with contextlib.suppress(OSError):
                used += sum(cpu_seconds(pid))
        return used

    async def stop(self, within: float = 30.0) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self.process.wait()


# -- the run's shared state ------------------------------------------------------------------


@dataclass
class Bench:
    """Servers, clients and scratch space of one benchmark run, handed to every scenario."""

    config: Config
    workdir: Path
    database_url: str  # postgresql://, for asyncpg and the app alike
    redis_url: str
    db: asyncpg.Pool
    redis: Redis
    postgres: LocalPostgres | None = None
    redis_server: LocalRedis | None = None
    children: list[Child] = field(default_factory=list)
    peak_rss: dict[str, list[float]] = field(default_factory=dict)
    queue_name: str = "bench"
    spawned: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the project's defaults except the servers and JSON logs."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SAQ_QUEUE_NAME": self.queue_name,
            "WORKER_CONCURRENCY": str(self.config.concurrency),
            # Only shutdown waits on it: an idle worker blocks in BLMOVE until cancelled.
            "WORKER_SHUTDOWN_GRACE_PERIOD": "0",
            "LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            # Access checks on, as shipped: every load generator sends this key.
            "AUTH_DISABLED": "false",
            "ADMIN_API_KEY": BENCH_API_KEY,
            **extra,
        }

    async def spawn(self, name: str, command: list[str], **extra_env: str) -> Child:
        self.spawned += 1
        log = self.workdir / f"{self.spawned:03d}-{name}.log"  # one log per process
        child = await Child.start(name, command, self.env(**extra_env), log)
        self.children.append(child)
        return child

    async def retire(self, child: Child, role: str | None = None) -> None:
        """Stop a child, keeping its peak RSS under `role` (api, worker, ...)."""
        if role is not None and child.process.returncode is None:
            self.peak_rss.setdefault(role, []).append(child.peak_rss_mb())
        await child.stop()
        self.children.remove(child)

    async def stop_all(self) -> None:
        for child in list(self.children):
            await child.stop()
        self.children.clear()

    def server_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds PostgreSQL (all its processes) and Redis have used so far."""
        used = {"postgres": 0.0, "redis": 0.0}
        if self.postgres is not None:
            postmaster = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
            for pid in [postmaster, *children_of(postmaster)]:
                with contextlib.suppress(OSError):
                    used["postgres"] += sum(cpu_seconds(pid))
        if self.redis_server is not None and self.redis_server.process is not None:
            used["redis"] = sum(cpu_seconds(self.redis_server.process.pid))
        return used

    async def reset(self) -> None:
        """Empty Redis and `background_jobs` between runs."""
        await self.redis.flushall()
        await self.db.execute("TRUNCATE background_jobs, job_dependencies")

    async def start_api(
        self, name: str, factory: str = APP, processes: int = 1
    ) -> tuple[Child, int]:
        """uvicorn with the flags the Dockerfile uses, on a free loopback port; `processes` > 1
        runs `--workers N` (WEB_CONCURRENCY in docker-compose.yml): N processes on one port."""
        port = free_port()
        command = [
            str(VENV_BIN / "uvicorn"), "--factory", factory, "--host", "127.0.0.1",
            "--port", str(port), *(["--workers", str(processes)] if processes > 1 else []),
        ]  # fmt: skip
        child = await self.spawn(name, command)
        child.port = port
        await child.wait_for_output("Application startup complete", within=60, times=processes)
        # Printed once the socket is bound: a port another process took in the meantime
        # ends uvicorn after its start-up, and another server may answer on that port.
        await child.wait_for_output(f"Uvicorn running on http://127.0.0.1:{port}", within=60)
        return child, port

    async def start_worker(self, name: str, **extra_env: str) -> Child:
        """The project's worker, with the command the README and docker-compose give."""
        command = [str(VENV_BIN / "litestar"), "--app", APP, "workers", "run"]
        return await self.spawn(name, command, **extra_env)


@contextlib.asynccontextmanager
async def servers(
    workdir: Path, durable: bool = True
) -> AsyncIterator[tuple[LocalPostgres, LocalRedis]]:
    """Throwaway PostgreSQL and Redis on free loopback ports, stopped on the way out."""
    postgres = LocalPostgres(workdir / "postgres", free_port(), durable=durable)
    redis = LocalRedis(workdir / "redis", free_port())
    try:
        await asyncio.to_thread(postgres.start)
        await asyncio.to_thread(redis.start)
        share_priority(int((postgres.data_dir / "postmaster.pid").read_text().split()[0]))
        if redis.process is not None:
            share_priority(redis.process.pid)
        yield postgres, redis
    finally:
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(postgres.stop, "immediate")


async def migrate(database_url: str) -> None:
    """The real Alembic migrations, with the command the README gives."""
    process = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "litestar"), "--app", APP, "database", "upgrade", "--no-prompt",
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"migration failed:\n{output.decode(errors='replace')[-3000:]}")


def make_workdir() -> Path:
    # A folder the `postgres` user can enter when we run as root (mkdtemp makes it 0700).
    workdir = Path(tempfile.mkdtemp(prefix="tracked-jobs-bench-"))
    workdir.chmod(0o755)
    return workdir


@contextlib.asynccontextmanager
async def bench_context(config: Config) -> AsyncIterator[Bench]:
    workdir = make_workdir()
    share_priority(os.getpid())  # this process, and the load generator it runs
    try:
        async with servers(workdir, durable=not config.relaxed) as (postgres, redis_server):
            await migrate(postgres.url)
            db = await asyncpg.create_pool(postgres.url, min_size=1, max_size=4)
            redis = redis_from_url(redis_server.url)
            bench = Bench(config, workdir, postgres.url, redis_server.url, db, redis)
            bench.postgres, bench.redis_server = postgres, redis_server
            try:
                yield bench
            finally:
                await bench.stop_all()
                await redis.aclose()
                await db.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def describe_failure(bench: Bench) -> str:
    return "\n".join(f"--- {c.name} (pid {c.pid}) ---\n{c.tail()}" for c in bench.children)


def as_json_ready(value: Any) -> Any:
    """Round floats for a readable results file."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: as_json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_ready(v) for v in value]
    return value
