"""`GET /api/v1/workers`: a live worker as its SAQ record describes it (host, pid, queue,
concurrency, start, last report) with the job it runs now, and a worker with no record left
while a row still runs on it, flagged as lost; a worker that lists its jobs (issue 17's
listing) is read from its listing."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from litestar.testing import AsyncTestClient
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.db.models import BackgroundJob
from app.jobs.queue.tracked import TrackedQueue
from tests.support import StartWorker, WaitForRow, eventually


async def test_a_live_worker_says_who_it_is_and_which_job_it_runs(
    client: AsyncTestClient[Any],
    settings: Settings,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    before = datetime.now(UTC)
    worker = await start_worker()
    answer = await client.post(
        "/api/v1/tasks/trigger-test", json={"message": "long", "sleep_seconds": 30}
    )
    job_id = answer.json()["job_id"]
    await wait_for_row(job_id, lambda row: row.status == "running")

    async def listed() -> dict[str, Any] | None:
        found = (await client.get("/api/v1/workers")).json()["workers"]
        ours = [w for w in found if w["id"] == str(worker.id)]
        return ours[0] if ours and ours[0]["running"] else None

    shown = await eventually(listed, what="the worker with its running job")
    assert shown["queue"] == settings.queue_name
    assert (shown["host"], shown["pid"]) == (socket.gethostname(), os.getpid())
    assert shown["concurrency"] == settings.worker_concurrency
    started = datetime.fromisoformat(shown["started_at"])
    assert before - timedelta(seconds=5) <= started <= datetime.now(UTC)
    reported = datetime.fromisoformat(shown["last_report_at"])
    assert started <= reported <= datetime.now(UTC)
    assert 0 <= shown["last_report_age_seconds"] < 60
    (running,) = shown["running"]
    assert (running["job_id"], running["task_name"]) == (job_id, "trigger_test")
    assert running["started_at"] is not None
    assert (await client.get("/api/v1/workers")).json()["lost_workers"] == []
    await client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_a_row_running_on_a_worker_with_no_record_is_flagged_lost(
    client: AsyncTestClient[Any], settings: Settings, engine: AsyncEngine
) -> None:
    """What a worker killed mid-job leaves: its record expires in Redis, its row stays
    `running` until the reconciler acts. Rows of other queues are not this app's."""
    gone, lost_job = f"gone-{uuid4()}", uuid4()
    now = datetime.now(UTC)
    rows = [
        BackgroundJob(
            job_id=lost_job if queue == settings.queue_name else uuid4(),
            task_name="trigger_test",
            queue=queue,
            status="running",
            attempts=1,
            worker_id=gone,
            started_at=now,
        )
        for queue in (settings.queue_name, "another-queue")
    ]
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()

    body = (await client.get("/api/v1/workers")).json()
    (lost,) = body["lost_workers"]
    assert (lost["id"], lost["queue"]) == (gone, settings.queue_name)
    (job,) = lost["running"]
    assert (job["job_id"], job["task_name"]) == (str(lost_job), "trigger_test")
    assert body["running_rows_capped"] is False


async def test_a_worker_that_lists_its_jobs_is_read_from_its_listing(
    client: AsyncTestClient[Any], queue: TrackedQueue, engine: AsyncEngine
) -> None:
    """The listing a tracked worker adds to its record (`listed_at`, `jobs`): what it runs
    even before the job's row says `running`."""
    row_id, worker_id = str(uuid4()), f"listing-{uuid4()}"
    started = int(datetime.now(UTC).timestamp() * 1000)
    info: Any = {
        "stats": {"complete": 3, "failed": 1, "retried": 0, "aborted": 0, "uptime": 5000},
        "queue_key": queue.name,
        "metadata": {"host": "h1", "pid": 7, "queue": queue.name, "concurrency": 4},
        "listed_at": started + 100,
        "jobs": [{"key": row_id, "row_id": row_id, "started": started}],
    }
    # SAQ's own write: the record as another worker process wrote it (this queue would put
    # its own listing in).
    await RedisQueue.write_worker_info(queue, worker_id, info, ttl=30)

    workers = (await client.get("/api/v1/workers")).json()["workers"]
    (shown,) = [w for w in workers if w["id"] == worker_id]
    assert shown["running_from"] == "listing"
    assert (shown["host"], shown["pid"], shown["concurrency"]) == ("h1", 7, 4)
    assert (shown["complete"], shown["failed"]) == (3, 1)
    reported = datetime.fromisoformat(shown["last_report_at"]).timestamp() * 1000
    assert abs(reported - (started + 100)) < 1
    (running,) = shown["running"]
    assert (running["key"], running["job_id"], running["task_name"]) == (row_id, row_id, None)
