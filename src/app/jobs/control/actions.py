"""What an operator does to jobs that exist: retry ended ones, cancel unfinished ones, one job
or many at a time.

Every call is bounded (`BULK_LIMIT` jobs) and set-based: one statement finds the jobs, one
statement retries them (its status guard lets exactly one of concurrent retries of a job
through), one Redis pipeline enqueues them. A retried row is `queued` before its job goes to
Redis, as the outbox does: if Redis cannot take the job now, the reconciler enqueues it.
Cancels go through the queue, like a single cancel: the rows follow as the jobs end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Executable, Row, select, union_all

from app.db.models import BackgroundJob
from app.jobs.lifecycle import RETRYABLE_STATUSES, UNFINISHED_STATUSES, JobStatus, row_id_of
from app.jobs.reads.queries import by_job_ids, indexed_conditions
from app.jobs.reads.search import JobSearch
from app.jobs.record.dependencies import cancel_waiting, parents_of, wait_again
from app.jobs.record.events import STATUS, JobEvent
from app.jobs.record.retry import RETRY_ENDED, retry_parameters
from app.jobs.record.statements import Execute

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.jobs.outbox.enqueuer import Enqueuer
    from app.jobs.record.events import EventPublisher

BULK_LIMIT = 1000  # jobs one call acts on, at most (a larger "retry all" is several calls)
_ABORTS_AT_ONCE = 50  # concurrent aborts of a bulk cancel (each is a short Redis pipeline)
_JOBS = BackgroundJob.__table__
# The retry's RETURNING * read with the table's types (jsonb as Python values), by name.
_RETRY = RETRY_ENDED.columns(**{column.name: column.type for column in _JOBS.c})
# Column name -> the model's attribute (advanced-alchemy's sentinel column is `_sentinel`).
_ATTRIBUTES = {prop.columns[0].name: prop.key for prop in BackgroundJob.__mapper__.column_attrs}


@dataclass(frozen=True, slots=True)
class FoundJob:
    job_id: UUID
    status: JobStatus
    project_id: UUID | None
    job_key: str | None


@dataclass(frozen=True, slots=True)
class Retried:
    job_ids: list[UUID]  # the rows that went back to `queued`
    enqueued: int  # of them, how many Redis took now (the reconciler enqueues the others)


class JobActions:
    """Retries and cancels, on the process's queue; each statement in its own short session."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        enqueuer: Enqueuer,
        events: EventPublisher | None = None,
    ) -> None:
        self._sessions = sessions
        self._enqueuer = enqueuer
        self._events = events  # a retry's move to `queued` is an event like the queue's

    async def find(self, job_ids: Iterable[UUID]) -> list[FoundJob]:
        """The jobs among `job_ids` that exist (what an action needs to know of each)."""
        ids = list(job_ids)
        if not ids:
            return []
        c = _JOBS.c
        statement = select(c.job_id, c.status, c.project_id, c.job_key).where(*by_job_ids(ids))
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        return [FoundJob(row[0], JobStatus(row[1]), row[2], row[3]) for row in rows]

    async def matching(
        self, search: JobSearch, statuses: Collection[JobStatus], limit: int = BULK_LIMIT
    ) -> tuple[list[FoundJob], bool]:
        """Up to `limit` jobs the search matches in `statuses`, newest first (the list's
        order, each status read from its own index); and whether more match."""
        wanted = set(statuses) if search.statuses is None else set(statuses) & search.statuses
        if not wanted:
            return [], False
        c = _JOBS.c
        columns = (c.job_id, c.status, c.project_id, c.job_key, c.created_at, c.id)
        conditions = indexed_conditions(search)
        legs = [
            select(*columns)
            .where(*conditions, c.status == status.value)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit + 1)
            for status in sorted(wanted)
        ]
        merged = union_all(*legs).subquery("matching")
        statement = (
            select(merged.c.job_id, merged.c.status, merged.c.project_id, merged.c.job_key)
            .order_by(merged.c.created_at.desc(), merged.c.id.desc())
            .limit(limit + 1)
        )
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        found = [FoundJob(row[0], JobStatus(row[1]), row[2], row[3]) for row in rows]
        return found[:limit], len(found) > limit

    async def retry(self, job_ids: Sequence[UUID], actor: str) -> Retried:
        """Put the `failed` or `aborted` jobs among `job_ids` back on the queue, as new runs of
        the same job_id; the others are left as they are."""
        if not job_ids:
            return Retried([], 0)
        async with self._sessions() as session:
            parents = await parents_of(_executor(session), job_ids)
            result = await session.execute(_RETRY, retry_parameters(job_ids, actor, parents))
            rows = [_as_model(row._mapping) for row in result]
            # The children these rows' end aborted wait for them again.
            again = await wait_again(_executor(session), [row.job_id for row in rows], actor)
        # A row with parents still to complete waits for them instead (not on the queue).
        queued = [row for row in rows if row.status == JobStatus.QUEUED.value]
        if self._events is not None:  # before the new run can start and publish its own
            events = [_retried_event(row) for row in rows]
            await self._events.publish_now(events + [JobEvent.of_child(c) for c in again])
        accepted = await self._enqueuer.enqueue_recorded(queued) if queued else []
        return Retried([row.job_id for row in rows], sum(accepted))

    async def cancel(self, jobs: Sequence[FoundJob], reason: str) -> tuple[list[UUID], list[UUID]]:
        """Abort the unfinished jobs among `jobs` (their rows end `aborted` through the queue);
        returns those aborted, and those skipped (ended, or no longer on the queue)."""
        queue = self._enqueuer.queue
        waiting = [job.job_id for job in jobs if job.status is JobStatus.WAITING]
        async with self._sessions() as session:  # not on the queue: the row is the job
            settled = await cancel_waiting(_executor(session), waiting, reason)
        if self._events is not None:
            await self._events.publish_now([JobEvent.of_child(c) for c in settled.moved])
        asked = set(waiting)
        cancelled = [child.job_id for child in settled.moved if child.job_id in asked]
        jobs = [job for job in jobs if job.status is not JobStatus.WAITING]
        unfinished = [job for job in jobs if job.status in UNFINISHED_STATUSES]
        skipped = [job.job_id for job in jobs if job.status not in UNFINISHED_STATUSES]
        saq_jobs = await queue.jobs(job.job_key or str(job.job_id) for job in unfinished)
        to_abort: list[tuple[FoundJob, Any]] = []
        for job, saq_job in zip(unfinished, saq_jobs, strict=True):
            if saq_job is None or saq_job.completed or row_id_of(saq_job) != job.job_id:
                skipped.append(job.job_id)  # gone, ended, or a later run holds its key
            else:
                to_abort.append((job, saq_job))
        at_once = asyncio.Semaphore(_ABORTS_AT_ONCE)

        async def abort(saq_job: Any) -> None:
            async with at_once:
                await queue.abort(saq_job, reason)

        await asyncio.gather(*(abort(saq_job) for _, saq_job in to_abort))
        skipped += [job_id for job_id in waiting if job_id not in cancelled]
        return cancelled + [job.job_id for job, _ in to_abort], skipped


def _executor(session: AsyncSession) -> Execute:
    async def execute(statement: Executable, parameters: Mapping[str, Any]) -> Sequence[Row[Any]]:
        return (await session.execute(statement, parameters)).all()

    return execute


def _as_model(columns: Any) -> BackgroundJob:
    """A row read by a textual statement, as the model `enqueue_recorded` takes (not added to
    any session)."""
    return BackgroundJob(**{_ATTRIBUTES[name]: value for name, value in columns.items()})


def _retried_event(row: BackgroundJob) -> JobEvent:
    """`queued`, or `waiting` for a row whose parents have not all completed."""
    status = JobStatus(row.status)
    return JobEvent.about(row, kind=STATUS, job_id=row.job_id, status=status, attempt=row.attempts)


def retryable(jobs: Iterable[FoundJob]) -> list[UUID]:
    return [job.job_id for job in jobs if job.status in RETRYABLE_STATUSES]
