"""Manual retries, progress and redaction without I/O: what the statements carry, how a batch
folds, what the reconciler decides about a retried row, what a viewer sees."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from saq.job import Job, Status

from app.auth.roles import Principal, Role
from app.db.models import BackgroundJob
from app.jobs.http.shared.redaction import MASK, Redactor
from app.jobs.http.shared.schemas import JobRead
from app.jobs.lifecycle import MANUAL_RETRIES, JobStatus, Transition, fold
from app.jobs.reconciler import Action, Fleet, decide
from app.jobs.record.progress import PROGRESS_MESSAGE, ProgressUpdate, apply_progress, clamped
from app.jobs.record.recorder import LifecycleRecorder
from app.jobs.record.statements import apply_transitions
from tests.unit.in_memory import FakeTime, InMemoryConnection


def test_a_job_carries_the_run_of_its_row_into_its_transitions() -> None:
    job = Job(function="t", key=str(uuid4()), status=Status.FAILED, attempts=2)
    assert Transition.of(job).manual_retries == 0
    job.meta = {MANUAL_RETRIES: 3}
    assert Transition.of(job).manual_retries == 3


def test_within_a_batch_an_earlier_runs_event_after_a_later_ones_is_ignored() -> None:
    job_id = uuid4()
    new_run = Transition(job_id, "t", JobStatus.RUNNING, 2, manual_retries=1)
    old_run = Transition(job_id, "t", JobStatus.FAILED, 2, error="late", manual_retries=0)
    folded = fold([new_run, old_run])[job_id]
    assert folded.last is new_run
    assert folded.ignored == [old_run]


async def test_the_guarded_update_refuses_an_earlier_run() -> None:
    connection = InMemoryConnection()
    job_id = uuid4()
    await apply_transitions(
        connection.execute, [Transition(job_id, "t", JobStatus.RUNNING, 2, manual_retries=1)]
    )
    [executed] = connection.executed
    assert executed.parameters["manual_retries"] == [1]
    assert "b.manual_retries <= v.manual_retries" in executed.statement


def test_the_reconciler_enqueues_a_retry_whose_job_never_reached_redis() -> None:
    row = BackgroundJob(
        job_id=uuid4(), task_name="t", queue="q", status="queued", attempts=1, manual_retries=1
    )
    earlier = Job(function="t", key=str(row.job_id), status=Status.FAILED, attempts=1)
    live: Fleet = {}
    assert (
        decide(row, earlier, live, now_ms=0, worker_lost_after_ms=1, timeout_ms=1)
        is Action.ENQUEUE_AGAIN
    )
    earlier.meta = {MANUAL_RETRIES: 1}  # the retry's own job: it ended, the row is behind
    assert (
        decide(row, earlier, live, now_ms=0, worker_lost_after_ms=1, timeout_ms=1) is Action.REPAIR
    )


def test_progress_is_read_from_the_job_within_its_bounds() -> None:
    job = Job(function="t", key=str(uuid4()), attempts=2, progress=1.7)
    job.meta = {PROGRESS_MESSAGE: "x" * 300, MANUAL_RETRIES: 1}
    update = ProgressUpdate.of(job)
    assert update is not None
    assert (update.progress, len(update.message or ""), update.attempt) == (1.0, 200, 2)
    assert update.manual_retries == 1
    assert [clamped(v) for v in (-1, float("nan"), "0.25", None)] == [0.0, 0.0, 0.25, 0.0]


async def test_several_progress_updates_of_a_job_in_a_batch_write_the_last() -> None:
    connection, time = InMemoryConnection(), FakeTime()
    recorder = LifecycleRecorder(connection, clock=time.clock, sleep=time.sleep)
    first, other = uuid4(), uuid4()
    for fraction in (0.1, 0.2, 0.3):
        recorder.record_progress(ProgressUpdate(first, 1, 0, fraction, f"at {fraction}"))
    recorder.record_progress(ProgressUpdate(other, 1, 0, 0.5))
    await recorder.flushed()
    [executed] = connection.statements_like("progress_message = v.message")
    assert executed.parameters["job_ids"] == [first, other]
    assert executed.parameters["progress"] == [0.3, 0.5]
    assert executed.parameters["messages"] == ["at 0.3", None]
    assert "b.status = 'running'" in executed.statement
    await recorder.close()


async def test_progress_of_a_row_that_is_not_running_is_not_applied() -> None:
    update = ProgressUpdate(uuid4(), 1, 0, 0.5)
    nothing_moved = InMemoryConnection(answer=lambda statement, parameters: [])
    assert await apply_progress(nothing_moved.execute, [update]) == []


def job_read(arguments: dict[str, Any], result: Any) -> JobRead:
    now = datetime.now(UTC)
    return JobRead(
        job_id=uuid4(), task_name="t", queue="q", status=JobStatus.COMPLETE, arguments=arguments,
        result=result, error=None, traceback=None, errors=[], attempts=1, max_attempts=1,
        user_id=None, project_id=None, worker_id=None, enqueued_by=None, job_key=None,
        cron=None, scheduled_at=None, created_at=now, updated_at=now,
        started_at=now, completed_at=now, progress=None, progress_message=None,
    )  # fmt: skip


@pytest.mark.parametrize(("role", "masked"), [(Role.VIEWER, True), (Role.OPERATOR, False)])
def test_sensitive_values_are_masked_for_viewers_only(role: Role, masked: bool) -> None:
    redactor = Redactor(["password", "token", "secret", "api_key"])
    arguments = {
        "user": "ann",
        "Password": "hunter2",
        "nested": {"API_KEY": "k", "list": [{"token": "t", "kept": 1}]},
    }
    original = copy.deepcopy(arguments)
    job = job_read(arguments, {"secret": {"deep": 1}, "count": 2})
    seen = redactor.job(job, Principal(actor="k", role=role))
    if not masked:
        assert seen is job
        return
    assert seen.arguments == {
        "user": "ann",
        "Password": MASK,
        "nested": {"API_KEY": MASK, "list": [{"token": MASK, "kept": 1}]},
    }
    assert seen.result == {"secret": MASK, "count": 2}
    assert job.arguments == original  # the original is untouched


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("password", True),
        ("db_password", True),
        ("smtpPassword", True),
        ("access_token", True),
        ("refreshToken", True),
        ("client_secret", True),
        ("apiKey", True),
        ("x-api-key", True),
        ("API_KEY", True),
        ("apikey", True),
        ("user", False),
        ("api", False),
        ("key", False),
        ("pass", False),
    ],
)
def test_a_key_is_masked_when_its_name_holds_a_sensitive_one(name: str, masked: bool) -> None:
    """Names are compared by their letters and digits only, lower-cased, as substrings."""
    redactor = Redactor(["password", "token", "secret", "api_key"])
    assert (redactor.value({name: "v"})[name] == MASK) is masked
    assert redactor.sensitive(name) is masked  # remembered, the same the second time
