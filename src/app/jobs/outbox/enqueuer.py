"""The outbox: a job's row is committed before its job goes to Redis, whoever enqueues it.

Every caller (the API's trigger, `BackgroundJobService.enqueue`, the reconciler's re-sends)
goes through one `Enqueuer`. Concurrent callers are grouped by a `Batcher`: one INSERT and
one Redis pipeline for every row that arrived during the previous flush, while a lone
caller is flushed at once. If Redis cannot take a job now, its row stays `queued` and the
reconciler enqueues it when Redis is back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from uuid import UUID, uuid4

import structlog
from saq.job import Job as SaqJob
from sqlalchemy import bindparam, select, text

from app.db.models import BackgroundJob
from app.jobs.lifecycle import (
    FROM_OUTBOX,
    HAS_DEPENDENTS,
    MANUAL_RETRIES,
    ROW_ID,
    JobStatus,
    to_json,
)
from app.jobs.outbox.after import insert_dependent, parents_of
from app.jobs.outbox.batcher import Batcher
from app.jobs.record.statements import Execute
from app.jobs.registry import TaskFunction, TaskPolicy, TaskRegistry, UnknownTaskError

if TYPE_CHECKING:
    from app.db.connection import Connection
    from app.jobs.queue.tracked import TrackedQueue
    from app.jobs.record.dependencies import ReleasedJob

# What `enqueue_recorded` puts on the queue: a row the outbox, a retry or a release wrote.
RecordedRow: TypeAlias = "EnqueuedJob | BackgroundJob | ReleasedJob"

log = structlog.get_logger(__name__)


class IdempotencyConflictError(ValueError):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job's row as `enqueue` recorded it (a replayed request: as the first one did).

    A plain record, not an ORM object, which would cost the trigger more (docs/benchmarks.md).
    Read the row itself (`BackgroundJobService.get_by_job_id`) for what happened since.
    """

    id: UUID
    job_id: UUID
    task_name: str
    queue: str
    status: str
    arguments: dict[str, Any]
    attempts: int
    max_attempts: int
    user_id: UUID | None
    project_id: UUID | None
    idempotency_key: str | None
    request_fingerprint: str | None
    created_at: datetime
    enqueued_by: str | None = None  # the API key (display prefix) that triggered it


