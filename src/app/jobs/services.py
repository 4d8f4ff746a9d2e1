"""The job lifecycle: the one module that writes `background_jobs`.

The API enqueues through `BackgroundJobService.enqueue`; the worker's hooks report each
attempt through `mark_running` and `record_outcome`. Every transition is a single guarded
UPDATE, so a late or duplicate event can never move a row backwards (see `states.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID, uuid4

from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from saq.job import Job as SaqJob
from sqlalchemy import bindparam, delete, update
from sqlalchemy.dialects.postgresql import JSONB

from app.db.models import BackgroundJob
from app.jobs.registry import TaskFunction, TaskRegistry
from app.jobs.states import ALLOWED_SOURCES, JobStatus, from_saq

if TYPE_CHECKING:
    from saq.queue import Queue
    from sqlalchemy.ext.asyncio import AsyncSession


class QueueUnavailableError(RuntimeError):
    """The job could not be put on the queue; nothing was recorded."""


@dataclass(frozen=True)
class Enqueuer:
    """What enqueueing needs besides the database: queue, known tasks, default timeout."""

    queue: Queue
    registry: TaskRegistry
    default_timeout: int


def epoch_ms_to_datetime(millis: int | float | None) -> datetime | None:
    """SAQ keeps job times as epoch milliseconds; 0 means unset."""
    return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis else None


def describe_error(exception: BaseException | None, saq_error: str | None) -> str | None:
    """One line a person can read: the exception if the worker saw one, else SAQ's reason."""
    if exception is not None:
        text = str(exception)
        return f"{type(exception).__name__}: {text}" if text else type(exception).__name__
    if saq_error:
        return saq_error.strip().splitlines()[-1]
    return None


