"""BackgroundJobService on real PostgreSQL and Redis: enqueue and every lifecycle transition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from saq.job import Job, Status
from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.asgi import build_parts
from app.config import Settings
from app.db.models import BackgroundJob
from app.jobs.lifecycle import Transition
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import TaskRegistry, UnknownTaskError, tracked_task
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test
from tests.support import count_rows, free_port
from tests.support.transitions import mark_complete, mark_failed, mark_retrying, mark_running


@tracked_task(timeout=45, attempts=3, retry_delay=2, max_retry_delay=30)
async def send_report(ctx: dict[str, Any], **arguments: Any) -> None:
    return None


async def reload(session: AsyncSession, job_id: UUID) -> BackgroundJob:
    session.expire_all()
    row = await BackgroundJobService(session).get_by_job_id(job_id)
    assert row is not None
    return row


async def test_enqueue_commits_a_queued_row_then_puts_the_job_on_the_queue(
    jobs: BackgroundJobService, queue: Queue, session: AsyncSession
) -> None:
    user_id, project_id = uuid4(), uuid4()
    row = await jobs.enqueue(
        trigger_test, {"message": "hi"}, user_id=user_id, project_id=project_id
    )

    stored = await reload(session, row.job_id)
    assert (stored.status, stored.task_name, stored.queue) == ("queued", "trigger_test", queue.name)
    assert (stored.user_id, stored.project_id) == (user_id, project_id)
    assert stored.arguments == {"message": "hi"}
    assert (stored.attempts, stored.max_attempts) == (0, 1)

    job = await queue.job(str(row.job_id))
    assert job is not None
    assert job.status == Status.QUEUED
    assert (job.function, job.kwargs) == ("trigger_test", {"message": "hi"})


async def test_the_policy_beside_the_task_reaches_the_queued_job(
    session: AsyncSession, queue: Queue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    service = BackgroundJobService(session, enqueuer=make_enqueuer(TaskRegistry([send_report])))
    row = await service.enqueue(send_report, {"to": "ops"})
    job = await queue.job(str(row.job_id))
    assert job is not None
    assert (job.timeout, job.retries, job.retry_delay, job.retry_backoff) == (45, 3, 2, 30)
    assert row.max_attempts == 3


async def test_arguments_named_like_saq_job_fields_stay_task_arguments(
    session: AsyncSession, queue: Queue, make_enqueuer: Callable[..., Enqueuer]
) -> None:
    service = BackgroundJobService(session, enqueuer=make_enqueuer(TaskRegistry([send_report])))
    arguments = {"key": "k-1", "timeout": 1, "retries": 9, "meta": {"a": 1}}
    row = await service.enqueue(send_report, arguments)
    job = await queue.job(str(row.job_id))
    assert job is not None
    assert job.kwargs == arguments
    assert (job.key, job.timeout, job.retries) == (str(row.job_id), 45, 3)


async def test_an_unregistered_task_is_refused_before_anything_is_written(
    jobs: BackgroundJobService, session: AsyncSession
) -> None:
    with pytest.raises(UnknownTaskError):
        await jobs.enqueue("not_a_task", {})
    assert await count_rows(session) == 0


async def test_when_redis_is_unreachable_the_row_is_kept_as_the_outbox(
    session: AsyncSession, settings: Settings
) -> None:
    dead = build_parts(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"), REGISTRY)
    service = BackgroundJobService(session, enqueuer=dead.enqueuer)
    row = await service.enqueue(trigger_test, {"message": "kept"})
    await dead.close()
    stored = await reload(session, row.job_id)
    assert (stored.status, stored.arguments) == ("queued", {"message": "kept"})
    assert await count_rows(session) == 1


async def test_a_job_runs_then_completes(jobs: BackgroundJobService, session: AsyncSession) -> None:
    row = await jobs.enqueue(trigger_test, {"message": "m"})
    started = datetime.now(UTC)
    assert await mark_running(jobs, row.job_id, attempt=1, worker_id="w1", started_at=started)
    running = await reload(session, row.job_id)
    assert (running.status, running.attempts, running.worker_id) == ("running", 1, "w1")
    assert running.started_at == started

    done = datetime.now(UTC)
    assert await mark_complete(jobs, row.job_id, attempt=1, result={"ok": True}, completed_at=done)
    complete = await reload(session, row.job_id)
    assert (complete.status, complete.result) == ("complete", {"ok": True})
    assert complete.completed_at == done


async def test_a_retry_goes_back_to_queued_keeping_the_error_and_the_attempt_count(
    jobs: BackgroundJobService, session: AsyncSession
) -> None:
    row = await jobs.enqueue(trigger_test, {"message": "m"})
    now = datetime.now(UTC)
    await mark_running(jobs, row.job_id, attempt=1, worker_id="w1", started_at=now)
    assert await mark_retrying(jobs, row.job_id, attempt=1, error="E: one", traceback="tb one")
    retried = await reload(session, row.job_id)
    assert (retried.status, retried.attempts, retried.error) == ("queued", 1, "E: one")

    await mark_running(jobs, row.job_id, attempt=2, worker_id="w2", started_at=now)
    assert await mark_failed(
        jobs, row.job_id, attempt=2, error="E: two", traceback="tb two", completed_at=now
    )
    failed = await reload(session, row.job_id)
    assert (failed.status, failed.attempts, failed.error, failed.traceback) == (
        "failed",
        2,
        "E: two",
        "tb two",
    )
    assert [(e["attempt"], e["error"]) for e in failed.errors] == [(1, "E: one"), (2, "E: two")]


async def test_a_late_event_from_an_older_attempt_is_ignored(
    jobs: BackgroundJobService, session: AsyncSession
) -> None:
    row = await jobs.enqueue(trigger_test, {"message": "m"})
    now = datetime.now(UTC)
    await mark_running(jobs, row.job_id, attempt=2, worker_id="w2", started_at=now)
    # Attempt 1's after_process reporting its retry arrives after attempt 2 started.
    assert not await mark_retrying(jobs, row.job_id, attempt=1, error="old", traceback=None)
    row_now = await reload(session, row.job_id)
    assert (row_now.status, row_now.attempts, row_now.error) == ("running", 2, None)


async def test_a_finished_row_never_moves_again(
    jobs: BackgroundJobService, session: AsyncSession
) -> None:
    row = await jobs.enqueue(trigger_test, {"message": "m"})
    now = datetime.now(UTC)
    await mark_running(jobs, row.job_id, attempt=1, worker_id="w1", started_at=now)
    await mark_complete(jobs, row.job_id, attempt=1, result=1, completed_at=now)
    assert not await mark_running(jobs, row.job_id, attempt=2, worker_id="w2", started_at=now)
    assert not await mark_failed(
        jobs, row.job_id, attempt=2, error="x", traceback=None, completed_at=now
    )
    assert (await reload(session, row.job_id)).status == "complete"


@pytest.mark.parametrize(
    ("saq_status", "expected"),
    [(Status.COMPLETE, "complete"), (Status.FAILED, "failed"), (Status.ABORTED, "aborted"),
     (Status.QUEUED, "queued")],
)  # fmt: skip
async def test_the_transition_of_what_saq_reports_lands_in_the_row(
    jobs: BackgroundJobService, session: AsyncSession, saq_status: Status, expected: str
) -> None:
    row = await jobs.enqueue(trigger_test, {"message": "m"})
    await mark_running(jobs, row.job_id, attempt=1, worker_id="w", started_at=datetime.now(UTC))
    job = Job(function="trigger_test", key=str(row.job_id), attempts=1, status=saq_status)
    job.result = {"r": 1} if saq_status == Status.COMPLETE else None
    job.error = None if saq_status == Status.COMPLETE else "Traceback\nValueError: nope"
    exception = None if saq_status in (Status.COMPLETE, Status.ABORTED) else ValueError("nope")
    assert await jobs.apply([Transition.of(job, exception)])
    stored = await reload(session, row.job_id)
    assert stored.status == expected
    if expected == "complete":
        assert stored.result == {"r": 1}
    else:
        assert stored.error == "ValueError: nope"
        assert stored.traceback == "Traceback\nValueError: nope"
