"""`BackgroundJobService`: what handlers and the reconciler do with `background_jobs`.

Reads go through its advanced-alchemy repository and filters. Writes go where they are
cheapest: new rows through the outbox (`Enqueuer`), transitions through the guarded UPDATE
of `lifecycle_sql.py`, which the queue's recorder also uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import Executable, Row

from app.db.models import BackgroundJob
from app.jobs.lifecycle import TERMINAL_STATUSES, JobStatus, Transition, row_id_of
from app.jobs.reads.queries import (
    TOTAL,
    ListedPage,
    by_job_ids,
    capped_total,
    count_statement,
    read_page,
    unfinished_statement,
)
from app.jobs.reads.search import JobSearch, Position
from app.jobs.reads.shapes import PAGE_STATEMENTS
from app.jobs.reads.stats import stats_statement, task_stats, window_start
from app.jobs.record.dependencies import cancel_waiting, repair_waiting, settle_children
from app.jobs.record.recorder import announce_then_release
from app.jobs.record.statements import write_transitions

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.jobs.outbox.enqueuer import EnqueuedJob, Enqueuer
    from app.jobs.reads.job_rows import JobRows
    from app.jobs.record.settled import Settled
    from app.jobs.registry import TaskFunction


class JobAlreadyFinishedError(ValueError):
    """A cancel request for a job that has already ended."""


class BackgroundJobService(SQLAlchemyAsyncRepositoryService[BackgroundJob]):
    """Reads `background_jobs`, enqueues jobs, cancels them, repairs rows from Redis.

    Each call is its own short unit of work: the session gives its connection back when
    the call returns, so a request's service needs no clean-up step (docs/benchmarks.md).
    """

    class Repo(SQLAlchemyAsyncRepository[BackgroundJob]):
        model_type = BackgroundJob

    repository_type = Repo

    def __init__(
        self,
        session: AsyncSession,
        *,
        enqueuer: Enqueuer | None = None,
        job_rows: JobRows | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, **kwargs)
        self.enqueuer = enqueuer  # None: a service that only reads
        self.job_rows = job_rows  # the list's pages through the driver; None: the session

    @contextlib.asynccontextmanager
    async def _unit_of_work(self) -> AsyncIterator[AsyncSession]:
        session = self.repository.session
        try:
            yield session
        finally:
            await session.close()

    # -- jobs in and out of the queue --------------------------------------------------------

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
        """Record a `queued` row, then put the job on the queue (see `Enqueuer.enqueue`).
        With `after`, the job waits for those jobs to complete (`DependencyError` if one is
        unknown or of another project)."""
        return await self._require_enqueuer().enqueue(
            task,
            arguments,
            user_id=user_id,
            project_id=project_id,
            idempotency_key=idempotency_key,
            enqueued_by=enqueued_by,
            after=after,
        )

    async def cancel(self, row: BackgroundJob, reason: str) -> None:
        """Abort the row's job: a waiting job ends at once, a running one within a second.

        The row follows through the queue (`aborted`, with `reason` as its error).
        """
        if row.status in TERMINAL_STATUSES:
            raise JobAlreadyFinishedError(f"job {row.job_id} already ended as {row.status}")
        if row.status == JobStatus.WAITING:  # not on the queue: the row is the job
            settled = await cancel_waiting(self._execute, [row.job_id], reason)
            if not settled.moved:
                raise JobAlreadyFinishedError(f"job {row.job_id} is no longer waiting")
            await self._settled(settled)
            return
        queue = self._require_enqueuer().queue
        job = await queue.job(row.job_key or str(row.job_id))
        if job is None or job.completed or row_id_of(job) != row.job_id:  # gone, or a later run
            raise JobAlreadyFinishedError(f"job {row.job_id} is no longer on the queue")
        await queue.abort(job, reason)

    def _require_enqueuer(self) -> Enqueuer:
        if self.enqueuer is None:
            raise RuntimeError("this BackgroundJobService was built without an enqueuer")
        return self.enqueuer

    # -- reads -------------------------------------------------------------------------------

    async def get_by_job_id(self, job_id: UUID) -> BackgroundJob | None:
        """The job's row: one index probe, in the partition its id's time falls in."""
        async with self._unit_of_work():
            return await self.get_one_or_none(*by_job_ids([job_id]))

    async def search_page(
        self, search: JobSearch, *, after: Position | None, limit: int, offset: int
    ) -> ListedPage:
        """A page of the list, newest first (`created_at DESC, id DESC`), after `after`.

        One statement (built once per shape of search: `app.jobs.reads.shapes`), whose
        planner may not sort (`app.config.PLANNER_SETTINGS`): each
        page comes from an index scan in the list's order, with its capped count, as plain
        column values rather than ORM objects (docs/benchmarks.md).
        """
        if search.matches_nothing:
            return ListedPage([], None, 0, True)
        driver = PAGE_STATEMENTS.for_driver(search, after=after, limit=limit, offset=offset)
        if driver is not None and self.job_rows is not None:
            found_rows = await self.job_rows.fetch(driver[0].sql, driver[1])
            if found_rows:  # else the count needs a statement of its own
                rows, next_position = read_page(found_rows, search, limit=limit, offset=offset)
                return ListedPage(rows, next_position, *capped_total(int(found_rows[0][TOTAL])))
        statement, values = PAGE_STATEMENTS.page(search, after=after, limit=limit, offset=offset)
        async with self._unit_of_work() as session:
            found = list((await session.execute(statement, values)).mappings())
            total: tuple[int | None, bool] = (None, False)
            if not search.scans_text:
                # Past the end there is no row to carry the count.
                count = found[0][TOTAL] if found else await session.scalar(count_statement(search))
                total = capped_total(int(count or 0))
            await session.commit()
        rows, next_position = read_page(found, search, limit=limit, offset=offset)
        return ListedPage(rows, next_position, *total)

    async def stats(
        self, *, window: str, project_id: UUID | None, now: datetime | None = None
    ) -> tuple[datetime, list[dict[str, Any]]]:
        """Per task, the jobs created in `window` (a key of `WINDOWS`): counts by status, run
        and wait times; and the moment the window starts (app/jobs/reads/stats.py)."""
        kind, since = window_start(window, now or datetime.now(UTC))
        async with self._unit_of_work() as session:
            rows = list((await session.execute(stats_statement(kind, since, project_id))).all())
        return since, task_stats(rows)

    async def unfinished(
        self,
        *,
        queue: str,
        older_than: datetime,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> Sequence[BackgroundJob]:
        """Rows of `queue` still unfinished (but not waiting: not on the queue yet), unchanged
        since `older_than`, oldest change first. Another queue's rows are its own reconciler's:
        this one would find their jobs missing from its queue and enqueue them on it.

        `after` is where the previous page ended, so long waits never hide the rows behind them.
        """
        async with self._unit_of_work() as session:
            return list(
                (await session.scalars(unfinished_statement(queue, older_than, after, limit))).all()
            )

    # -- repairs -----------------------------------------------------------------------------

    async def apply(self, transitions: Sequence[Transition]) -> list[Transition]:
        """Write transitions with the guarded UPDATE (see `write_transitions`); the children
        of the rows that ended are released (and enqueued) or aborted, as the recorder does."""
        written = await write_transitions(self._execute, transitions)
        if written.ended_parents:
            await self._settled(await settle_children(self._execute, written.ended_parents))
        return written.applied

    async def repair_waiting(self, older_than: datetime) -> int:
        """Release (and enqueue) the waiting rows whose parents all completed, abort those
        with a parent that did not (`dependencies.repair_waiting`); returns how many were
        released."""
        settled = await repair_waiting(self._execute, older_than)
        if settled.released:
            self._require_enqueuer()
        await self._settled(settled)
        return len(settled.released)

    async def _settled(self, settled: Settled) -> None:
        enqueuer = self.enqueuer
        events = enqueuer.queue.recorder.events if enqueuer is not None else None
        release = enqueuer.enqueue_recorded if enqueuer is not None else None
        await announce_then_release(settled, events, release)

    async def _execute(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Row[Any]]:
        async with self._unit_of_work() as session:
            rows = (await session.execute(statement, parameters)).all()
            await session.commit()
            return rows
