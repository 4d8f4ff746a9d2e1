"""Retention: ended jobs (and, if asked, audit rows) older than a window are deleted.

Only rows in a final status (`complete`, `failed`, `aborted`) whose last change is older
than the window go; a `queued` or `running` row is never touched, however old. Rows go in
batches of `batch` per statement, each its own short transaction, with a pause between
batches so that the deletes never hold the table for long, and at most `max_batches` per
run: a large backlog is worked off over several runs.

The worker runs a pass at start-up and every `interval` seconds, one worker at a time
(a Redis lock, as the reconciler's); admins can run one through `POST /api/v1/ops/prune`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from app.jobs.lifecycle import TERMINAL_STATUSES, status_in
from app.jobs.metrics import RETENTION

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy import TextClause
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.jobs.metrics import JobMetrics

log = structlog.get_logger(__name__)

BATCH = 1000
MAX_BATCHES = 100  # per run: at most this many batches, then the next run goes on
PAUSE = 0.05  # seconds between two batches: other writers get the table in between

_ENDED = status_in(TERMINAL_STATUSES)
# The oldest ended rows first, through the partial index on updated_at of ended rows.
# SKIP LOCKED: a row another transaction is changing (a retry) is left for the next run,
# and the status test is checked again on the row as it is once locked. The batch is a
# MATERIALIZED CTE: as an IN (subquery) the planner may rescan it and delete past LIMIT.
_DELETE_JOBS = text(
    f"""
    WITH doomed AS MATERIALIZED (
        SELECT id FROM background_jobs
        WHERE {_ENDED} AND updated_at < :cutoff
        ORDER BY updated_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM background_jobs AS b USING doomed
    WHERE b.id = doomed.id AND b.{_ENDED}
    """  # noqa: S608 - built from the lifecycle's statuses only
)
_DELETE_AUDIT = text(
    """
    WITH doomed AS MATERIALIZED (
        SELECT id FROM job_actions WHERE at < :cutoff ORDER BY at LIMIT :batch
    )
    DELETE FROM job_actions AS a USING doomed WHERE a.id = doomed.id
    """
)


@dataclass(frozen=True)
class Pruned:
    deleted: int
    cutoff: datetime
    complete: bool  # False: stopped at max_batches with more rows past the window left


class Retention:
    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        redis: Redis,
        queue_name: str,
        *,
        job_days: int,
        audit_days: int,
        interval: float,
        batch: int = BATCH,
        max_batches: int = MAX_BATCHES,
        pause: float = PAUSE,
        metrics: JobMetrics | None = None,  # counts the loop's passes for /metrics
    ) -> None:
        self._sessions = sessions  # autocommit: each batch commits on its own
        self._redis = redis
        self.job_days = job_days
        self.audit_days = audit_days
        self._interval = interval
        self._batch = batch
        self._max_batches = max_batches
        self._pause = pause
        self._metrics = metrics
        self._lock_key = f"saq:{queue_name}:retention-lock"

    async def prune_jobs(self, older_than_days: int) -> Pruned:
        """Delete ended jobs whose last change is more than `older_than_days` days old."""
        return await self._prune(_DELETE_JOBS, older_than_days)

    async def prune_audit(self, older_than_days: int) -> Pruned:
        """Delete audit rows written more than `older_than_days` days ago."""
        return await self._prune(_DELETE_AUDIT, older_than_days)

    async def _prune(self, statement: TextClause, older_than_days: int) -> Pruned:
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        deleted = 0
        for batch_number in range(self._max_batches):
            if batch_number:
                await asyncio.sleep(self._pause)
            async with self._sessions() as session:
                result = await session.execute(statement, {"cutoff": cutoff, "batch": self._batch})
            count = result.rowcount  # type: ignore[attr-defined]
            deleted += count
            if count < self._batch:
                return Pruned(deleted, cutoff, complete=True)
        return Pruned(deleted, cutoff, complete=False)

    async def run_once(self, *, force: bool = False) -> dict[str, Pruned]:
        """One pass of every retention that is on, unless another worker made one within
        the interval (`force`: regardless)."""
        done: dict[str, Pruned] = {}
        lock_ms = max(int(self._interval * 1000 * 0.9), 1)
        if not force and not await self._redis.set(self._lock_key, 1, nx=True, px=lock_ms):
            return done
        if self.job_days:
            done["background_jobs"] = await self.prune_jobs(self.job_days)
        if self.audit_days:
            done["job_actions"] = await self.prune_audit(self.audit_days)
        return done

    async def run(self) -> None:
        """The worker's loop: a pass now, then one every interval."""
        if not (self.job_days or self.audit_days):
            log.info("retention off: JOB_RETENTION_DAYS and AUDIT_RETENTION_DAYS are 0")
            return
        while True:
            try:
                done = await self.run_once()
                for table, pruned in done.items():
                    if pruned.deleted or not pruned.complete:
                        log.info(
                            "pruned old rows",
                            table=table,
                            deleted=pruned.deleted,
                            older_than=pruned.cutoff.isoformat(),
                            complete=pruned.complete,
                        )
            except Exception as exc:  # PostgreSQL or Redis down: try again next interval
                log.warning("retention pass failed", error=f"{type(exc).__name__}: {exc}")
                if self._metrics is not None:
                    self._metrics.pass_made(RETENTION, succeeded=False)
            else:
                if self._metrics is not None and done:  # nothing done: another worker's turn
                    self._metrics.pass_made(RETENTION, succeeded=True)
            await asyncio.sleep(self._interval)
