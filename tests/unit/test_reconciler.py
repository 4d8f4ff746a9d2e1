"""The reconciler's decisions without I/O: an unfinished row and its job in Redis (or none)."""

from __future__ import annotations

from uuid import uuid4

import pytest
from saq.job import Job, Status

from app.db.models import BackgroundJob
from app.jobs.reconciler import Action, decide

NOW_MS = 1_714_564_800_000
LOST_AFTER_MS = 30_000
LIVE = {"live-worker"}


def row(status: str, *, attempts: int = 1, worker_id: str | None = None) -> BackgroundJob:
    return BackgroundJob(
        job_id=uuid4(), task_name="t", queue="q", status=status, attempts=attempts,
        worker_id=worker_id,
    )  # fmt: skip


def job(
    status: Status,
    *,
    attempts: int = 1,
    retries: int = 1,
    worker_id: str | None = "live-worker",
    silent_ms: int = 0,
) -> Job:
    saq_job = Job(function="t", status=status, attempts=attempts, retries=retries)
    saq_job.worker_id = worker_id
    saq_job.touched = NOW_MS - silent_ms
    return saq_job


def decision(of_row: BackgroundJob, of_job: Job | None) -> Action:
    if of_job is not None and not of_job.meta:  # the row's own job, found by its key
        of_job.key = str(of_row.job_id)
    return decide(of_row, of_job, LIVE, now_ms=NOW_MS, worker_lost_after_ms=LOST_AFTER_MS)


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_missing_from_redis_is_enqueued_again(status: str) -> None:
    assert decision(row(status, worker_id="gone-worker"), None) is Action.ENQUEUE_AGAIN


def test_a_running_row_whose_worker_still_lives_is_left_even_if_redis_lost_its_job() -> None:
    assert decision(row("running", worker_id="live-worker"), None) is Action.LEAVE


def test_a_job_running_on_a_live_worker_is_left() -> None:
    running = job(Status.ACTIVE, silent_ms=10 * LOST_AFTER_MS)  # a long job, no heartbeat
    assert decision(row("running", worker_id="live-worker"), running) is Action.LEAVE


def test_a_lost_workers_job_is_retried_while_attempts_remain() -> None:
    lost = job(Status.ACTIVE, retries=2, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("running", worker_id="killed"), lost) is Action.RETRY


def test_a_lost_workers_job_on_its_last_attempt_is_failed() -> None:
    lost = job(Status.ACTIVE, retries=1, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("running", worker_id="killed"), lost) is Action.FAIL


def test_a_silent_worker_within_the_allowed_time_is_left() -> None:
    quiet = job(Status.ACTIVE, retries=2, worker_id="restarting", silent_ms=LOST_AFTER_MS - 1)
    assert decision(row("running", worker_id="restarting"), quiet) is Action.LEAVE


@pytest.mark.parametrize(
    ("row_status", "row_attempts", "job_status", "job_attempts"),
    [
        ("running", 1, Status.COMPLETE, 1),  # the end was lost with a killed process
        ("queued", 0, Status.ACTIVE, 1),  # the start was lost
        ("queued", 1, Status.QUEUED, 2),  # a retry's new attempt count was lost
    ],
)
def test_a_row_behind_its_job_in_redis_is_repaired(
    row_status: str, row_attempts: int, job_status: Status, job_attempts: int
) -> None:
    behind = row(row_status, attempts=row_attempts, worker_id="live-worker")
    assert decision(behind, job(job_status, attempts=job_attempts)) is Action.REPAIR


def test_a_row_that_agrees_with_redis_is_left() -> None:
    assert decision(row("queued", attempts=0), job(Status.QUEUED, attempts=0)) is Action.LEAVE
