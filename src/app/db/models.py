"""The tables: `background_jobs` (one row per tracked job, the truth about what happened to
it, partitioned by `created_at`), `job_idempotency_keys` (the Idempotency-Keys in use),
`job_dependencies` (jobs that wait for others), `job_stats` (what the ended jobs add up to,
per minute and task), `api_keys` and `job_actions` (who may act, and what they did:
docs/security.md), and `schedule_pauses` and `queue_pauses` (the cron schedules and the
queues an operator paused)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase, UUIDv7AuditBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.roles import role_in
from app.jobs.histogram import RUN_COLUMNS, WAIT_COLUMNS
from app.jobs.lifecycle import TERMINAL_STATUSES, UNFINISHED_STATUSES, JobStatus, status_in

# The job list's equality filters, each served by its own index.
LISTED_BY = ("status", "task_name", "queue", "user_id", "project_id", "worker_id")


# A job id spells its row's creation time (app/jobs/ids.py); the function is migration
# 0010_partitioned_jobs's.
JOB_ID_SPELLS_CREATED_AT = "coalesce(job_id_created_at(job_id) = created_at, true)"


class BackgroundJob(UUIDv7AuditBase):
    """A job's lifecycle row; `job_id` is the id the API returns and, for the jobs the outbox
    makes, the SAQ job key.

    Partitioned by range of `created_at` (app/ops/partitions.py), so each unique key holds
    `created_at` too: `job_id` is unique because it spells `created_at` (the CHECK), and the
    Idempotency-Keys are unique in `job_idempotency_keys`.
    """

    __tablename__ = "background_jobs"
    __table_args__ = (
        UniqueConstraint("job_id", "created_at", name="uq_background_jobs_job_id_created_at"),
        CheckConstraint(status_in(JobStatus), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint(JOB_ID_SPELLS_CREATED_AT, name="job_id_created_at"),
        # The job list's order, `created_at DESC, id DESC`, after each filter's column: an
        # index scan returns a page in order, never sorted (app/jobs/reads/queries.py).
        *(
            Index(f"ix_background_jobs_{column}_created_at_id", column, "created_at", "id")
            for column in LISTED_BY
        ),
        Index("ix_background_jobs_created_at_id", "created_at", "id"),
        Index(
            "ix_background_jobs_with_error_created_at_id",
            "created_at",
            "id",
            postgresql_where=text("error IS NOT NULL"),  # has_error, error:, a small share
        ),
        Index(
            "ix_background_jobs_unfinished_updated_at_job_id",
            "updated_at",
            "job_id",
            postgresql_where=text(status_in(UNFINISHED_STATUSES)),  # the reconciler's rows
        ),
        Index(
            "ix_background_jobs_ended_updated_at",
            "updated_at",
            postgresql_where=text(status_in(TERMINAL_STATUSES)),  # ended rows, by last change
        ),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    # The partition key, hence part of the primary key (`id`, `created_at`).
    created_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True),
        primary_key=True,
        default=lambda: datetime.now(UTC),
        sort_order=3002,
    )
    job_id: Mapped[UUID] = mapped_column(index=False)
    # SAQ's key when it is not `job_id`: a job the outbox did not make (a cron run, a caller's
    # own key, a plain `queue.enqueue`), whose row was created when the queue first saw it.
    job_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    cron: Mapped[str | None] = mapped_column(Text, nullable=True)  # a cron run's schedule
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
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
    # Times an operator retried it (`POST /api/v1/jobs/{job_id}/retry`): each starts a new run,
    # whose events carry this number so that the earlier runs' late events change nothing.
    manual_retries: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # A running task's own report (jobs/record/progress.py): how far (0..1), and a short message.
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_message: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user_id: Mapped[UUID | None] = mapped_column(nullable=True)
    project_id: Mapped[UUID | None] = mapped_column(nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Set when the trigger carried an Idempotency-Key: repeats return this row (the key's
    # uniqueness is `job_idempotency_keys`').
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Who triggered it (an API key's display prefix): the row is the audit record of its creation.
    enqueued_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    # Jobs that wait for others (`after=`, app/jobs/record/dependencies.py): set on a parent
    # once a child names it, so that its end is followed by its children's release; and, on a
    # waiting child, how many of its parents have not completed yet.
    has_dependents: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    parents_left: Mapped[int] = mapped_column(default=0, server_default=text("0"))


class JobDependency(DefaultBase):
    """A child job waits for its parent. Job ids without foreign keys: background_jobs' key
    may change (partitioning), and retention deletes an old parent's row on its own."""

    __tablename__ = "job_dependencies"
    __table_args__ = (Index("ix_job_dependencies_child_id", "child_id"),)

    parent_id: Mapped[UUID] = mapped_column(primary_key=True)
    child_id: Mapped[UUID] = mapped_column(primary_key=True)
    # The parent's completion is counted in the child's `parents_left` (once, whoever saw it).
    counted: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class JobIdempotencyKey(DefaultBase):
    """An Idempotency-Key in use, and the job it made: the key's uniqueness, which a
    partitioned `background_jobs` cannot hold (a unique index there must include
    `created_at`). Retention deletes a key with its job's partition."""

    __tablename__ = "job_idempotency_keys"
    __table_args__ = (Index("ix_job_idempotency_keys_created_at", "created_at"),)

    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[UUID]
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


