"""The state machine without I/O: the table and what derives from it, `Transition.of`, the
in-batch fold, and the guarded UPDATE's parameters as the held connection receives them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from saq.job import Job, Status
from sqlalchemy import CheckConstraint, Index

from app.db.models import BackgroundJob
from app.jobs.lifecycle import (
    ALLOWED_MOVES,
    ALLOWED_SOURCES,
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    JobStatus,
    Transition,
    can_move,
    fold,
    from_saq,
    status_in,
)
from app.jobs.record.statements import apply_transitions
from tests.unit.in_memory import InMemoryConnection

WAITING, QUEUED, RUNNING, COMPLETE, FAILED, ABORTED = JobStatus
MIGRATIONS = Path(__file__).resolve().parents[2] / "db" / "migrations" / "versions"
STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ENDED = datetime(2024, 5, 1, 12, 1, tzinfo=UTC)


# -- the table and what derives from it ----------------------------------------------------


def test_every_saq_status_has_a_table_word() -> None:
    assert {status.value: from_saq(status).value for status in Status} == {
        "new": "queued",
        "queued": "queued",
        "active": "running",
        "aborting": "running",
        "complete": "complete",
        "failed": "failed",
        "aborted": "aborted",
    }


def test_the_named_sets_come_from_the_table() -> None:
    assert set(ALLOWED_MOVES) == set(JobStatus)
    assert set(TERMINAL_STATUSES) == {COMPLETE, FAILED, ABORTED}
    assert set(UNFINISHED_STATUSES) == {WAITING, QUEUED, RUNNING}


def test_a_waiting_row_is_only_released_or_aborted_and_nothing_moves_a_row_to_waiting() -> None:
    assert ALLOWED_MOVES[WAITING] == {QUEUED, ABORTED}
    assert ALLOWED_SOURCES[WAITING] == set()  # only an operator's retry of a parent does
    assert WAITING not in ALLOWED_SOURCES[RUNNING]  # a waiting row never runs


def test_terminal_rows_never_move() -> None:
    for terminal in TERMINAL_STATUSES:
        for target in JobStatus:
            assert not can_move(terminal, target), (terminal, target)
            assert terminal not in ALLOWED_SOURCES[target]


def test_a_running_job_can_reach_every_outcome_and_go_back_to_queued_for_a_retry() -> None:
    for target in (COMPLETE, FAILED, ABORTED, QUEUED):
        assert can_move(RUNNING, target)
        assert RUNNING in ALLOWED_SOURCES[target]


def test_the_check_constraint_and_the_partial_index_are_the_migrations_spelling() -> None:
    migrations = "".join(path.read_text() for path in MIGRATIONS.glob("0*.py"))
    every_status = "status IN ('waiting', 'queued', 'running', 'complete', 'failed', 'aborted')"
    unfinished = "status IN ('waiting', 'queued', 'running')"
    assert status_in(JobStatus) == every_status
    assert status_in(UNFINISHED_STATUSES) == unfinished
    assert every_status in migrations
    assert unfinished in migrations

    table = BackgroundJob.__table__
    checks = {c.name: str(c.sqltext) for c in table.constraints if isinstance(c, CheckConstraint)}
    assert checks["ck_background_jobs_status"] == every_status
    index = next(
        i for i in table.indexes if i.name == "ix_background_jobs_unfinished_updated_at_job_id"
    )
    assert isinstance(index, Index)
    assert str(index.dialect_options["postgresql"]["where"]) == unfinished


# -- Transition.of: what SAQ's job says ----------------------------------------------------


def saq_job(status: Status, **fields: object) -> Job:
    job = Job(function="trigger_test", key=str(fields.pop("key", uuid4())), status=status)
    for name, value in {"attempts": 1, "worker_id": "w1", "started": 1_714_564_800_000}.items():
        setattr(job, name, value)
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def test_a_running_job_reports_its_worker_and_start_but_not_its_last_error() -> None:
    job = saq_job(Status.ACTIVE, attempts=2, error="Traceback\nValueError: attempt 1")
    transition = Transition.of(job)
    assert (transition.job_id, transition.task) == (UUID(job.key), "trigger_test")
    assert (transition.status, transition.attempt, transition.worker_id) == (RUNNING, 2, "w1")
    assert transition.started_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert (transition.completed_at, transition.error, transition.traceback) == (None,) * 3


def test_a_completed_job_reports_its_result_and_end() -> None:
    job = saq_job(Status.COMPLETE, result={"ok": True}, completed=1_714_564_860_000)
    transition = Transition.of(job)
    assert (transition.status, transition.result) == (COMPLETE, {"ok": True})
    assert transition.completed_at == ENDED
    assert transition.error is None


def test_a_failed_job_reports_the_exception_and_keeps_saqs_traceback() -> None:
    job = saq_job(Status.FAILED, error="Traceback ...\nValueError: nope", completed=1)
    transition = Transition.of(job, ValueError("nope"))
    assert (transition.status, transition.error) == (FAILED, "ValueError: nope")
    assert transition.traceback == "Traceback ...\nValueError: nope"
    assert transition.at is not None
    assert transition.result is None


def test_a_job_waiting_for_its_retry_reports_the_error_without_an_end() -> None:
    job = saq_job(Status.QUEUED, error="Traceback ...\napp.worker.tasks.Boom: it broke")
    transition = Transition.of(job)
    assert (transition.status, transition.error) == (QUEUED, "Boom: it broke")
    assert transition.completed_at is None


def test_a_swept_job_says_why_in_words() -> None:
    transition = Transition.of(saq_job(Status.ABORTED, error="swept", completed=1))
    assert transition.status is ABORTED
    assert transition.error is not None
    assert transition.error.startswith("swept: the job's worker stopped responding")


def test_any_spelling_of_a_uuid_key_names_the_same_row() -> None:
    job_id = uuid4()
    for key in (str(job_id), job_id.hex, str(job_id).upper()):
        assert Transition.of(saq_job(Status.ACTIVE, key=key)).job_id == job_id


# -- the fold: several transitions of one job in one batch ---------------------------------


def running(job_id: UUID, attempt: int = 1, worker: str = "w1") -> Transition:
    return Transition(job_id, "t", RUNNING, attempt, worker_id=worker, started_at=STARTED)


def test_start_and_end_in_one_batch_keep_the_start_and_end_as_the_end() -> None:
    job_id = uuid4()
    done = Transition(job_id, "t", COMPLETE, 1, result=1, completed_at=ENDED)
    (folded,) = fold([running(job_id), done]).values()
    assert folded.last is done
    assert (folded.worker_id, folded.started_at) == ("w1", STARTED)
    assert folded.ignored == []


def test_nothing_moves_a_job_after_its_final_status_within_a_batch() -> None:
    job_id = uuid4()
    done = Transition(job_id, "t", COMPLETE, 1, completed_at=ENDED)
    late = running(job_id, attempt=2)  # a second delivery of a finished job (SAQ #277)
    (folded,) = fold([done, late]).values()
    assert folded.last is done
    assert folded.ignored == [late]


def test_an_event_of_an_older_attempt_is_ignored() -> None:
    job_id = uuid4()
    old = Transition(job_id, "t", QUEUED, 1, error="E: one")
    (folded,) = fold([running(job_id, attempt=2), old]).values()
    assert folded.ignored == [old]
    assert folded.error is None


def test_every_failed_attempt_of_a_batch_adds_to_the_error_history() -> None:
    job_id = uuid4()
    batch = [
        running(job_id, 1),
        Transition(job_id, "t", QUEUED, 1, error="E: one", traceback="tb1", at=STARTED),
        running(job_id, 2, worker="w2"),
        Transition(job_id, "t", FAILED, 2, error="E: two", traceback="tb2", completed_at=ENDED),
    ]
    (folded,) = fold(batch).values()
    assert (folded.last.status, folded.error, folded.traceback) == (FAILED, "E: two", "tb2")
    assert folded.worker_id == "w2"
    assert [(e["attempt"], e["status"], e["error"]) for e in folded.new_errors] == [
        (1, "queued", "E: one"),
        (2, "failed", "E: two"),
    ]
    assert folded.new_errors[0]["at"] == STARTED.isoformat()


def test_jobs_of_one_batch_are_folded_apart() -> None:
    a, b = uuid4(), uuid4()
    folded = fold([running(a), running(b), Transition(a, "t", ABORTED, 1, error="stop")])
    assert (folded[a].last.status, folded[b].last.status) == (ABORTED, RUNNING)


# -- the guarded UPDATE, as the held connection receives it --------------------------------


async def test_a_batch_is_one_statement_with_one_entry_per_job() -> None:
    connection = InMemoryConnection()
    a, b = uuid4(), uuid4()
    batch = [
        running(a),
        Transition(a, "t", COMPLETE, 1, result={"n": 1}, completed_at=ENDED),
        Transition(b, "t", FAILED, 1, error="E: x", traceback="tb", completed_at=ENDED),
    ]
    applied = await apply_transitions(connection.execute, batch)

    (update,) = connection.executed
    assert "UPDATE background_jobs" in update.statement
    parameters = update.parameters
    assert parameters["job_ids"] == [a, b]
    assert parameters["statuses"] == ["complete", "failed"]
    assert parameters["sources"] == ["queued,running", "queued,running"]
    assert parameters["attempts"] == [1, 1]
    assert parameters["worker_ids"] == ["w1", None]
    assert parameters["started"] == [STARTED, None]
    assert [json.loads(r) if r else r for r in parameters["results"]] == [{"n": 1}, None]
    assert (parameters["errors"], parameters["tracebacks"]) == ([None, "E: x"], [None, "tb"])
    assert parameters["new_errors"][0] is None
    assert json.loads(parameters["new_errors"][1])[0]["error"] == "E: x"
    assert applied == batch


async def test_what_the_guard_refused_or_the_fold_ignored_is_not_reported_applied() -> None:
    moved, refused = uuid4(), uuid4()
    # PostgreSQL moved only one row: the row of `refused` is final.
    connection = InMemoryConnection(answer=lambda _, __: [(moved,)])
    done = Transition(moved, "t", COMPLETE, 1, completed_at=ENDED)
    late = running(moved, attempt=2)
    applied = await apply_transitions(connection.execute, [done, late, running(refused)])
    assert applied == [done]


async def test_an_empty_batch_writes_nothing() -> None:
    connection = InMemoryConnection()
    assert await apply_transitions(connection.execute, []) == []
    assert connection.executed == []


@pytest.mark.parametrize("target", list(JobStatus))
async def test_the_guard_is_given_the_tables_sources_for_each_target(target: JobStatus) -> None:
    connection = InMemoryConnection()
    await apply_transitions(connection.execute, [Transition(uuid4(), "t", target, 1)])
    expected = ",".join(sorted(source.value for source in ALLOWED_SOURCES[target]))
    assert connection.executed[0].parameters["sources"] == [expected]
