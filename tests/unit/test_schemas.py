from datetime import UTC, datetime
from uuid import uuid4

from app.db.models import BackgroundJob
from app.jobs.http.shared.schemas import JobRead


def test_a_row_reads_as_every_column_including_ones_never_set() -> None:
    now = datetime.now(UTC)
    job_id, user_id = uuid4(), uuid4()
    row = BackgroundJob(
        job_id=job_id,
        task_name="trigger_test",
        queue="q",
        status="complete",
        arguments={"message": "hi"},
        result={"ok": True},
        errors=[],
        attempts=1,
        max_attempts=1,
        user_id=user_id,
        created_at=now,
        updated_at=now,
    )  # project_id, worker_id, error, ... are not set: read through the ORM as None

    read = JobRead.from_row(row)

    assert (read.job_id, read.status, read.result, read.user_id) == (
        job_id,
        "complete",
        {"ok": True},
        user_id,
    )
    assert (read.project_id, read.worker_id, read.error, read.started_at) == (None,) * 4
    assert (read.created_at, read.updated_at) == (now, now)


def test_a_cron_run_reads_with_its_key_schedule_and_due_time() -> None:
    now = datetime.now(UTC)
    row = BackgroundJob(
        job_id=uuid4(),
        job_key="cron:nightly_report",
        cron="0 3 * * *",
        scheduled_at=now,
        enqueued_by=None,
        task_name="nightly_report",
        queue="q",
        status="queued",
        created_at=now,
        updated_at=now,
    )

    read = JobRead.from_row(row)

    assert (read.job_key, read.cron, read.scheduled_at) == ("cron:nightly_report", "0 3 * * *", now)
    assert read.enqueued_by is None  # the worker's schedule made it, not a caller
