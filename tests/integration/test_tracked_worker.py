"""The tracked worker running real jobs: every outcome, reported by its queue, lands in the row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import TASKS
from app.worker.tasks import trigger_test
from tests.support import StartWorker, WaitForRow
from tests.support.executions import counted, executions


@tracked_task(timeout=10, attempts=3, retry_delay=0.01, max_retry_delay=0.05)
async def flaky(ctx: dict[str, Any], *, succeed_on: int) -> dict[str, int]:
    attempt = ctx["job"].attempts
    if attempt < succeed_on:
        raise ConnectionError(f"upstream refused attempt {attempt}")
    return {"attempt": attempt}


@tracked_task(timeout=10, attempts=2, retry_delay=3600, max_retry_delay=3600)
async def fails_then_waits_an_hour(ctx: dict[str, Any]) -> None:
    raise ValueError("first attempt fails")


@tracked_task(timeout=1, attempts=1)
async def too_slow(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


@tracked_task(timeout=60, attempts=1)
async def long_running(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(60)


REGISTRY = TaskRegistry([*TASKS, counted(flaky), fails_then_waits_an_hour, too_slow, long_running])


@pytest.fixture
def jobs(session: AsyncSession, make_enqueuer: Callable[..., Enqueuer]) -> BackgroundJobService:
    """The jobs service, knowing this module's tasks too."""
    return BackgroundJobService(session, enqueuer=make_enqueuer(REGISTRY))


async def test_a_default_job_completes_with_its_result(
    jobs: BackgroundJobService, queue: Queue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY)
    row = await jobs.enqueue(trigger_test, {"message": "hello"})
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert done.result == {"message": "hello", "slept_seconds": 0.1}
    assert done.attempts == 1
    assert done.worker_id
    assert done.started_at is not None
    assert done.completed_at is not None
    assert done.started_at <= done.completed_at
    assert (done.error, done.errors) == (None, [])


async def test_a_failing_job_is_failed_with_its_error_and_traceback(
    jobs: BackgroundJobService, queue: Queue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY)
    row = await jobs.enqueue(trigger_test, {"message": "boom", "fail": True})
    failed = await wait_for_row(row.job_id, lambda r: r.status == "failed")
    assert failed.error == "TestTaskFailure: test task failed on request: boom"
    assert failed.traceback is not None
    assert "Traceback (most recent call last)" in failed.traceback
    assert "TestTaskFailure" in failed.traceback
    assert failed.attempts == 1
    assert failed.completed_at is not None


async def test_retries_are_recorded_attempt_by_attempt_until_success(
    jobs: BackgroundJobService,
    queue: TrackedQueue,
    start_worker: StartWorker,
    wait_for_row: WaitForRow,
) -> None:
    await start_worker(REGISTRY)
    row = await jobs.enqueue(flaky, {"succeed_on": 3})
    done = await wait_for_row(row.job_id, lambda r: r.status == "complete")
    assert done.result == {"attempt": 3}
    assert (done.attempts, done.max_attempts) == (3, 3)
    assert [(e["attempt"], e["error"]) for e in done.errors] == [
        (1, "ConnectionError: upstream refused attempt 1"),
        (2, "ConnectionError: upstream refused attempt 2"),
    ]
    assert await executions(queue) == {str(row.job_id): 3}  # one run per attempt, no more


async def test_a_job_waiting_for_its_retry_is_queued_with_the_last_error_kept(
    jobs: BackgroundJobService, queue: Queue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY)
    row = await jobs.enqueue(fails_then_waits_an_hour, {})
    waiting = await wait_for_row(row.job_id, lambda r: r.attempts == 1 and r.status == "queued")
    assert waiting.error == "ValueError: first attempt fails"
    assert waiting.traceback is not None
    assert waiting.completed_at is None


async def test_a_job_over_its_timeout_is_failed_as_a_timeout(
    jobs: BackgroundJobService, queue: Queue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY)
    row = await jobs.enqueue(too_slow, {})
    failed = await wait_for_row(row.job_id, lambda r: r.status == "failed")
    assert failed.error == "TimeoutError"


async def test_an_aborted_job_is_aborted_in_the_row(
    jobs: BackgroundJobService, queue: Queue, start_worker: StartWorker, wait_for_row: WaitForRow
) -> None:
    await start_worker(REGISTRY, timers={"abort": 0.1})
    row = await jobs.enqueue(long_running, {})
    await wait_for_row(row.job_id, lambda r: r.status == "running")
    job = await queue.job(str(row.job_id))
    assert job is not None
    await queue.abort(job, "stopped by an operator")
    aborted = await wait_for_row(row.job_id, lambda r: r.status == "aborted")
    assert aborted.error == "stopped by an operator"
