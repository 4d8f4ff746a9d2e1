"""Jobs the outbox did not make (cron runs, `scheduled=`, caller-chosen keys, plain
`queue.enqueue`), without I/O: which row a job names, the row it brings when first seen, the
one statement a batch with such rows is, the cron schedule's settings, and the reconciler's
and the outbox's handling of their rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis
from saq.job import CronJob, Job, Status
from saq.worker import Worker

from app.db.models import BackgroundJob
from app.jobs.jsonb import to_json
from app.jobs.lifecycle import (
    CRON,
    FROM_OUTBOX,
    ROW_ID,
    JobStatus,
    Transition,
    UntrackedJobError,
    row_id_of,
)
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reconciler import Action, Fleet, decide
from app.jobs.record.recorder import LifecycleRecorder
from app.jobs.record.statements import apply_transitions
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import tracked_cron
from tests.unit.in_memory import FakeQueue, InMemoryConnection

QUEUED_AT_MS = 1_714_564_800_000  # 2024-05-01 12:00 UTC
STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@tracked_task(timeout=45, attempts=3, retry_delay=2.0, max_retry_delay=30.0)
async def nightly_report(ctx: dict[str, Any]) -> None:
    """A cron task of these tests."""


class NamedQueue:
    name = "default"


def cron_run(status: Status = Status.QUEUED, **fields: Any) -> Job:
    """A run as SAQ's cron schedule enqueues it, stamped by the tracked queue."""
    job = Job(
        function="nightly_report",
        key="cron:nightly_report",
        kwargs={"day": "2024-05-01"},
        retries=3,
        scheduled=1_714_608_000,  # 2024-05-02 00:00 UTC
        status=status,
        meta={ROW_ID: str(uuid4()), CRON: "0 0 * * *"},
    )
    job.queue = NamedQueue()  # type: ignore[assignment]
    job.queued = QUEUED_AT_MS
    for name, value in fields.items():
        setattr(job, name, value)
    return job


# -- which row a job names -----------------------------------------------------------------


def test_a_stamped_job_names_its_row_by_its_meta_whatever_its_key() -> None:
    row_id = uuid4()
    for key in ("cron:nightly_report", "report:2026-11", str(uuid4())):
        job = Job(function="f", key=key, meta={ROW_ID: str(row_id)})
        assert row_id_of(job) == row_id
        assert Transition.of(job).job_id == row_id


def test_an_outbox_job_names_its_row_by_its_uuid_key_and_brings_no_row() -> None:
    job_id = uuid4()
    transition = Transition.of(Job(function="f", key=str(job_id), status=Status.ACTIVE))
    assert (transition.job_id, transition.new_row) == (job_id, None)


@pytest.mark.parametrize("key", ["cron:nightly_report", "report:2026-11", ""])
def test_a_job_with_neither_a_row_id_nor_a_uuid_key_names_no_row(key: str) -> None:
    job = Job(function="f", key=key, meta={ROW_ID: "not a uuid"} if not key else {})
    assert row_id_of(job) is None
    with pytest.raises(UntrackedJobError):
        Transition.of(job)


def test_a_first_seen_cron_run_brings_everything_its_row_is_created_with() -> None:
    job = cron_run()
    transition = Transition.of(job)
    assert (transition.status, transition.attempt) == (JobStatus.QUEUED, 0)
    new_row = transition.new_row
    assert new_row is not None
    assert (new_row.job_key, new_row.task_name, new_row.queue) == (
        "cron:nightly_report",
        "nightly_report",
        "default",
    )
    assert json.loads(new_row.arguments) == {"day": "2024-05-01"}
    assert (new_row.max_attempts, new_row.cron) == (3, "0 0 * * *")
    assert new_row.scheduled_at == datetime(2024, 5, 2, tzinfo=UTC)
    assert new_row.created_at == STARTED


def test_every_later_transition_of_a_stamped_job_brings_its_row_too() -> None:
    # Another process may run the job before the enqueuing one wrote the row.
    running = Transition.of(cron_run(Status.ACTIVE, attempts=1, started=QUEUED_AT_MS))
    assert running.status is JobStatus.RUNNING
    assert running.new_row is not None


def test_nul_characters_never_reach_postgresql() -> None:
    job = cron_run(Status.FAILED, kwargs={"note": "a\x00b"}, error="ValueError: a\x00b")
    transition = Transition.of(job, ValueError("a\x00b"))
    assert transition.new_row is not None
    assert json.loads(transition.new_row.arguments) == {"note": "a\ufffdb"}
    assert (transition.error, transition.traceback) == ("ValueError: a\ufffdb",) * 2
    # A backslash followed by "u0000" is text, not a NUL: it is kept.
    assert json.loads(to_json({"text": "\\u0000"})) == {"text": "\\u0000"}


# -- one statement per batch -----------------------------------------------------------------


async def test_a_batch_of_outbox_jobs_stays_one_plain_update() -> None:
    connection = InMemoryConnection()
    job = Job(function="f", key=str(uuid4()), status=Status.ACTIVE, attempts=1)
    await apply_transitions(connection.execute, [Transition.of(job)])
    (update,) = connection.executed
    assert "UPDATE background_jobs" in update.statement
    assert "INSERT INTO background_jobs" not in update.statement  # only job_stats's counts
    assert "job_keys" not in update.parameters