def request_fingerprint(task_name: str, arguments: Mapping[str, Any], *ids: UUID | None) -> str:
    """What makes two requests "the same" for an Idempotency-Key."""
    canonical = json.dumps(
        [task_name, arguments, [str(i) if i else None for i in ids]], sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# One statement whatever the batch size, so it is prepared once per connection.
# ON CONFLICT DO NOTHING: of requests with one Idempotency-Key, exactly one inserts (also
# within one batch).
INSERT_QUEUED = text(
    """
    INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments, errors,
        attempts, max_attempts, user_id, project_id, idempotency_key, request_fingerprint,
        enqueued_by, created_at, updated_at)
    SELECT v.id, v.job_id, v.task_name, v.queue, 'queued', v.arguments, '[]'::jsonb,
        0, v.max_attempts, v.user_id, v.project_id, v.idempotency_key, v.request_fingerprint,
        v.enqueued_by, v.created_at, v.created_at
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:job_ids AS uuid[]), CAST(:task_names AS text[]),
        CAST(:queues AS text[]), CAST(:arguments AS jsonb[]), CAST(:max_attempts AS integer[]),
        CAST(:user_ids AS uuid[]), CAST(:project_ids AS uuid[]), CAST(:keys AS text[]),
        CAST(:fingerprints AS text[]), CAST(:enqueued_by AS text[]),
        CAST(:created AS timestamptz[])
    ) AS v(id, job_id, task_name, queue, arguments, max_attempts, user_id, project_id,
           idempotency_key, request_fingerprint, enqueued_by, created_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING job_id
    """
)

# The row an Idempotency-Key already names, read on the outbox's own connection: the
# trigger opens no session (docs/benchmarks.md).
_FIRST_WITH_KEY = select(
    *(BackgroundJob.__table__.c[name] for name in EnqueuedJob.__dataclass_fields__)
).where(BackgroundJob.idempotency_key == bindparam("key"))


def dependent_row(job: EnqueuedJob) -> dict[str, Any]:
    """`job` as INSERT_DEPENDENT's parameters."""
    row = asdict(job)
    row.update(
        arguments=to_json(job.arguments),
        key=job.idempotency_key,
        fingerprint=job.request_fingerprint,
        created=job.created_at,
    )
    for unused in ("status", "attempts", "idempotency_key", "request_fingerprint", "created_at"):
        del row[unused]
    return row


async def insert_rows(execute: Execute, rows: Sequence[EnqueuedJob]) -> set[UUID]:
    """Insert new `queued` rows in one statement; returns the job ids actually inserted."""
    result = await execute(
        INSERT_QUEUED,
        {
            "ids": [r.id for r in rows],
            "job_ids": [r.job_id for r in rows],
            "task_names": [r.task_name for r in rows],
            "queues": [r.queue for r in rows],
            "arguments": [to_json(r.arguments) for r in rows],
            "max_attempts": [r.max_attempts for r in rows],
            "user_ids": [r.user_id for r in rows],
            "project_ids": [r.project_id for r in rows],
            "keys": [r.idempotency_key for r in rows],
            "fingerprints": [r.request_fingerprint for r in rows],
            "enqueued_by": [r.enqueued_by for r in rows],
            "created": [r.created_at for r in rows],
        },
    )
    return {row[0] for row in result}


class Enqueuer:
    """Records jobs' rows and puts their jobs on `queue`, grouping concurrent callers."""

    def __init__(
        self,
        queue: TrackedQueue,
        registry: TaskRegistry,
        default_timeout: int,
        connection: Connection,
        max_batch: int = 500,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.default_timeout = default_timeout
        self._connection = connection
        self._batcher: Batcher[EnqueuedJob, bool] = Batcher(self._record_and_enqueue, max_batch)

    async def enqueue(
        self,
        task: TaskFunction | str,
        arguments: Mapping[str, Any] | None = None,
        *,
        user_id: UUID | None = None,
        project_id: UUID | None = None,
        idempotency_key: str | None = None,
        enqueued_by: str | None = None,
        after: Sequence[UUID] = (),
    ) -> EnqueuedJob:
        """Record a `queued` row, then put the job on the queue; returns what was recorded.
        With `after` (job ids), the row is `waiting` until they all completed (see
        `app.jobs.outbox.after`); `DependencyError` if one is unknown or of another project.

        The row is committed first, so it is durable and a worker that picks the job up at
        once finds it. With an `idempotency_key`, a repeated request returns the first
        request's row instead of creating another. `enqueued_by` names who asked (the row
        is the audit record of the job's creation).
        """
        task_name = self.registry.name_of(task)
        kwargs = dict(arguments or {})
        parents = parents_of(after)
        fingerprint = (
            request_fingerprint(task_name, kwargs, user_id, project_id, *parents)
            if idempotency_key is not None
            else None
        )
        job = EnqueuedJob(
            id=uuid4(),
            job_id=uuid4(),
            task_name=task_name,
            queue=self.queue.name,
            status=JobStatus.QUEUED.value,
            arguments=kwargs,
            attempts=0,
            max_attempts=self.registry.policy(task_name).attempts,
            user_id=user_id,
            project_id=project_id,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            created_at=datetime.now(UTC),
            enqueued_by=enqueued_by,
        )
        if parents:
            recorded = await self._record_dependent(job, parents)
            if recorded is not None:
                return recorded
        elif await self._batcher.submit(job):
            return job
        # ON CONFLICT DO NOTHING inserted nothing: this idempotency key was used before.
        return await self._replay(cast("str", idempotency_key), cast("str", fingerprint))

    async def enqueue_recorded(self, rows: Sequence[RecordedRow]) -> list[bool]:
        """Put already recorded rows' jobs on the queue (again) in one round trip; for each
        row, False if Redis could not take it now (the row stays `queued`). Another queue's
        row (a child released here) is left `queued` for that queue's reconciler."""
        ours = [row for row in rows if row.queue == self.queue.name]
        try:
            accepted = await self.queue.enqueue_many([self._job_of(row) for row in ours])
        except Exception as exc:
            for row in ours:
                log.warning(
                    "job recorded, queue unavailable", job_id=str(row.job_id), error=str(exc)
                )
            accepted = [False] * len(ours)
        taken = iter(accepted)
        return [next(taken) if row.queue == self.queue.name else False for row in rows]

    def _job_of(self, row: RecordedRow) -> SaqJob:
        # A Job object, not enqueue(**kwargs): SAQ would take kwargs named like Job fields
        # (key, timeout, retries, ...) as job settings instead of task arguments.
        try:
            policy = self.registry.policy(row.task_name)
        except UnknownTaskError:  # a job enqueued straight on the queue, for a task not here
            policy = TaskPolicy(attempts=max(row.max_attempts, 1))
        settings = policy.job_settings(self.default_timeout)
        # A manually retried row allows more attempts than its task's policy.
        settings["retries"] = max(settings["retries"], row.max_attempts)
        job = SaqJob(
            function=row.task_name,
            kwargs=dict(row.arguments),
            key=str(row.job_id),
            attempts=row.attempts,
            meta={FROM_OUTBOX: True},  # its row exists: a worker does not adopt it
            **settings,
        )
        if getattr(row, "has_dependents", False):  # its end is written at once
            job.meta[HAS_DEPENDENTS] = True
        manual_retries: int = getattr(row, "manual_retries", 0) or 0
        if manual_retries:  # its events must tell this run from the earlier ones
            job.meta[MANUAL_RETRIES] = manual_retries
        job_key = getattr(row, "job_key", None)
        if job_key is not None:  # a row first seen by the queue: its SAQ key, its row id
            job.key, job.meta = job_key, {**job.meta, ROW_ID: str(row.job_id)}
            scheduled_at: datetime | None = getattr(row, "scheduled_at", None)
            job.scheduled = int(scheduled_at.timestamp()) if scheduled_at else 0
        return job

    async def close(self) -> None:
        await self._connection.close()

    async def _record_and_enqueue(self, jobs: list[EnqueuedJob]) -> list[bool]:
        inserted = await insert_rows(self._connection.execute, jobs)  # committed: the outbox
        await self.enqueue_recorded([job for job in jobs if job.job_id in inserted])
        return [job.job_id in inserted for job in jobs]

    async def _record_dependent(self, job: EnqueuedJob, parents: list[UUID]) -> EnqueuedJob | None:
        """A job with parents: its own statement, not the batch's (it locks its parents);
        None if its idempotency key was used before."""
        inserted = await insert_dependent(self._connection.execute, parents, dependent_row(job))
        if inserted.status is None:
            return None
        job = replace(job, status=inserted.status)
        if inserted.status == JobStatus.QUEUED.value:  # its parents had all completed
            await self.enqueue_recorded([job])
        return job

    async def _replay(self, idempotency_key: str, fingerprint: str) -> EnqueuedJob:
        rows = await self._connection.execute(_FIRST_WITH_KEY, {"key": idempotency_key})
        if not rows:  # pragma: no cover - a key is never deleted
            raise RuntimeError("idempotency key vanished")
        first = EnqueuedJob(**rows[0]._asdict())
        if first.request_fingerprint != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request body"
            )
        return first
