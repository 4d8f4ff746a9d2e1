"""The periodic repair that makes PostgreSQL the source of truth and Redis the fast path.

Each pass (one worker at a time, under a Redis lock) takes the unfinished rows that have
not changed for a while and compares them with their jobs in Redis (`decide`):

- the job is missing from Redis (Redis flushed or restarted without persistence, the API
  died or Redis was down between the insert and the enqueue): the job is enqueued again
  from the row's task and arguments, unless a live worker is still running it;
- the job runs on a worker that has stopped reporting (killed, OOM, lost node): it is
  retried if attempts remain, else failed with that reason;
- Redis knows a later state than the row (a write lost with a killed process): the row
  is brought up to date from the job.

A row of a job the outbox did not make names its job by `job_key`, and a key can be used
again by a later run (a cron key always is). A lost cron run is not enqueued again: the
schedule makes the next run, and the row ends `aborted` saying so. A lost job whose key
now holds another run ends `aborted` too: that run took its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from saq.job import Job, Status
from saq.utils import now

from app.jobs.lifecycle import JobStatus, Transition, from_saq, manual_retries_of, row_id_of
from app.jobs.metrics import RECONCILER
from app.jobs.reads.service import BackgroundJobService

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.db.models import BackgroundJob
    from app.jobs.outbox.enqueuer import Enqueuer
    from app.jobs.queue.tracked import TrackedQueue

log = structlog.get_logger(__name__)


class Action(StrEnum):
    LEAVE = "leave"
    ENQUEUE_AGAIN = "enqueue again"
    RETRY = "retry"
    FAIL = "fail"
    REPAIR = "repair"
    GIVE_UP = "give up"  # a lost cron run, or a lost job whose key another run now holds


LOST_CRON_RUN = "lost from Redis before it finished; the schedule makes the next run"
REPLACED_RUN = "lost from Redis; a later run with the same key took its place"


def decide(
    row: BackgroundJob,
    job: Job | None,
    live_workers: Collection[str],
    *,
    now_ms: float,
    worker_lost_after_ms: float,
) -> Action:
    """What one pass does about an unfinished row, given the job its key names in Redis
    (None: missing), which may be a later run with the same key."""
    this_row = job is not None and row_id_of(job) == row.job_id
    if this_row and job is not None and manual_retries_of(job) < (row.manual_retries or 0):
        # The run before an operator's retry, ended: the retry's job never reached Redis.
        return Action.ENQUEUE_AGAIN
    if job is None or row_id_of(job) != row.job_id:
        if row.status == JobStatus.RUNNING and row.worker_id in live_workers:
            return Action.LEAVE  # its worker still runs it and will report the outcome
        if job is not None or row.cron:
            return Action.GIVE_UP
        return Action.ENQUEUE_AGAIN
    if (
        job.status == Status.ACTIVE
        and job.worker_id not in live_workers
        and now_ms - job.touched > worker_lost_after_ms
    ):
        return Action.RETRY if job.retryable else Action.FAIL
    if from_saq(job.status) != row.status or job.attempts != row.attempts:
        return Action.REPAIR
    return Action.LEAVE


@dataclass
class ReconcileReport:
    checked: int = 0
    requeued: int = 0
    worker_lost: int = 0
    repaired: int = 0
    skipped: bool = False  # another worker made this interval's pass


class Reconciler:
    def __init__(
        self,
        queue: TrackedQueue,
        enqueuer: Enqueuer,
        sessions: Callable[[], AsyncSession],
        *,
        interval: float,
        grace: float,
        worker_lost_after: float,
        batch: int = 500,
    ) -> None:
        self._queue = queue
        self._enqueuer = enqueuer
        self._sessions = sessions
        self._interval = interval
        self._grace = grace
        self._worker_lost_after_ms = worker_lost_after * 1000
        self._batch = batch
        self._lock_key = f"saq:{queue.name}:reconcile-lock"
        self._cursor: tuple[datetime, UUID] | None = None

    async def run(self) -> None:
        metrics = self._queue.metrics  # passes counted for /metrics (README "Alerts")
        while True:
            try:
                report = await self.run_once()
                if report.requeued or report.worker_lost or report.repaired:
                    log.info("reconciled background_jobs with redis", **vars(report))
            except Exception as exc:  # PostgreSQL or Redis down: try again next interval
                log.warning("reconcile pass failed", error=f"{type(exc).__name__}: {exc}")
                if metrics is not None:
                    metrics.pass_made(RECONCILER, succeeded=False)
            else:
                if metrics is not None and not report.skipped:
                    metrics.pass_made(RECONCILER, succeeded=True)
            await asyncio.sleep(self._interval)

    async def run_once(self, *, force: bool = False) -> ReconcileReport:
        report = ReconcileReport()
        lock_ms = max(int(self._interval * 1000 * 0.9), 1)
        if not force and not await self._queue.redis.set(self._lock_key, 1, nx=True, px=lock_ms):
            return ReconcileReport(skipped=True)  # another worker did this pass
        older_than = datetime.now(UTC) - timedelta(seconds=self._grace)
        service = BackgroundJobService(self._sessions(), enqueuer=self._enqueuer)
        rows = await service.unfinished(
            older_than=older_than, after=self._cursor, limit=self._batch
        )
        # Continue after this page next time; start over once the end is reached.
        self._cursor = (rows[-1].updated_at, rows[-1].job_id) if len(rows) == self._batch else None
        if not rows:
            return report
        report.checked = len(rows)
        jobs = await self._queue.jobs(row.job_key or str(row.job_id) for row in rows)
        live_workers = set((await self._queue.info())["workers"])
        missing: list[BackgroundJob] = []
        repairs: list[Transition] = []
        for row, job in zip(rows, jobs, strict=True):
            action = decide(
                row,
                job,
                live_workers,
                now_ms=now(),
                worker_lost_after_ms=self._worker_lost_after_ms,
            )
            if action is Action.ENQUEUE_AGAIN:
                missing.append(row)
            elif job is not None and action in (Action.RETRY, Action.FAIL):
                reason = f"worker lost: {job.worker_id} stopped reporting while running the job"
                if action is Action.RETRY:
                    await self._queue.retry(job, error=reason)
                else:
                    await self._queue.finish(job, Status.FAILED, error=reason)
                report.worker_lost += 1
            elif job is not None and action is Action.REPAIR:
                repairs.append(Transition.of(job))
            elif action is Action.GIVE_UP:
                repairs.append(_given_up(row, LOST_CRON_RUN if job is None else REPLACED_RUN))
        if missing:
            enqueued = await self._enqueuer.enqueue_recorded(missing)
            for row, accepted in zip(missing, enqueued, strict=True):
                if accepted:
                    report.requeued += 1
                    log.warning("job missing from redis, enqueued again", job_id=str(row.job_id))
        if repairs:
            report.repaired = len(await service.apply(repairs))
        return report


def _given_up(row: BackgroundJob, reason: str) -> Transition:
    log.warning("job lost from redis, not enqueued again", job_id=str(row.job_id), reason=reason)
    ended = datetime.now(UTC)
    return Transition(
        row.job_id,
        row.task_name,
        JobStatus.ABORTED,
        row.attempts,
        completed_at=ended,
        error=reason,
        at=ended,
    )
