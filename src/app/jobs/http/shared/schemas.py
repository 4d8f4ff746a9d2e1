"""Request and response bodies of the jobs API, and the limits the OpenAPI schema states."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from app.db.models import BackgroundJob
from app.jobs.lifecycle import JobStatus
from app.jobs.outbox.after import MAX_PARENTS

TRIGGER_ACCEPTED_MESSAGE = "Test task accepted and queued for processing"

# PostgreSQL's text and jsonb cannot hold U+0000: such a string is refused before any write.
WITHOUT_NUL = r"^[^\x00]*$"
WITHOUT_NUL_EXPLAINED = "without NUL characters (\\u0000), which PostgreSQL cannot store"
IDEMPOTENCY_KEY_MAX = 255  # background_jobs.idempotency_key is a varchar(255)
TASK_NAME_MAX = 200  # background_jobs.task_name is a varchar(200): a longer name matches nothing
MESSAGE_MAX = 10_000
SLEEP_SECONDS_MAX = 300


class TriggerTestRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/tasks/trigger-test`."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=MESSAGE_MAX, pattern=WITHOUT_NUL)]
    user_id: UUID | None = None
    project_id: UUID | None = None
    sleep_seconds: Annotated[float, msgspec.Meta(ge=0, le=SLEEP_SECONDS_MAX)] = 0.1
    fail: bool = False
    # Jobs this one waits for: it is `waiting` until they all completed, `aborted` if one
    # fails or is aborted (docs/jobs-api.md "Jobs that wait for other jobs").
    after: Annotated[
        list[UUID],
        msgspec.Meta(
            max_length=MAX_PARENTS,
            description="job_ids of jobs (of the same project) this job waits for",
        ),
    ] = msgspec.field(default_factory=list)


# The README's seed request, shown in the docs and sent by schemathesis's examples phase.
TRIGGER_EXAMPLE = {"message": "Test message", "sleep_seconds": 0.1, "fail": False}


class JobAccepted(msgspec.Struct, omit_defaults=True):
    message: str
    job_id: UUID
    # Said only when not `queued`: `waiting` for a job with parents not all completed,
    # `aborted` if one of them had already failed or been aborted.
    status: JobStatus = JobStatus.QUEUED


class JobCancelRequested(msgspec.Struct):
    message: str
    job_id: UUID


class JobRead(msgspec.Struct):
    """A `background_jobs` row as the API shows it."""

    job_id: UUID
    task_name: str
    queue: str
    status: JobStatus
    arguments: dict[str, Any]
    result: Any
    error: str | None
    traceback: str | None
    errors: list[dict[str, Any]]
    attempts: int
    max_attempts: int
    user_id: UUID | None
    project_id: UUID | None
    worker_id: str | None
    # Who triggered it: an API key's display prefix, `bootstrap`, or open mode's actor
    # (docs/security.md); null for jobs the API did not enqueue.
    enqueued_by: str | None
    # Set for a job the outbox did not make: SAQ's key (`cron:<function>` for a cron run),
    # its schedule, and the time it was due.
    job_key: str | None
    cron: str | None
    scheduled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    # What the running task last reported (0..1, and a message); null if it never did.
    progress: float | None
    progress_message: str | None

    @classmethod
    def from_row(cls, row: BackgroundJob) -> JobRead:
        return cls(*[getattr(row, field) for field in cls.__struct_fields__])

    @classmethod
    def from_columns(cls, columns: Mapping[Any, Any]) -> JobRead:
        """From a row read as plain column values (the list's page)."""
        return cls(*[columns[field] for field in cls.__struct_fields__])
