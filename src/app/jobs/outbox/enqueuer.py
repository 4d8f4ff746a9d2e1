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
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast
from uuid import UUID, uuid4

import structlog
from saq.job import Job as SaqJob

from app.db.models import BackgroundJob
from app.jobs.ids import new_job_id
from app.jobs.jsonb import to_json
from app.jobs.lifecycle import (
    FROM_OUTBOX,
    HAS_DEPENDENTS,
    MANUAL_RETRIES,
    ROW_ID,
    JobStatus,
)
from app.jobs.outbox.after import insert_dependent, parents_of
from app.jobs.outbox.batcher import Batcher
from app.jobs.outbox.rows import FIRST_WITH_KEY, FREE_STALE_KEY, EnqueuedJob, insert_rows
from app.jobs.registry import TaskFunction, TaskPolicy, TaskRegistry, UnknownTaskError

__all__ = ["Batcher", "EnqueuedJob", "Enqueuer", "IdempotencyConflictError", "request_fingerprint"]

if TYPE_CHECKING:
    from app.db.connection import Connection
    from app.jobs.queue.tracked import TrackedQueue
    from app.jobs.record.settled import ReleasedJob

# What `enqueue_recorded` puts on the queue: a row the outbox, a retry or a release wrote.
RecordedRow: TypeAlias = "EnqueuedJob | BackgroundJob | ReleasedJob"

log = structlog.get_logger(__name__)


class IdempotencyConflictError(ValueError):
    """The Idempotency-Key was used before with a different request."""


def request_fingerprint(task_name: str, arguments: Mapping[str, Any], *ids: UUID | None) -> str:
    """What makes two requests "the same" for an Idempotency-Key."""
    canonical = json.dumps(
        [task_name, arguments, [str(i) if i else None for i in ids]], sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


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
        created_at = datetime.now(UTC)
        job = EnqueuedJob(
            id=uuid4(),
            job_id=new_job_id(created_at),  # spells created_at: its partition (app/jobs/ids.py)
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
            created_at=created_at,
            enqueued_by=enqueued_by,
        )
        for _ in range(2):
            if parents:
                recorded = await self._record_dependent(job, parents)
                if recorded is not None:
                    return recorded
            elif await self._batcher.submit(job):
                return job
            # ON CONFLICT DO NOTHING inserted nothing: this idempotency key was used before.
            first = await self._replay(cast("str", idempotency_key), cast("str", fingerprint))
            if first is not None:
                return first
        raise RuntimeError(f"Idempotency-Key {idempotency_key!r} is taken and its row is gone")

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

    async def _replay(self, idempotency_key: str, fingerprint: str) -> EnqueuedJob | None:
        """The row the key names; None if it is gone (retention dropped it and has not yet
        deleted its key), in which case the key is freed for this request."""
        rows = await self._connection.execute(FIRST_WITH_KEY, {"key": idempotency_key})
        if not rows:
            await self._connection.execute(FREE_STALE_KEY, {"key": idempotency_key})
            return None
        first = EnqueuedJob(**rows[0]._asdict())
        if first.request_fingerprint != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different request body"
            )
        return first
