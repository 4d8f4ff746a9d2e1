"""What every peer's run shares: durable settings, a clean slate, CPU of a worker's process tree,
and driving a worker of another system until its jobs are done."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.common import Bench, Child, children_of, cpu_seconds, rounded

# PostgreSQL's defaults, what users run: every commit waits for its WAL flush.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
SHOWN = (*DURABLE, "wal_sync_method", "shared_buffers", "server_version")
POLL_SECONDS = 0.2


async def make_durable(bench: Bench) -> dict[str, str]:
    """Force the durable settings whatever the throwaway server was started with; SHOW them."""
    for name, value in DURABLE.items():
        await bench.db.execute(f"ALTER SYSTEM SET {name} = {value}")
    await bench.db.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while True:
        # Each pooled connection sees the reload on its next command; a fresh one for certain.
        connection = await bench.db.acquire()
        try:
            shown = {name: str(await connection.fetchval(f"SHOW {name}")) for name in SHOWN}
        finally:
            await bench.db.release(connection)
        if all(shown[name] == value for name, value in DURABLE.items()):
            return shown
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not take the durable settings: {shown}")
        await asyncio.sleep(0.1)


async def redis_settings(bench: Bench) -> dict[str, str]:
    config: dict[str, str] = {}
    for name in ("appendonly", "appendfsync", "save"):
        config |= {str(k): str(v) for k, v in (await bench.redis.config_get(name)).items()}
    config["redis_version"] = str((await bench.redis.info("server"))["redis_version"])
    return config


# Tables of the other systems, emptied between runs so each starts from the same state.
PEER_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
    "celery_taskmeta",
)


async def reset_all(bench: Bench) -> None:
    """Empty Redis and every system's tables, then a checkpoint: no run pays for another's WAL."""
    await bench.reset()
    present = await bench.db.fetch(
        "SELECT tablename FROM pg_tables WHERE tablename = ANY($1)", list(PEER_TABLES)
    )
    if present:
        names = ", ".join(row["tablename"] for row in present)
        await bench.db.execute(f"TRUNCATE {names} CASCADE")
    await bench.db.execute("CHECKPOINT")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (a prefork pool's children)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += sum(cpu_seconds(current))
            pending.extend(children_of(current))
    return total


@dataclass
class Usage:
    """CPU seconds of the worker tree, PostgreSQL and Redis at one moment."""

    worker: float
    postgres: float
    redis: float

    @classmethod
    def now(cls, bench: Bench, child: Child) -> Usage:
        servers = bench.server_cpu_seconds()
        return cls(tree_cpu_seconds(child.pid), servers["postgres"], servers["redis"])

    def per_job_ms(self, before: Usage, jobs: int) -> dict[str, float]:
        return {
            f"{name}_cpu_ms_per_job": rounded(
                (getattr(self, name) - getattr(before, name)) * 1000 / max(jobs, 1), 3
            )
            for name in ("worker", "postgres", "redis")
        }


async def drive(
    bench: Bench,
    child: Child,
    ready: str,
    done: Callable[[], Awaitable[int]],
    n: int,
    max_seconds: float,
) -> dict[str, Any]:
    """From the worker's ready line until `done()` reaches n (or `max_seconds` pass): CPU used.

    The worker is stopped afterwards; a capped run reports the jobs it finished, and its rate
    comes from those jobs' own timestamps like any other run's.
    """
    try:
        await child.wait_for_output(ready, within=60)
        before = Usage.now(bench, child)
        deadline = time.monotonic() + max_seconds
        while (finished := await done()) < n and time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited while draining:\n{child.tail()}")
            await asyncio.sleep(POLL_SECONDS)
        after = Usage.now(bench, child)
    finally:
        await child.stop(within=5)  # nothing after the reading is measured: no long goodbye
        await bench.retire(child)
    return {"jobs_done": finished, "capped": finished < n} | after.per_job_ms(before, finished)
