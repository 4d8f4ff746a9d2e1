"""Faults a chaos scenario applies to its cluster beyond stopping a process: Redis down for a
while and back empty, a plain SAQ worker beside the tracked ones, steady load; and what the
workers say they run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.jobs.queue.running import Listing
from app.jobs.registry import TaskFunction
from tests.support.cluster import Cluster
from tests.support.plain_worker import STARTED
from tests.support.processes import Running
from tests.support.servers import VENV_BIN

# redis-py retries a failed command 3 times, sleeping up to 2, 4 and 8 s (its default Retry,
# which the product keeps): an outage this long fails every command sent as it began.
REDIS_PY_GIVES_UP_WITHIN = 2 + 4 + 8 + 1.0
# What a worker's dequeue may sleep, at most, after Redis failed it (TrackedQueue.dequeue).
LONGEST_DEQUEUE_BACKOFF = 5.0


def recovery_bound(settings: Settings) -> float:
    """The README's bound: once a fault is over (a worker killed or stopped, Redis or
    PostgreSQL back), every accepted job is final or running again within this many seconds.

    Each reconciler rule acts one RECONCILE_INTERVAL after its condition holds: a row
    unchanged for RECONCILE_GRACE; a worker silent for WORKER_LOST_AFTER (and Redis up that
    long, so every live worker's record is back); a live worker's listing, rewritten every
    WORKER_LOST_AFTER/3 s at most. A SIGTERM re-queues after the shutdown grace period, and
    a worker that Redis failed dequeues again within its longest back-off.
    """
    longest_wait = max(
        settings.worker_lost_after, settings.reconcile_grace, settings.shutdown_grace_period
    )
    return longest_wait + settings.reconcile_interval + LONGEST_DEQUEUE_BACKOFF


async def restart_redis(
    cluster: Cluster, *, down_for: float, while_down: Callable[[], None] = lambda: None
) -> float:
    """Stop Redis for `down_for` s (calling `while_down` once it is down), then start it
    empty (no persistence); returns when it is back (time.monotonic())."""
    down_at = time.monotonic()
    await asyncio.to_thread(cluster.redis.stop)
    while_down()
    await asyncio.sleep(max(0.0, down_at + down_for - time.monotonic()))
    await asyncio.to_thread(cluster.redis.start)
    return time.monotonic()


def start_plain_worker(cluster: Cluster, worker_id: str, **env: str) -> Running:
    worker = Running(
        [str(VENV_BIN / "python"), "-m", "saq", "tests.support.plain_worker.settings", "-v"],
        {**cluster.env, "PLAIN_WORKER_ID": worker_id, **env},
        worker_id,
    )
    cluster.processes.append(worker)
    worker.wait_for_line(lambda line: STARTED in line)
    return worker


async def listings(cluster: Cluster) -> dict[str, Listing | None]:
    """The live workers, each with what it lists as running (None: a plain SAQ worker)."""
    workers = (await (await cluster.queue()).info())["workers"]
    return {worker_id: Listing.of(info) for worker_id, info in workers.items()}


async def not_run_by_their_workers(cluster: Cluster, job_ids: list[str]) -> list[str]:
    """Jobs whose row says `running` on a live worker that, in a listing made since the run
    began, does not list it; seen twice a second apart (a run may end between two reads)."""

    async def suspects() -> set[tuple[str, int]]:
        fleet = await listings(cluster)
        found = set()
        for job_id, row in (await cluster.rows(job_ids)).items():
            listing = fleet.get(str(row.worker_id))
            if row.status != "running" or listing is None or row.started_at is None:
                continue
            if listing.lists(job_id, since_ms=row.started_at.timestamp() * 1000) is False:
                found.add((job_id, row.attempts))
        return found

    first = await suspects()
    await asyncio.sleep(1)
    return sorted(job_id for job_id, _ in first & await suspects())


@dataclass
class SteadyLoad:
    """Jobs submitted through the outbox at a steady rate, each request on its own: a request
    that fails (PostgreSQL down) is refused, as the API's 503 would be."""

    cluster: Cluster
    task: TaskFunction
    per_second: float
    arguments: dict[str, Any]
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    _running: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._running = asyncio.create_task(self._submit_steadily())

    async def stop(self) -> None:
        assert self._running is not None
        self._running.cancel()
        await asyncio.gather(self._running, return_exceptions=True)

    async def _submit_steadily(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                one = asyncio.create_task(self._submit_one())
                pending.add(one)
                one.add_done_callback(pending.discard)
                await asyncio.sleep(1 / self.per_second)
        finally:
            await asyncio.gather(*pending, return_exceptions=True)  # answered or refused

    async def _submit_one(self) -> None:
        try:
            [job_id] = await self.cluster.submit(1, self.task, **self.arguments)
        except Exception:
            self.refused += 1
        else:
            self.accepted.append(job_id)