class BackgroundJobService(SQLAlchemyAsyncRepositoryService[BackgroundJob]):
    """Reads `background_jobs` and moves its rows through the lifecycle."""

    class Repo(SQLAlchemyAsyncRepository[BackgroundJob]):
        model_type = BackgroundJob

    repository_type = Repo

    def __init__(
        self, session: AsyncSession, *, enqueuer: Enqueuer | None = None, **kwargs: Any
    ) -> None:
        super().__init__(session=session, **kwargs)
        self._enqueuer = enqueuer

    @property
    def session(self) -> AsyncSession:
        return cast("AsyncSession", self.repository.session)

    async def enqueue(
        self,
        task: TaskFunction | str,
        arguments: Mapping[str, Any] | None = None,
        *,
        user_id: UUID | None = None,
        project_id: UUID | None = None,
    ) -> BackgroundJob:
        """Record a `queued` row, then put the job on the queue; returns the committed row.

        The row is committed first so a worker that picks the job up at once finds it.
        If the queue refuses the job, the row is removed again: nothing is half-written.
        """
        if self._enqueuer is None:
            raise RuntimeError("this BackgroundJobService was built without a queue")
        queue, registry = self._enqueuer.queue, self._enqueuer.registry
        task_name = registry.name_of(task)
        job_settings = registry.policy(task_name).job_settings(self._enqueuer.default_timeout)
        kwargs = dict(arguments or {})
        row = BackgroundJob(
            job_id=uuid4(),
            task_name=task_name,
            queue=queue.name,
            status=JobStatus.QUEUED.value,
            arguments=kwargs,
            attempts=0,
            max_attempts=job_settings["retries"],
            user_id=user_id,
            project_id=project_id,
        )
        self.session.add(row)
        await self.session.commit()
        # A Job object, not enqueue(**kwargs): SAQ would take kwargs named like Job fields
        # (key, timeout, retries, ...) as job settings instead of task arguments.
        job = SaqJob(function=task_name, kwargs=kwargs, key=str(row.job_id), **job_settings)
        try:
            enqueued = await queue.enqueue(job)
        except Exception as exc:
            await self._forget(row.job_id)
            raise QueueUnavailableError(f"could not enqueue job: {exc}") from exc
        if enqueued is None:  # SAQ refuses a duplicate key; ours are fresh UUIDs.
            await self._forget(row.job_id)
            raise QueueUnavailableError("the queue refused the job")
        return row

    async def _forget(self, job_id: UUID) -> None:
        await self.session.execute(delete(BackgroundJob).where(BackgroundJob.job_id == job_id))
        await self.session.commit()

    async def get_by_job_id(self, job_id: UUID) -> BackgroundJob | None:
        return await self.get_one_or_none(BackgroundJob.job_id == job_id)

    async def list_page(
        self,
        *,
        status: JobStatus | None = None,
        task_name: str | None = None,
        user_id: UUID | None = None,
        project_id: UUID | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[BackgroundJob], int]:
        """Newest first; each filter is optional and they combine with AND."""
        conditions = [
            column == value
            for column, value in (
                (BackgroundJob.status, status.value if status else None),
                (BackgroundJob.task_name, task_name),
                (BackgroundJob.user_id, user_id),
                (BackgroundJob.project_id, project_id),
            )
            if value is not None
        ]
        rows, total = await self.get_many_and_count(
            *conditions,
            LimitOffset(limit=limit, offset=offset),
            OrderBy(field_name="created_at", sort_order="desc"),
        )
        return list(rows), total

    # Lifecycle transitions, each one guarded UPDATE. `attempt` is SAQ's attempt counter;
    # an event from an older attempt than the row already records is ignored.

    async def mark_running(
        self, job_id: UUID, *, attempt: int, worker_id: str | None, started_at: datetime
    ) -> bool:
        return await self._move(
            job_id,
            JobStatus.RUNNING,
            attempt,
            worker_id=worker_id,
            started_at=started_at,
            completed_at=None,
        )

    async def mark_complete(
        self, job_id: UUID, *, attempt: int, result: Any, completed_at: datetime
    ) -> bool:
        return await self._move(
            job_id, JobStatus.COMPLETE, attempt, result=result, completed_at=completed_at
        )

    async def mark_failed(
        self,
        job_id: UUID,
        *,
        attempt: int,
        error: str | None,
        traceback: str | None,
        completed_at: datetime,
        status: JobStatus = JobStatus.FAILED,
    ) -> bool:
        """Record a final failure (`failed`) or an abort (`aborted`), keeping the error history."""
        return await self._move(
            job_id,
            status,
            attempt,
            completed_at=completed_at,
            **self._error_values(attempt, error, traceback, completed_at),
        )

    async def mark_retrying(
        self, job_id: UUID, *, attempt: int, error: str | None, traceback: str | None
    ) -> bool:
        """The attempt failed and SAQ re-queued the job: back to `queued`, error kept."""
        at = datetime.now(UTC)
        return await self._move(
            job_id, JobStatus.QUEUED, attempt, **self._error_values(attempt, error, traceback, at)
        )

    async def record_outcome(self, job: SaqJob, exception: BaseException | None) -> bool:
        """Record how one attempt ended, from the SAQ job as `after_process` sees it."""
        job_id = UUID(job.key)
        status = from_saq(job.status)
        error = describe_error(exception, job.error)
        finished = epoch_ms_to_datetime(job.completed) or datetime.now(UTC)
        if status is JobStatus.COMPLETE:
            return await self.mark_complete(
                job_id, attempt=job.attempts, result=job.result, completed_at=finished
            )
        if status is JobStatus.QUEUED:
            return await self.mark_retrying(
                job_id, attempt=job.attempts, error=error, traceback=job.error
            )
        if status in (JobStatus.FAILED, JobStatus.ABORTED):
            return await self.mark_failed(
                job_id,
                attempt=job.attempts,
                error=error,
                traceback=job.error,
                completed_at=finished,
                status=status,
            )
        return False  # still running (an abort in progress): the next event settles it

    @staticmethod
    def _error_values(
        attempt: int, error: str | None, traceback: str | None, at: datetime
    ) -> dict[str, Any]:
        entry = {"attempt": attempt, "at": at.isoformat(), "error": error, "traceback": traceback}
        return {
            "error": error,
            "traceback": traceback,
            "errors": BackgroundJob.errors.op("||")(bindparam(None, [entry], type_=JSONB)),
        }

    async def _move(self, job_id: UUID, target: JobStatus, attempt: int, **values: Any) -> bool:
        statement = (
            update(BackgroundJob)
            .where(
                BackgroundJob.job_id == job_id,
                BackgroundJob.status.in_([s.value for s in ALLOWED_SOURCES[target]]),
                BackgroundJob.attempts <= attempt,
            )
            .values(status=target.value, attempts=attempt, updated_at=datetime.now(UTC), **values)
        )
        result = await self.session.execute(statement)
        await self.session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]
