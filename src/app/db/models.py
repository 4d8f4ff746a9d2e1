"""The `background_jobs` table: one row per tracked job, the truth about what happened to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.jobs.states import JobStatus

_STATUS_WORDS = ", ".join(f"'{status.value}'" for status in JobStatus)


class BackgroundJob(UUIDv7AuditBase):
    """A job's lifecycle row; `job_id` is the SAQ job key and the id the API returns."""

    __tablename__ = "background_jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_WORDS})", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("ix_background_jobs_status_created_at", "status", "created_at"),
        Index("ix_background_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_background_jobs_project_id_created_at", "project_id", "created_at"),
        Index("ix_background_jobs_created_at", "created_at"),
        # "this user's failed jobs, newest first": the page and its count from the index alone.
        Index("ix_background_jobs_user_id_status_created_at", "user_id", "status", "created_at"),
        Index(
            "ix_background_jobs_project_id_status_created_at", "project_id", "status", "created_at"
        ),
        Index(
            "ix_background_jobs_unfinished_updated_at",
            "updated_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    job_id: Mapped[UUID] = mapped_column(unique=True, index=False)
    task_name: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    arguments: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    result: Mapped[Any | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Oban-style history: the error of every failed attempt, not only the last.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    user_id: Mapped[UUID | None] = mapped_column(nullable=True)
    project_id: Mapped[UUID | None] = mapped_column(nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Set when the trigger carried an Idempotency-Key: repeats return this row.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