async def test_a_first_seen_job_that_runs_and_ends_in_one_batch_is_inserted_complete() -> None:
    connection = InMemoryConnection()
    outbox_job = uuid4()
    first_seen = Transition.of(cron_run())
    done = Transition.of(
        cron_run(
            Status.COMPLETE,
            meta=cron_run().meta | {ROW_ID: str(first_seen.job_id)},
            attempts=1,
            started=QUEUED_AT_MS,
            completed=QUEUED_AT_MS + 1000,
            result={"rows": 3},
        )
    )
    batch = [
        first_seen,
        Transition(outbox_job, "f", JobStatus.RUNNING, 1, worker_id="w1"),
        done,
    ]
    applied = await apply_transitions(connection.execute, batch)

    (statement,) = connection.executed  # one round trip
    assert "INSERT INTO background_jobs" in statement.statement
    assert "UPDATE background_jobs" in statement.statement
    parameters = statement.parameters
    assert parameters["job_ids"] == [first_seen.job_id, outbox_job]
    assert parameters["statuses"] == ["complete", "running"]  # the insert's state: the fold's
    assert parameters["attempts"] == [1, 1]
    assert json.loads(parameters["results"][0]) == {"rows": 3}
    assert parameters["job_keys"] == ["cron:nightly_report", None]  # None: it has its row
    assert parameters["task_names"] == ["nightly_report", None]
    assert parameters["crons"] == ["0 0 * * *", None]
    assert parameters["ids"][1] is None
    assert isinstance(parameters["ids"][0], UUID)
    assert applied == batch


# -- the tracked queue's reporting never raises ----------------------------------------------


async def test_reporting_a_job_that_has_no_row_records_nothing_and_raises_nothing() -> None:
    connection = InMemoryConnection()
    queue = TrackedQueue(Redis(), name="unit", recorder=LifecycleRecorder(connection))
    queue._report(Job(function="f", key="cron:f", status=Status.ACTIVE))
    queue._report(Job(function="f", key="k", meta={ROW_ID: 42}))
    assert queue.recorder.pending == 0


# -- cron tasks: their policy and schedule reach every run -----------------------------------


class RecordingQueue:
    """What SAQ's worker hands its queue when it schedules cron runs (no Redis)."""

    def __init__(self) -> None:
        self.enqueued: list[Job] = []

    async def enqueue(self, function: str, **fields: Any) -> Job:
        self.enqueued.append(Job(function=function, **fields))  # as `Queue.enqueue` builds it
        return self.enqueued[-1]

    async def schedule(self, lock: int) -> list[str]:
        return []


async def test_saqs_worker_enqueues_a_tracked_cron_run_with_the_tasks_policy_and_schedule() -> None:
    declared = CronJob(nightly_report, cron="0 3 * * *", kwargs={"day": "today"})
    queue = RecordingQueue()
    worker = Worker(queue, functions=[], cron_jobs=[tracked_cron(declared, 60)])  # type: ignore[arg-type]
    await worker.schedule()

    (run,) = queue.enqueued
    assert (run.function, run.key, run.kwargs) == (
        "nightly_report",
        "cron:nightly_report",
        {"day": "today"},
    )
    assert (run.timeout, run.retries, run.retry_delay, run.retry_backoff) == (45, 3, 2.0, 30.0)
    assert run.meta == {CRON: "0 3 * * *"}
    assert run.scheduled > 0


def test_a_cron_task_without_a_policy_gets_the_default_timeout_and_one_attempt() -> None:
    async def plain(ctx: dict[str, Any]) -> None: ...

    tracked = tracked_cron(CronJob(plain, cron="* * * * * *", unique=False), 60)
    assert (tracked.timeout, tracked.retries, tracked.unique) == (60, 1, False)


def test_a_cron_job_that_sets_its_own_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="@tracked_task"):
        tracked_cron(CronJob(nightly_report, cron="0 3 * * *", timeout=5), 60)


# -- the reconciler and the outbox with such rows --------------------------------------------

LIVE: Fleet = {"live-worker": None}


def foreign_row(status: str = "queued", *, cron: str | None = None) -> BackgroundJob:
    return BackgroundJob(
        job_id=uuid4(), job_key="report:2026-11", cron=cron, task_name="nightly_report",
        queue="unit", status=status, attempts=0, max_attempts=3, arguments={"month": 11},
        worker_id=None, scheduled_at=datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip


def decision(row: BackgroundJob, job: Job | None) -> Action:
    return decide(
        row, job, LIVE, now_ms=QUEUED_AT_MS, worker_lost_after_ms=30_000, timeout_ms=60_000
    )


def test_a_rows_own_run_found_by_its_key_is_left() -> None:
    row = foreign_row()
    job = Job(function="nightly_report", key="report:2026-11", meta={ROW_ID: str(row.job_id)})
    job.status = Status.QUEUED
    assert decision(row, job) is Action.LEAVE


def test_a_lost_job_with_its_own_key_is_enqueued_again() -> None:
    assert decision(foreign_row(), None) is Action.ENQUEUE_AGAIN


def test_a_lost_cron_run_is_given_up_the_schedule_makes_the_next() -> None:
    assert decision(foreign_row(cron="0 3 * * *"), None) is Action.GIVE_UP


def test_a_lost_job_whose_key_now_holds_another_run_is_given_up() -> None:
    later_run = Job(function="nightly_report", key="report:2026-11", meta={ROW_ID: str(uuid4())})
    assert decision(foreign_row(), later_run) is Action.GIVE_UP


async def test_a_lost_job_is_enqueued_again_with_its_key_row_id_and_time() -> None:
    queue = FakeQueue()
    registry = TaskRegistry([nightly_report])
    enqueuer = Enqueuer(queue, registry, 60, InMemoryConnection())  # type: ignore[arg-type]
    row = foreign_row()
    assert await enqueuer.enqueue_recorded([row]) == [True]
    (job,) = queue.jobs
    assert (job.key, job.meta, job.kwargs) == (
        "report:2026-11",
        {FROM_OUTBOX: True, ROW_ID: str(row.job_id)},
        {"month": 11},
    )
    assert job.scheduled == int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    assert (job.timeout, job.retries) == (45, 3)
