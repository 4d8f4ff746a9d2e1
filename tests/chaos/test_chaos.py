"""Break the system while it works; no job may be lost or left stuck.

Each test is one scenario of the table in docs/reliability.md; `Cluster.settle` counts
submitted / completed / failed-with-reason / lost / stuck.
"""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy import text

from app.jobs.registry import TaskFunction
from tests.chaos.app import chaos_sleep, chaos_sleep_once
from tests.chaos.conftest import Cluster
from tests.support import eventually

TRIGGER = "/api/v1/tasks/trigger-test"


def assert_nothing_lost_or_stuck(counts: dict[str, int]) -> None:
    assert counts["lost"] == 0, counts
    assert counts["stuck"] == 0, counts
    assert counts["failed_without_reason"] == 0, counts


async def kill_9_a_worker_running(cluster: Cluster, task: TaskFunction) -> list[str]:
    """20 two-second jobs of `task`; the worker running them is killed, another takes over."""
    worker = cluster.start_worker()
    job_ids = await cluster.submit(20, task, seconds=2)
    await cluster.wait_until_status(job_ids, {"running"}, 5)
    worker.send(signal.SIGKILL)
    worker.process.wait()
    cluster.start_worker("worker 2")
    return job_ids


async def test_kill_9_a_worker_with_jobs_in_flight_and_retries_left(cluster: Cluster) -> None:
    job_ids = await kill_9_a_worker_running(cluster, chaos_sleep)

    counts = await cluster.settle("kill -9 worker, retries left", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 20, counts


async def test_kill_9_a_worker_with_jobs_in_flight_and_no_retries(cluster: Cluster) -> None:
    job_ids = await kill_9_a_worker_running(cluster, chaos_sleep_once)

    counts = await cluster.settle("kill -9 worker, no retries", job_ids)
    assert_nothing_lost_or_stuck(counts)
    rows = await cluster.rows(job_ids)
    lost_worker = [r for r in rows.values() if r.status == "failed"]
    assert lost_worker, "some jobs were running when the worker died"
    assert all(r.error.startswith("worker lost") for r in lost_worker), lost_worker


async def test_kill_9_a_worker_holding_unwritten_lifecycle_writes(cluster: Cluster) -> None:
    # Writes wait 5 s before a flush: the jobs finish in Redis, the rows do not know yet.
    worker = cluster.start_worker(LIFECYCLE_FLUSH_INTERVAL_MS="5000")
    job_ids = await cluster.submit(10, chaos_sleep_once, seconds=0.05)
    queue = await cluster.queue()

    async def finished_in_redis() -> bool:
        jobs = await queue.jobs(job_ids)
        return all(job is not None and job.status == "complete" for job in jobs)

    await eventually(finished_in_redis, what="jobs complete in redis")
    worker.send(signal.SIGKILL)
    worker.process.wait()
    rows = await cluster.rows(job_ids)
    assert not any(r.status == "complete" for r in rows.values()), "writes were still buffered"
    cluster.start_worker("worker 2")

    counts = await cluster.settle("kill -9 worker holding unwritten row updates", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 10, counts


async def test_redis_flushall_with_jobs_queued(cluster: Cluster) -> None:
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.05)
    redis = (await cluster.queue()).redis
    await redis.flushall()
    cluster.start_worker()

    counts = await cluster.settle("redis FLUSHALL, jobs queued", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 30, counts


async def test_redis_restart_without_persistence_with_jobs_queued(cluster: Cluster) -> None:
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.05)
    cluster.redis.stop()
    cluster.redis.start()  # no AOF, no snapshot: every queued job is gone
    cluster.start_worker()

    counts = await cluster.settle("redis restart (no persistence), jobs queued", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 30, counts


async def test_redis_down_while_requests_keep_arriving(cluster: Cluster) -> None:
    cluster.start_api()
    worker = cluster.start_worker()
    cluster.redis.stop()
    job_ids = []
    for n in range(20):
        status, body = cluster.http("POST", TRIGGER, {"message": f"during outage {n}"})
        assert status == 202, body  # the row is the outbox: accepted while Redis is down
        job_ids.append(body["job_id"])
    await asyncio.sleep(2)
    cluster.redis.start()

    counts = await cluster.settle("redis down while requests arrive", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 20, counts
    assert worker.process.poll() is None, "the worker recovered by itself"
    status, _ = cluster.http("POST", TRIGGER, {"message": "after the outage"})
    assert status == 202


async def test_postgres_down_while_jobs_are_processed(cluster: Cluster) -> None:
    cluster.start_api()
    cluster.start_worker()
    job_ids = await cluster.submit(30, chaos_sleep, seconds=0.5)
    await cluster.wait_until_status(job_ids, {"running", "complete"}, 5)
    cluster.postgres.stop(mode="fast")
    status, body = cluster.http("POST", TRIGGER, {"message": "database is down"})
    assert status == 503, body
    await asyncio.sleep(3)  # jobs keep running; their lifecycle writes wait
    cluster.postgres.start()

    counts = await cluster.settle("postgres down while jobs run", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 30, counts
    # The 503 wrote nothing and enqueued nothing.
    redis = (await cluster.queue()).redis
    assert len(await redis.keys(f"saq:job:{cluster.settings.queue_name}:*")) == 30
    async with cluster.engine.connect() as connection:
        total = await connection.scalar(text("SELECT count(*) FROM background_jobs"))
    assert total == 30


async def test_sigterm_to_a_worker_mid_job(cluster: Cluster) -> None:
    worker = cluster.start_worker()
    job_ids = await cluster.submit(5, chaos_sleep_once, seconds=5)
    await cluster.wait_until_status(job_ids, {"running"}, 5)
    worker.stop(signal.SIGTERM)  # grace period 1 s: the jobs cannot finish in time
    rows = await cluster.rows(job_ids)
    assert {r.status for r in rows.values()} == {"queued"}, rows
    assert all("worker shut down" in r.error for r in rows.values()), rows
    cluster.start_worker("worker 2")

    counts = await cluster.settle("SIGTERM to a worker mid-job", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["completed"] == 5, counts


async def test_abort_from_the_saq_ui_and_from_the_api(cluster: Cluster) -> None:
    cluster.start_api()
    cluster.start_worker()
    job_ids = await cluster.submit(6, chaos_sleep, seconds=30)
    await cluster.wait_until_status(job_ids, {"running"}, 6)
    queue = cluster.settings.queue_name
    for job_id in job_ids[:3]:
        status, body = cluster.http("POST", f"/saq/api/queues/{queue}/jobs/{job_id}/abort")
        assert status in (200, 201, 202), body
    for job_id in job_ids[3:]:
        status, body = cluster.http("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 202, body

    counts = await cluster.settle("abort from /saq and from the API", job_ids)
    assert_nothing_lost_or_stuck(counts)
    assert counts["failed_with_reason"] == 6, counts
    rows = await cluster.rows(job_ids)
    assert {r.status for r in rows.values()} == {"aborted"}
