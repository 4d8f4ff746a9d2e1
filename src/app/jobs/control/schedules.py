"""The cron schedules: each schedule the workers run (`CRON` in `worker/settings.py`, as the
SAQ plugin's queue config holds it in every process, the API's too), its next time, its last
runs from the table, and whether an operator paused it; pausing and resuming one, audited.

A schedule is named by its task (SAQ's key for its runs is `cron:<task>`). A pause is a row of
`schedule_pauses`; the workers refuse the runs of a paused schedule where they enqueue them
(`app.jobs.queue.pauses`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from saq.job import CronJob
from sqlalchemy import RowMapping, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditAction, AuditLog
from app.auth.roles import Principal
from app.db.models import SchedulePause
from app.jobs.reads.queries import JOBS

RUNS_SHOWN = 10  # a schedule's last runs, unless asked for another number
RUNS_MAX = 50
# A schedule's runs are found among its task's newest rows (an index walk that stops there):
# a task that is also triggered often shows fewer runs.
RUNS_SCANNED = 2_000


class UnknownScheduleError(LookupError):
    """No schedule of this name is declared (`CRON`)."""


@dataclass(frozen=True)
class Schedule:
    name: str  # its task's name
    cron: str
    queue: str
    unique: bool  # SAQ's: one run at a time, under the key `cron:<name>`
    next_run_at: datetime  # by its cron expression, whether paused or not (UTC)
    paused_by: str | None = None
    paused_at: datetime | None = None
    runs: list[RowMapping] = field(default_factory=list)  # newest first

    @property
    def job_key(self) -> str | None:
        return f"cron:{self.name}" if self.unique else None


class Schedules:
    """The schedules of one queue, and their pauses."""

    def __init__(
        self,
        cron_jobs: Sequence[CronJob[Any]],
        queue_name: str,
        sessions: Callable[[], AsyncSession],
        audit: AuditLog,
    ) -> None:
        self._declared: dict[str, CronJob[Any]] = {}
        for job in cron_jobs:
            name = job.function.__qualname__
            if name in self._declared:  # their pauses and their SAQ keys would be one
                raise ValueError(f"two schedules of task {name}: give each its own task")
            self._declared[name] = job
        self.queue_name = queue_name
        self._sessions = sessions
        self._audit = audit

    @property
    def names(self) -> list[str]:
        return sorted(self._declared)

    async def all(self, runs: int = RUNS_SHOWN, now: datetime | None = None) -> list[Schedule]:
        """Every schedule with its pause and its last `runs` runs (one statement each)."""
        now = now or datetime.now(UTC)
        async with self._sessions() as session:
            pauses = {
                pause.name: pause
                for pause in await session.scalars(
                    select(SchedulePause).where(SchedulePause.queue == self.queue_name)
                )
            }
            found = []
            for name in self.names:
                last = await _last_runs(session, name, runs) if runs else []
                found.append(self._schedule(name, now, pauses.get(name), last))
        return found

    async def one(self, name: str, runs: int = RUNS_SHOWN) -> Schedule:
        self._check(name)
        return next(s for s in await self.all(runs) if s.name == name)

    async def pause(self, name: str, principal: Principal) -> Schedule:
        """Pause `name` (a no-op, audited as such, if it is paused already)."""
        self._check(name)
        async with self._audit.recording(principal, AuditAction.SCHEDULE_PAUSE) as entry:
            entry.filter, entry.count = {"queue": self.queue_name, "schedule": name}, 0
            statement = (
                insert(SchedulePause)
                .values(
                    queue=self.queue_name,
                    name=name,
                    paused_by=principal.actor,
                    paused_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing()
                .returning(SchedulePause.name)
            )
            async with self._sessions() as session:
                if (await session.execute(statement)).first() is None:
                    entry.detail = "already paused"
        return await self.one(name)

    async def resume(self, name: str, principal: Principal) -> Schedule:
        """Resume `name` (a no-op, audited as such, if it is not paused)."""
        self._check(name)
        async with self._audit.recording(principal, AuditAction.SCHEDULE_RESUME) as entry:
            entry.filter, entry.count = {"queue": self.queue_name, "schedule": name}, 0
            statement = (
                delete(SchedulePause)
                .where(SchedulePause.queue == self.queue_name, SchedulePause.name == name)
                .returning(SchedulePause.paused_by)
            )
            async with self._sessions() as session:
                resumed = (await session.execute(statement)).first()
            entry.detail = "was not paused" if resumed is None else f"paused by {resumed[0]}"
        return await self.one(name)

    def _check(self, name: str) -> None:
        if name not in self._declared:
            known = ", ".join(self.names) or "none"
            raise UnknownScheduleError(f"no schedule named {name!r} (declared: {known})")

    def _schedule(
        self, name: str, now: datetime, pause: SchedulePause | None, runs: list[RowMapping]
    ) -> Schedule:
        job = self._declared[name]
        return Schedule(
            name=name,
            cron=job.cron,
            queue=self.queue_name,
            unique=job.unique,
            next_run_at=next_run(job.cron, now),
            paused_by=pause.paused_by if pause else None,
            paused_at=pause.paused_at if pause else None,
            runs=runs,
        )


def next_run(cron: str, after: datetime) -> datetime:
    """When a schedule runs next after `after`, as SAQ's worker computes it (UTC)."""
    found: datetime = croniter(cron, after.astimezone(UTC)).get_next(datetime)
    return found.astimezone(UTC)


async def _last_runs(session: AsyncSession, task_name: str, limit: int) -> list[RowMapping]:
    """The task's last `limit` runs made by a schedule, newest first."""
    c = JOBS.c
    newest = (
        select(JOBS)
        .where(c.task_name == task_name)
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(RUNS_SCANNED)
        .subquery("newest")
    )
    n = newest.c
    statement = (
        select(
            n.job_id,
            n.status,
            n.cron,
            n.scheduled_at,
            n.created_at,
            n.started_at,
            n.completed_at,
            n.attempts,
            n.error,
        )
        .where(n.cron.is_not(None))
        .order_by(n.created_at.desc(), n.id.desc())
        .limit(limit)
    )
    return list((await session.execute(statement)).mappings())
