"""The monitor's reads that the API has no endpoint for, each bounded and served by an index:
the page before a position (newer), rows by id for live updates, capped status counts,
a task's last runs, a job's parents and children, the overview's per-minute outcomes, the
oldest queued job, running rows.

Filters are the job list's own (`indexed_conditions`, `scanned_conditions`), so a page, its
newer page and a live row agree on what matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, select, text, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.util import ClauseAdapter

from app.jobs.lifecycle import JobStatus
from app.jobs.reads.queries import (
    JOBS,
    by_job_ids,
    indexed_conditions,
    scanned_conditions,
    status_breakdown_statement,
)
from app.jobs.reads.search import SCAN_LIMIT, JobSearch, Position
from app.jobs.reads.stats import PER_MINUTE

RUNS_SHOWN = 60  # a task's last runs on a job's page
STUCK_SCANNED = 500  # running rows looked at for a lost worker, oldest first
RELATIVES_SHOWN = 200  # a job's parents and children listed on its page, at most
COUNTS_TTL = 10.0  # seconds the status counts of one filter are reused
COUNTED_NEWEST = 2_000  # the status counts are of the newest matching jobs, up to this many
_COUNTS_KEPT = 256  # filters whose counts are kept, at most


@dataclass(frozen=True, slots=True)
class StatusCounts:
    by_status: dict[JobStatus, int]  # among the newest `newest` matching jobs
    at: datetime  # when they were counted (they are reused for COUNTS_TTL seconds)
    newest: int = COUNTED_NEWEST
    complete: bool = True  # False: more jobs match than the newest `newest` counted


class MonitorQueries:
    def __init__(
        self, sessions: Callable[[], AsyncSession], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._counts: dict[JobSearch, tuple[float, StatusCounts]] = {}

    async def newer_page(self, search: JobSearch, before: Position, limit: int) -> list[RowMapping]:
        """Up to `limit` rows just newer than `before`, newest first (an index scan backwards)."""
        c = JOBS.c
        keyset = tuple_(c.created_at, c.id) > tuple_(before.created_at, before.id)
        wanted = SCAN_LIMIT if search.scans_text else limit
        statuses = [None] if search.statuses is None else sorted(search.statuses)
        legs = [
            select(JOBS)
            .where(*indexed_conditions(search), keyset, *([] if s is None else [c.status == s]))
            .order_by(c.created_at, c.id)
            .limit(wanted)
            for s in statuses
        ]
        candidates = (legs[0] if len(legs) == 1 else union_all(*legs)).subquery("newer")
        k = candidates.c
        scanned = scanned_conditions(search)
        statement = select(candidates).order_by(k.created_at, k.id).limit(limit)
        if scanned:
            statement = statement.where(*(_on(condition, candidates) for condition in scanned))
        async with self._sessions() as session:
            rows = list((await session.execute(statement)).mappings())
        return rows[::-1]

    async def rows(self, search: JobSearch, job_ids: Sequence[UUID]) -> list[RowMapping]:
        """The jobs among `job_ids` that the search matches, newest first."""
        if not job_ids or search.matches_nothing:
            return []
        c = JOBS.c
        conditions = [*indexed_conditions(search), *scanned_conditions(search)]
        if search.statuses is not None:
            conditions.append(c.status.in_([s.value for s in search.statuses]))
        statement = (
            select(JOBS)
            .where(*by_job_ids(job_ids), *conditions)
            .order_by(c.created_at.desc(), c.id.desc())
        )
        async with self._sessions() as session:
            return list((await session.execute(statement)).mappings())

    async def status_counts(self, search: JobSearch) -> StatusCounts | None:
        """Per status, how many of the newest COUNTED_NEWEST jobs the search matches have it
        (one index walk that stops there), reused for COUNTS_TTL seconds; None for a text
        search (its matches are not counted)."""
        if search.scans_text:
            return None
        now = self._clock()
        cached = self._counts.get(search)
        if cached is not None and cached[0] > now:
            return cached[1]
        wanted = list(JobStatus) if search.statuses is None else sorted(search.statuses)
        async with self._sessions() as session:
            found = await session.execute(status_breakdown_statement(search, COUNTED_NEWEST))
            by_value = {str(status): int(count) for status, count in found.all()}
        counts = {status: by_value.get(status.value, 0) for status in wanted}
        if len(self._counts) >= _COUNTS_KEPT:
            self._counts.clear()
        complete = sum(by_value.values()) < COUNTED_NEWEST
        result = StatusCounts(counts, datetime.now(UTC), COUNTED_NEWEST, complete)
        self._counts[search] = (now + COUNTS_TTL, result)
        return result

    async def task_runs(self, task_name: str, limit: int = RUNS_SHOWN) -> list[RowMapping]:
        """The task's last runs, oldest first: status and run time."""
        c = JOBS.c
        statement = (
            select(c.job_id, c.status, c.created_at, c.started_at, c.completed_at)
            .where(c.task_name == task_name)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.execute(statement)).mappings())[::-1]

    async def per_minute(self, since: datetime) -> list[dict[str, Any]]:
        """Per task and minute since `since` (from `job_stats`): the jobs that completed and
        failed in that minute."""
        async with self._sessions() as session:
            return [
                dict(row)
                for row in (await session.execute(PER_MINUTE, {"since": since})).mappings()
            ]

    async def oldest_queued(self) -> datetime | None:
        c = JOBS.c
        statement = (
            select(c.created_at)
            .where(c.status == JobStatus.QUEUED.value)
            .order_by(c.created_at, c.id)
            .limit(1)
        )
        async with self._sessions() as session:
            return await session.scalar(statement)

    async def relatives(self, job_id: UUID, limit: int = RELATIVES_SHOWN) -> list[RowMapping]:
        """The jobs `job_id` waits for (`relation` parent) and those waiting for it (child)."""
        async with self._sessions() as session:
            found = await session.execute(RELATIVES, {"job_id": job_id, "limit": limit})
            return list(found.mappings())

    async def running(self, limit: int = STUCK_SCANNED) -> list[RowMapping]:
        """The oldest running rows (the overview keeps those whose worker is gone)."""
        c = JOBS.c
        statement = (
            select(c.job_id, c.task_name, c.worker_id, c.started_at, c.updated_at, c.attempts)
            .where(c.status == JobStatus.RUNNING.value)
            .order_by(c.created_at, c.id)
            .limit(limit)
        )
        async with self._sessions() as session:
            return list((await session.execute(statement)).mappings())


# A job's parents and children (`after=`), each with its task and status (none: deleted by
# retention); at most RELATIVES_SHOWN of them.
RELATIVES = text(
    """
    SELECT 'parent' AS relation, d.parent_id AS job_id, j.task_name, j.status
    FROM job_dependencies d LEFT JOIN background_jobs j ON j.job_id = d.parent_id
    WHERE d.child_id = CAST(:job_id AS uuid)
    UNION ALL
    SELECT 'child', d.child_id, j.task_name, j.status
    FROM job_dependencies d LEFT JOIN background_jobs j ON j.job_id = d.child_id
    WHERE d.parent_id = CAST(:job_id AS uuid)
    ORDER BY 1 DESC, 2
    LIMIT CAST(:limit AS integer)
    """
)


def _on(condition: Any, table: Any) -> Any:
    """A condition written on the table, read on a subquery of its columns."""
    return ClauseAdapter(table).traverse(condition)


def count_text(count: int) -> str:
    return f"{count:,}"