# The ended jobs counted per kind (`minute`/`hour` of their creation; `ended`: the minute
# they ended), project (the nil UUID: every project), time and task: per status, and per
# bucket of their run and wait times. Written by the statement that makes a row final
# (app/jobs/record/counting.py); read by `GET /api/v1/jobs/stats` and the overview.
JOB_STATS = Table(
    "job_stats",
    UUIDv7AuditBase.metadata,
    Column("kind", String(8), nullable=False),
    Column("project_id", PG_UUID(as_uuid=True), nullable=False),
    Column("at", DateTimeUTC(timezone=True), nullable=False),
    Column("task_name", String(200), nullable=False),
    *(
        Column(status, BigInteger, nullable=False, server_default=text("0"))
        for status in ("complete", "failed", "aborted")
    ),
    *(Column(bucket, Integer, nullable=True) for bucket in (*RUN_COLUMNS, *WAIT_COLUMNS)),
    PrimaryKeyConstraint("kind", "project_id", "at", "task_name", name="pk_job_stats"),
    postgresql_with={"fillfactor": 70},  # room for the counts' HOT updates
)
# Counts appended by the statement that makes rows final, until the workers move them into
# `job_stats` (app/jobs/record/counting.py). No key: appends never conflict.
JOB_STATS_PENDING = Table(
    "job_stats_pending",
    UUIDv7AuditBase.metadata,
    Column("kind", String(8), nullable=False),
    Column("project_id", PG_UUID(as_uuid=True), nullable=False),
    Column("at", DateTimeUTC(timezone=True), nullable=False),
    Column("task_name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("run", SmallInteger, nullable=True),
    Column("wait", SmallInteger, nullable=True),
    Column("n", Integer, nullable=False),
)


class ApiKey(UUIDv7AuditBase):
    """An API key: only its SHA-256 is kept; the plaintext is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(role_in(), name="role"),)

    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists and the audit log
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[UUID | None] = mapped_column(nullable=True)  # set: that project only
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


class JobAction(UUIDv7Base):
    """One state-changing call: who (key prefix and role), what, on which jobs, and how it ended."""

    __tablename__ = "job_actions"
    __table_args__ = (Index("ix_job_actions_at", "at"),)

    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    job_ids: Mapped[list[UUID]] = mapped_column(
        ARRAY(PG_UUID(as_uuid=True)), default=list, server_default=text("'{}'::uuid[]")
    )
    filter: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class SchedulePause(DefaultBase):
    """A cron schedule of a queue that an operator paused, by whom and since when: its runs
    are refused where they are enqueued (`app.jobs.queue.pauses`). Resuming deletes the row.
    Kept here, not in Redis, so that losing Redis does not resume a schedule."""

    __tablename__ = "schedule_pauses"

    queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # the task's name
    paused_by: Mapped[str] = mapped_column(String(200))  # the actor, as the audit log has it
    paused_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class QueuePause(DefaultBase):
    """A queue an operator paused, by whom and since when: no worker takes its jobs (the take
    checks a gate in Redis that mirrors this row, `app.jobs.queue.gate`). Resuming deletes the
    row. Kept here, so that a Redis restarted empty does not resume the queue."""

    __tablename__ = "queue_pauses"

    queue: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused_by: Mapped[str] = mapped_column(String(200))  # the actor, as the audit log has it
    paused_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
