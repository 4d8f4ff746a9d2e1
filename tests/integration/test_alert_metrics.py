"""The metrics the alerts of deploy/prometheus/alerts.yml need beyond the job counters: the
running jobs of lost workers, and the passes of the workers' maintenance loops (reconciler,
retention) with the time of their last success, counted in the process that made them and
read by the API's scrape through Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from uuid import uuid4

from litestar.testing import AsyncTestClient
from prometheus_client.core import Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import Parts, build_parts
from app.config import Settings
from app.jobs.metrics import RECONCILER, RETENTION
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reconciler import Reconciler
from app.ops.collector import JobsCollector
from app.ops.retention import Retention
from app.worker.settings import REGISTRY
from tests.support import StartWorker, eventually, free_port
from tests.support.rows import insert_rows
from tests.support.scrape import Scrape, samples, value


def running_row(queue: str, worker_id: str | None, status: str = "running") -> dict[str, Any]:
    return {
        "job_id": uuid4(), "task_name": "trigger_test", "queue": queue, "status": status,
        "worker_id": worker_id, "attempts": 1,
    }  # fmt: skip


async def scrape(client: AsyncTestClient[Any]) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return samples(response.text)


async def test_running_rows_of_workers_that_no_longer_report_are_lost_worker_jobs(
    client: AsyncTestClient[Any], settings: Settings, engine: AsyncEngine, start_worker: StartWorker
) -> None:
    """Catches: a job running on a live worker counted as lost, a lost one not counted, rows
    of other statuses or other queues counted."""
    queue = settings.queue_name
    worker = await start_worker()

    async def worker_reports() -> Scrape | None:
        scraped = await scrape(client)
        return scraped if value(scraped, "bgjobs_live_workers", queue=queue) == 1 else None

    await eventually(worker_reports, what="the worker in SAQ's live workers")
    # Inserted just now: the worker's reconciler leaves rows alone for RECONCILE_GRACE (10 s).
    await insert_rows(
        engine,
        [
            running_row(queue, worker.id),  # its worker reports: not lost
            running_row(queue, "killed-worker"),
            running_row(queue, "killed-worker"),
            running_row(queue, None),  # no worker at all will report on it
            running_row("another-queue", "killed-worker"),
            running_row(queue, "killed-worker", status="queued"),
            running_row(queue, "killed-worker", status="failed"),
        ],
    )
    scraped = await scrape(client)
    assert value(scraped, "bgjobs_lost_worker_jobs", queue=queue) == 3
    assert value(scraped, "bgjobs_source_up", source="database") == 1


def family(families: list[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    (found,) = [f for f in families if f.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in found.samples}


async def test_the_lost_worker_count_stops_at_its_cap(
    parts: Parts, queue: TrackedQueue, engine: AsyncEngine
) -> None:
    """Catches: a scrape that counts every lost row (its cost would grow with them)."""
    await insert_rows(engine, [running_row(queue.name, "killed-worker") for _ in range(5)])
    collector = JobsCollector(parts.metrics, queue, parts.sessions, lost_cap=3)
    lost = family(await collector.collect(), "bgjobs_lost_worker_jobs")
    assert lost == {(("queue", queue.name),): 3}


async def test_with_redis_down_the_lost_worker_count_is_left_out(settings: Settings) -> None:
    """Without SAQ's live workers every running row would look lost: no count at all."""
    dead = build_parts(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"), REGISTRY)
    try:
        families = await JobsCollector(dead.metrics, dead.queue, dead.sessions).collect()
    finally:
        await dead.close()
    assert [f for f in families if f.name == "bgjobs_lost_worker_jobs"] == []
    assert family(families, "bgjobs_source_up") == {
        (("source", "redis"),): 0,
        (("source", "database"),): 1,
    }


def passes(scraped: Scrape, queue: str, loop: str) -> tuple[float | None, float | None]:
    """(succeeded, failed) passes of `loop` in a scrape."""
    return tuple(  # type: ignore[return-value]
        value(scraped, "bgjobs_maintenance_passes_total", queue=queue, loop=loop, outcome=outcome)
        for outcome in ("succeeded", "failed")
    )


def last_success(scraped: Scrape, queue: str, loop: str) -> float | None:
    name = "bgjobs_maintenance_last_success_timestamp_seconds"
    return value(scraped, name, queue=queue, loop=loop)


async def one_pass(
    loop: Reconciler | Retention,
    parts: Parts,
    client: AsyncTestClient[Any],
    made: Callable[[Scrape], bool],
) -> Scrape:
    """Run `loop` as a worker does until the scrape shows its pass (`made`), then stop it.
    The process's counts are published at once rather than within PUBLISH_INTERVAL."""
    task = asyncio.create_task(loop.run())

    async def scraped() -> Scrape | None:
        await parts.metrics.publish()
        seen = await scrape(client)
        return seen if made(seen) else None

    try:
        return await eventually(scraped, what="the loop's first pass in the scrape")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reconciler_passes_that_fail_skip_and_succeed_reach_the_scrape(
    client: AsyncTestClient[Any], settings: Settings, parts: Parts, queue: TrackedQueue
) -> None:
    """Catches: a failed pass not counted, a pass left to another worker (its lock) counted as
    a success, a success without its time."""
    name = settings.queue_name
    before = await scrape(client)
    assert passes(before, name, RECONCILER) == (0, 0)  # both there before any pass
    assert last_success(before, name, RECONCILER) is None
    dead = build_parts(replace(settings, database_url=unreachable_database()), REGISTRY)
    options: dict[str, Any] = {"interval": 3600, "grace": 0, "worker_lost_after": 30}
    try:
        # PostgreSQL unreachable: the pass takes the lock, then fails.
        failing = Reconciler(queue, parts.enqueuer, dead.sessions, **options)
        failed = await one_pass(failing, parts, client, lambda s: any(passes(s, name, RECONCILER)))
    finally:
        await dead.close()
    assert passes(failed, name, RECONCILER) == (0, 1)
    assert last_success(failed, name, RECONCILER) is None

    working = Reconciler(queue, parts.enqueuer, parts.sessions, **options)
    report = await working.run_once()  # the failed pass still holds this interval's lock
    assert report.skipped
    await queue.redis.delete(f"saq:{name}:reconcile-lock")
    started = time.time()
    succeeded = await one_pass(
        working, parts, client, lambda s: passes(s, name, RECONCILER)[0] == 1
    )
    assert passes(succeeded, name, RECONCILER) == (1, 1)
    assert started <= (last_success(succeeded, name, RECONCILER) or 0) <= time.time()
    assert passes(succeeded, name, RETENTION) == (0, 0)


async def test_retention_passes_that_fail_and_succeed_reach_the_scrape(
    client: AsyncTestClient[Any], settings: Settings, parts: Parts, queue: TrackedQueue
) -> None:
    name = settings.queue_name
    dead = build_parts(replace(settings, database_url=unreachable_database()), REGISTRY)
    options: dict[str, Any] = {"job_days": 30, "audit_days": 0, "interval": 3600}
    try:
        failing = Retention(
            dead.sessions, dead.retention.partitions, queue.redis, name,
            metrics=parts.metrics, **options,
        )  # fmt: skip
        failed = await one_pass(failing, parts, client, lambda s: any(passes(s, name, RETENTION)))
    finally:
        await dead.close()
    assert passes(failed, name, RETENTION) == (0, 1)

    working = Retention(
        parts.sessions, parts.retention.partitions, queue.redis, name,
        metrics=parts.metrics, **options,
    )  # fmt: skip
    assert await working.run_once() == {}  # the lock of the failed pass: not a pass, not counted
    await queue.redis.delete(f"saq:{name}:retention-lock")
    scraped = await one_pass(working, parts, client, lambda s: passes(s, name, RETENTION)[0] == 1)
    assert passes(scraped, name, RETENTION) == (1, 1)
    assert last_success(scraped, name, RETENTION)


async def test_the_latest_success_of_any_process_is_kept(
    client: AsyncTestClient[Any], settings: Settings, parts: Parts
) -> None:
    """Catches: a process that publishes an older success moving the time back."""
    other = build_parts(settings, REGISTRY)  # a second worker process on the queue
    try:
        parts.metrics.pass_made(RETENTION, succeeded=True)
        await asyncio.sleep(0.01)
        other.metrics.pass_made(RETENTION, succeeded=True)
        await other.metrics.publish()
        latest = last_success(await scrape(client), settings.queue_name, RETENTION)
        await parts.metrics.publish()  # the earlier success, published later
    finally:
        await other.close()
    assert last_success(await scrape(client), settings.queue_name, RETENTION) == latest


def unreachable_database() -> str:
    return f"postgresql+asyncpg://user:password@127.0.0.1:{free_port()}/app_db"
