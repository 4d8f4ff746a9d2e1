"""The workers' loops count their passes for /metrics without I/O: a pass that raised is a
failed pass; a turn left to the worker that holds the loop's lock is no pass at all.

The lock (`SET NX PX` in Redis) is a stand-in that is free, held or raising; each loop runs
with no pause between turns and is stopped after a few turns, counted by the lock's
attempts, so nothing here is timed. Successful passes, on the real servers:
tests/integration/test_alert_metrics.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from app.jobs.metrics import RECONCILER, RETENTION, JobMetrics
from app.jobs.reconciler import Reconciler
from app.ops.partitions import Partitions
from app.ops.retention import Retention

TURNS = 3


@dataclass
class Lock:
    """The Redis a loop asks for its lock: `held` by another worker, or `error` raised."""

    held: bool = False
    error: BaseException | None = None
    attempts: int = 0
    turns_taken: asyncio.Event = field(default_factory=asyncio.Event)

    async def set(self, *args: Any, **kwargs: Any) -> bool:
        self.attempts += 1
        if self.attempts == TURNS:
            self.turns_taken.set()
        if self.error is not None:
            raise self.error
        return not self.held


@dataclass
class QueueStandIn:
    redis: Lock
    metrics: JobMetrics = field(default_factory=lambda: JobMetrics(None, "q"))  # type: ignore[arg-type]
    name: str = "q"


def unreachable_database() -> Any:
    raise ConnectionRefusedError("PostgreSQL does not answer")


async def turns(run: Callable[[], Coroutine[Any, Any, None]], lock: Lock) -> None:
    """Let the loop take `TURNS` turns (each asks for the lock once), then stop it."""
    task = asyncio.create_task(run())
    await lock.turns_taken.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def reconciler(lock: Lock) -> tuple[Reconciler, JobMetrics]:
    queue = QueueStandIn(lock)
    loop = Reconciler(
        queue,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # no pass gets as far as enqueuing
        unreachable_database,
        interval=0,
        grace=0,
        worker_lost_after=0,
    )
    return loop, queue.metrics


def retention(lock: Lock) -> tuple[Retention, JobMetrics]:
    metrics = JobMetrics(None, "q")  # type: ignore[arg-type]
    loop = Retention(
        unreachable_database,
        Partitions(unreachable_database, width=timedelta(days=1), ahead=3),
        lock,  # type: ignore[arg-type]
        "q",
        job_days=30,
        audit_days=0,
        interval=0,
        metrics=metrics,
    )
    return loop, metrics


LOOPS = {RECONCILER: reconciler, RETENTION: retention}


async def counted(name: str, lock: Lock) -> dict[tuple[str, ...], float]:
    loop, metrics = LOOPS[name](lock)
    await turns(loop.run, lock)
    counts = dict(metrics._counts)
    await metrics.close()  # its publishing task (nowhere to publish: logged, not raised)
    return counts


@pytest.mark.parametrize("name", LOOPS)
async def test_turns_left_to_the_worker_holding_the_lock_are_no_passes(name: str) -> None:
    assert await counted(name, Lock(held=True)) == {}


@pytest.mark.parametrize("name", LOOPS)
async def test_a_pass_that_raises_is_a_failed_pass(name: str) -> None:
    """PostgreSQL unreachable once the lock is taken; then Redis itself."""
    failed = {("maintenance_passes", name, "failed"): TURNS}
    assert await counted(name, Lock()) == failed
    assert await counted(name, Lock(error=ConnectionError("Redis does not answer"))) == failed
