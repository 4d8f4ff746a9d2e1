"""The operator's actions on real PostgreSQL and Redis, with a real (in-process) SAQ worker:
retry of one job, bulk cancel and bulk retry by ids and by filter, and their audit rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.asgi import Parts, create_app
from app.config import Settings
from app.db.models import JobAction
from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reconciler import Reconciler
from app.jobs.record.retry import RETRY_ENDED, retry_parameters
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow, read_rows
from tests.support.executions import counted, executions

FAILING = {"now": True}  # whether `flaky` fails on its next run


@counted
@tracked_task(timeout=30, attempts=1)
async def flaky(ctx: dict[str, Any], *, label: str) -> dict[str, str]:
    if FAILING["now"]:
        raise RuntimeError(f"flaky failed: {label}")
    return {"label": label}


REGISTRY = TaskRegistry([trigger_test, flaky])
OPEN_MODE_ACTOR = "anonymous (auth disabled)"


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncTestClient[Any]]:
    FAILING["now"] = True
    async with engine.begin() as connection:  # the audit rows of this test only
        await connection.execute(text("TRUNCATE job_actions"))
    async with AsyncTestClient(app=create_app(settings, registry=REGISTRY)) as client:
        yield client


@pytest.fixture
def enqueuer(make_enqueuer: Callable[..., Enqueuer]) -> Enqueuer:
    return make_enqueuer(REGISTRY)


async def failed_job(enqueuer: Enqueuer, wait_for_row: WaitForRow, label: str = "x") -> UUID:
    job = await enqueuer.enqueue(flaky, {"label": label})
    await wait_for_row(job.job_id, lambda row: row.status == "failed", "the first run failed")
    return job.job_id


async def audit_rows(engine: AsyncEngine, action: str) -> list[JobAction]:
    async with AsyncSession(engine) as session:
        rows = await session.scalars(select(JobAction).where(JobAction.action == action))
        return list(rows)


async def test_a_retried_failed_job_runs_again_and_keeps_its_history(
    api: AsyncTestClient[Any],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    queue: TrackedQueue,
    engine: AsyncEngine,
) -> None:
    await start_worker(REGISTRY)
    job_id = await failed_job(enqueuer, wait_for_row)
    FAILING["now"] = False

    response = await api.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["job_id"] == str(job_id)

    row = await wait_for_row(job_id, lambda row: row.status == "complete", "the retry completed")
    assert (row.attempts, row.max_attempts, row.manual_retries) == (2, 2, 1)
    assert row.result == {"label": "x"}
    first, retried = row.errors
    assert (first["attempt"], first["status"]) == (1, "failed")
    assert "flaky failed" in first["error"]
    assert retried["retried_by"] == OPEN_MODE_ACTOR
    assert (retried["attempt"], retried["retried_from"], retried["status"]) == (
        1,
        "failed",
        "queued",
    )
    assert retried["at"]
    assert (await executions(queue))[str(job_id)] == 2
    [audit] = await audit_rows(engine, "retry")
    assert (audit.job_ids, audit.outcome, audit.actor) == ([job_id], "ok", OPEN_MODE_ACTOR)


async def test_only_failed_or_aborted_jobs_are_retried(
    api: AsyncTestClient[Any],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    engine: AsyncEngine,
) -> None:
    queued = await enqueuer.enqueue(trigger_test, {"message": "waits"})  # no worker yet
    assert (await api.post(f"/api/v1/jobs/{queued.job_id}/retry")).status_code == 409

    await start_worker(REGISTRY)
    done = await enqueuer.enqueue(trigger_test, {"message": "m", "sleep_seconds": 0})
    await wait_for_row(done.job_id, lambda row: row.status == "complete")
    response = await api.post(f"/api/v1/jobs/{done.job_id}/retry")
    assert response.status_code == 409
    assert "complete" in response.json()["detail"]

    assert (await api.post(f"/api/v1/jobs/{uuid4()}/retry")).status_code == 404
    outcomes = sorted(row.outcome for row in await audit_rows(engine, "retry"))
    assert outcomes == ["conflict", "conflict"]  # a 404 found no job to write about


async def test_concurrent_retries_of_one_job_run_it_once(
    api: AsyncTestClient[Any],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    queue: TrackedQueue,
) -> None:
    await start_worker(REGISTRY)
    job_id = await failed_job(enqueuer, wait_for_row)
    FAILING["now"] = False

    answers = await asyncio.gather(*(api.post(f"/api/v1/jobs/{job_id}/retry") for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [202, 409, 409, 409, 409]
    row = await wait_for_row(job_id, lambda row: row.status == "complete")
    assert (row.attempts, row.manual_retries) == (2, 1)
    assert (await executions(queue))[str(job_id)] == 2


async def test_late_events_of_the_run_before_a_retry_change_nothing(
    api: AsyncTestClient[Any],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    engine: AsyncEngine,
    jobs: Any,
) -> None:
    worker = await start_worker(REGISTRY)
    job_id = await failed_job(enqueuer, wait_for_row)
    await worker.stop()  # the retried job stays queued
    assert (await api.post(f"/api/v1/jobs/{job_id}/retry")).status_code == 202

    # The first run's end, delivered again (SAQ #277) or repaired from an old Redis record.
    late = Transition(job_id, "flaky", JobStatus.FAILED, 1, error="late", manual_retries=0)
    assert await jobs.apply([late]) == []
    row = (await read_rows(engine, [job_id]))[str(job_id)]
    assert (row.status, row.manual_retries) == ("queued", 1)


async def test_bulk_retry_by_ids_counts_what_it_did(
    api: AsyncTestClient[Any],
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    engine: AsyncEngine,
) -> None:
    await start_worker(REGISTRY)
    failed = [await failed_job(enqueuer, wait_for_row, f"job {i}") for i in range(3)]
    done = await enqueuer.enqueue(trigger_test, {"message": "m", "sleep_seconds": 0})
    await wait_for_row(done.job_id, lambda row: row.status == "complete")
    FAILING["now"] = False
    missing = uuid4()

    asked = [*failed, done.job_id, missing, failed[0]]  # a repeated id counts once
    response = await api.post("/api/v1/jobs/bulk/retry", json={"job_ids": [str(i) for i in asked]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert {k: result[k] for k in ("matched", "acted_on", "skipped", "not_found")} == {
        "matched": 4,
        "acted_on": 3,
        "skipped": 1,
        "not_found": 1,
    }
    assert sorted(result["job_ids"]) == sorted(str(i) for i in failed)
    for job_id in failed:
        await wait_for_row(job_id, lambda row: row.status == "complete")
    [audit] = await audit_rows(engine, "bulk_retry")
    assert (audit.count, audit.outcome, audit.filter) == (3, "ok", None)
    assert set(audit.job_ids) == {*failed, done.job_id, missing}


async def test_a_bulk_body_needs_exactly_one_of_ids_or_filter_and_at_most_1000_ids(
    api: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    too_many = [str(uuid4()) for _ in range(1001)]
    for body in ({}, {"job_ids": too_many}, {"job_ids": [], "filter": {}}, {"filter": {"x": 1}}):
        for action in ("cancel", "retry"):
            response = await api.post(f"/api/v1/jobs/bulk/{action}", json=body)
            assert response.status_code == 400, (body, response.text)
    both = {"job_ids": [str(uuid4())], "filter": {}}
    assert (await api.post("/api/v1/jobs/bulk/retry", json=both)).status_code == 400
    assert await audit_rows(engine, "bulk_retry") == []  # nothing was asked that could be done


async def insert_failed(engine: AsyncEngine, task_name: str, count: int) -> None:
    """`count` failed rows of `task_name`, made in one statement (no job ever ran)."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments,
                    errors, attempts, max_attempts, error, created_at, updated_at)
                SELECT gen_random_uuid(), gen_random_uuid(), :task, 'elsewhere', 'failed',
                    '{}'::jsonb, '[]'::jsonb, 1, 1, 'boom',
                    now() - make_interval(secs => n), now()
                FROM generate_series(0, :count - 1) AS n
                """
            ),
            {"task": task_name, "count": count},
        )


async def test_bulk_retry_by_filter_takes_1000_at_a_time_within_a_fixed_window(
    api: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    await insert_failed(engine, "bulk_task", 1003)
    await insert_failed(engine, "other_task", 2)
    body = {"filter": {"task_name": "bulk_task", "status": ["failed", "complete"]}}

    first = (await api.post("/api/v1/jobs/bulk/retry", json=body)).json()
    assert (first["matched"], first["acted_on"], first["more_remain"]) == (1000, 1000, True)
    window_end = first["created_before"]
    await insert_failed(engine, "bulk_task", 1)  # made after the window: never part of it

    again = {"filter": {**body["filter"], "created_before": window_end}}
    second = (await api.post("/api/v1/jobs/bulk/retry", json=again)).json()
    assert (second["matched"], second["acted_on"], second["more_remain"]) == (3, 3, False)
    async with engine.connect() as connection:
        counts = dict(
            (
                await connection.execute(
                    text(
                        "SELECT task_name || ':' || status, count(*) "
                        "FROM background_jobs GROUP BY 1"
                    )
                )
            ).all()
        )
    assert counts == {"bulk_task:queued": 1003, "bulk_task:failed": 1, "other_task:failed": 2}

    audits = await audit_rows(engine, "bulk_retry")
    assert sorted(a.count for a in audits) == [3, 1000]
    assert all(a.filter is not None and a.filter["task_name"] == "bulk_task" for a in audits)
    # Both calls worked on one window, which the audit rows record.
    ends = {datetime.fromisoformat(a.filter["created_before"]) for a in audits if a.filter}
    assert ends == {datetime.fromisoformat(window_end)}


async def test_bulk_cancel_by_filter_aborts_the_waiting_jobs(
    api: AsyncTestClient[Any], enqueuer: Enqueuer, wait_for_row: WaitForRow, engine: AsyncEngine
) -> None:
    project = uuid4()
    waiting = [
        (await enqueuer.enqueue(trigger_test, {"message": str(i)}, project_id=project)).job_id
        for i in range(3)
    ]
    other = await enqueuer.enqueue(trigger_test, {"message": "another project"})

    response = await api.post(
        "/api/v1/jobs/bulk/cancel", json={"filter": {"project_id": str(project)}}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["matched"], result["acted_on"], result["skipped"]) == (3, 3, 0)
    for job_id in waiting:
        await wait_for_row(job_id, lambda row: row.status == "aborted")
    assert (await read_rows(engine, [other.job_id]))[str(other.job_id)].status == "queued"
    [audit] = await audit_rows(engine, "bulk_cancel")
    assert (audit.count, set(audit.job_ids)) == (3, set(waiting))
    assert audit.filter is not None
    assert audit.filter["project_id"] == str(project)


async def test_a_retry_whose_job_never_reached_redis_is_enqueued_by_the_reconciler(
    enqueuer: Enqueuer,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
    parts: Parts,
    session: AsyncSession,
) -> None:
    worker = await start_worker(REGISTRY)
    job_id = await failed_job(enqueuer, wait_for_row)
    await worker.stop()
    # The row flips, then Redis is down: the first run's ended record is all Redis holds.
    await session.execute(RETRY_ENDED, retry_parameters([job_id], "operator"))
    await session.commit()

    reconciler = Reconciler(
        parts.queue, parts.enqueuer, parts.sessions, interval=1, grace=0, worker_lost_after=30
    )
    assert (await reconciler.run_once(force=True)).requeued == 1
    FAILING["now"] = False
    await start_worker(REGISTRY)
    row = await wait_for_row(job_id, lambda row: row.status == "complete")
    assert (row.attempts, row.manual_retries) == (2, 1)
