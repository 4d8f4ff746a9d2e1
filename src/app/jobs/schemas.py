"""Request and response bodies of the jobs API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from app.db.models import BackgroundJob

TRIGGER_ACCEPTED_MESSAGE = "Test task accepted and queued for processing"


class TriggerTestRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/tasks/trigger-test`."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
    user_id: UUID | None = None
    project_id: UUID | None = None
    sleep_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 0.1
    fail: bool = False


class JobAccepted(msgspec.Struct):
    message: str
    job_id: str


class JobCancelRequested(msgspec.Struct):
    message: str
    job_id: str


class JobRead(msgspec.Struct):
    """A `background_jobs` row as the API shows it."""

    job_id: UUID
    task_name: str
    queue: str
    status: str
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
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: BackgroundJob) -> JobRead:
        return cls(*[getattr(row, field) for field in cls.__struct_fields__])

    @classmethod
    def from_columns(cls, columns: Mapping[Any, Any]) -> JobRead:
        """From a row read as plain column values (the list's page)."""
        return cls(*[columns[field] for field in cls.__struct_fields__])


class JobPage(msgspec.Struct):
    items: list[JobRead]
    total: int
    limit: int
    offset: int
