"""Retention: ended jobs (and, if asked, audit rows) older than a window are deleted.

`background_jobs` goes a partition at a time (app/ops/partitions.py): a partition is
dropped once its whole range of `created_at` is older than the window, and the rows that
must stay go back into the table first: an unfinished (`waiting`, `queued` or `running`)
row, however old, and an ended row changed within the window. No row-by-row DELETE, so a
pass costs what the partitions' count and drop cost, whatever the rate that filled them
(docs/scaling.md). The Idempotency-Keys and `after=` links of the dropped rows go with
them (app/ops/dropped_rows.py). The audit log is deleted in batches.

The worker runs a pass at start-up and every `interval` seconds, one worker at a time
(a Redis lock, as the reconciler's), and each pass first makes the partitions ahead of time
and deletes the counts of `job_stats` no stats window reads any more (also when retention
is off); admins can run one through `POST /api/v1/ops/prune`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from app.jobs.metrics import RETENTION
from app.jobs.record.counting import COMPACT

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.jobs.metrics import JobMetrics
    from app.ops.partitions import Partitions

log = structlog.get_logger(__name__)

BATCH = 1000  # audit rows per DELETE
MAX_BATCHES = 100  # per run: at most this many batches, then the next run goes on
MAX_PARTITIONS = 100  # partitions dropped per run, at most
PAUSE = 0.05  # seconds between two batches: other writers get the table in between

# `job_stats` keeps what the stats' windows read: minutes for 2 hours (the longest window
# read by the minute is an hour), hours for 8 days (the longest window is 7 days).
STATS_KEPT = {"minute": timedelta(hours=2), "ended": timedelta(hours=2), "hour": timedelta(days=8)}
_DELETE_STATS = text("DELETE FROM job_stats WHERE kind = :kind AND at < :cutoff")
_COMPACT = text(COMPACT)
COMPACT_EVERY = 5.0  # seconds between two compactions of the pending counts, in each worker
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
    complete: bool  # False: more past the window is left for the next run
    partitions: list[str] = field(default_factory=list)  # the partitions dropped
    kept: list[str] = field(default_factory=list)  # past the window, left for the next run


class Retention:
    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        partitions: Partitions,
        redis: Redis,
        queue_name: str,
        *,
        job_days: float,
        audit_days: int,
        interval: float,
        batch: int = BATCH,
        max_batches: int = MAX_BATCHES,
        max_partitions: int = MAX_PARTITIONS,
        pause: float = PAUSE,
        metrics: JobMetrics | None = None,  # counts the loop's passes for /metrics
    ) -> None:
        self._sessions = sessions  # autocommit: each batch commits on its own
        self.partitions = partitions
        self._redis = redis
        self.job_days = job_days
        self.audit_days = audit_days
        self._interval = interval
        self._batch = batch
        self._max_batches = max_batches
        self._max_partitions = max_partitions
        self._pause = pause
        self._metrics = metrics
        self._lock_key = f"saq:{queue_name}:retention-lock"

    async def prune_jobs(self, older_than_days: float) -> Pruned:
        """Drop the partitions of jobs created more than `older_than_days` days ago, keeping
        their unfinished rows and those changed since (see the module's docstring)."""
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        async with self.partitions.exclusive():
            dropped = await self.partitions.drop_past(cutoff, self._max_partitions)
        return Pruned(dropped.rows, cutoff, not dropped.kept, dropped.partitions, dropped.kept)

    async def prune_audit(self, older_than_days: int) -> Pruned:
        """Delete audit rows written more than `older_than_days` days ago."""
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
        deleted = 0
        for batch_number in range(self._max_batches):
            if batch_number:
                await asyncio.sleep(self._pause)
            async with self._sessions() as session:
                result = await session.execute(
                    _DELETE_AUDIT, {"cutoff": cutoff, "batch": self._batch}
                )
            count = result.rowcount  # type: ignore[attr-defined]
            deleted += count
            if count < self._batch:
                return Pruned(deleted, cutoff, complete=True)
        return Pruned(deleted, cutoff, complete=False)

    async def compact_stats(self) -> None:
        """Move the counts the recorder appended into `job_stats` (one statement: each count
        is in exactly one of the two tables at every moment)."""
        async with self._sessions() as session:
            await session.execute(_COMPACT)

    async def prune_stats(self) -> int:
        """Delete the counts of `job_stats` older than any window reads."""
        deleted = 0
        for kind, kept in STATS_KEPT.items():
            async with self._sessions() as session:
                cutoff = datetime.now(UTC) - kept
                result = await session.execute(_DELETE_STATS, {"kind": kind, "cutoff": cutoff})
            deleted += result.rowcount  # type: ignore[attr-defined]
        return deleted

    async def make_partitions(self) -> list[str]:
        """The partitions ahead of now that are missing (retention on or off)."""
        async with self.partitions.exclusive():
            return await self.partitions.ensure()

    async def run_once(self, *, force: bool = False) -> dict[str, Pruned]:
        """One pass of every retention that is on, unless another worker made one within
        the interval (`force`: regardless)."""
        done: dict[str, Pruned] = {}
        lock_ms = max(int(self._interval * 1000 * 0.9), 1)
        if not force and not await self._redis.set(self._lock_key, 1, nx=True, px=lock_ms):
            return done
        await self.make_partitions()
        await self.prune_stats()
        if self.job_days:
            done["background_jobs"] = await self.prune_jobs(self.job_days)
        if self.audit_days:
            done["job_actions"] = await self.prune_audit(self.audit_days)
        return done

    async def run(self) -> None:
        """The worker's loop: the pending counts compacted every few seconds; a retention
        pass now, then one every interval."""
        if not (self.job_days or self.audit_days):
            log.info("retention off: JOB_RETENTION_DAYS and AUDIT_RETENTION_DAYS are 0")
        clock = asyncio.get_running_loop().time
        next_pass = clock()
        while True:
            try:
                await self.compact_stats()
            except Exception as exc:  # PostgreSQL down: the counts wait in their table
                log.warning("stats compaction failed", error=f"{type(exc).__name__}: {exc}")
            if clock() >= next_pass:
                await self._pass()
                next_pass = clock() + self._interval
            await asyncio.sleep(min(COMPACT_EVERY, max(0.0, next_pass - clock())))

    async def _pass(self) -> None:
        """One retention pass (unless another worker made one within the interval), logged."""
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
                        partitions=pruned.partitions,
                        kept=pruned.kept,
                    )
        except Exception as exc:  # PostgreSQL or Redis down: try again next interval
            log.warning("retention pass failed", error=f"{type(exc).__name__}: {exc}")
            if self._metrics is not None:
                self._metrics.pass_made(RETENTION, succeeded=False)
        else:
            if self._metrics is not None and done:  # nothing done: another worker's turn
                self._metrics.pass_made(RETENTION, succeeded=True)
