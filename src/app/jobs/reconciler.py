"""The periodic repair that makes PostgreSQL the source of truth and Redis the fast path.

Each pass (one worker at a time, under a Redis lock) takes the `queued`/`running` rows that
have not changed for a while and compares them with their jobs in Redis:

- the job is missing from Redis (Redis flushed or restarted without persistence, the API
  died or Redis was down between the insert and the enqueue): the job is enqueued again
  from the row's task and arguments, unless a live worker is still running it;
- the job runs on a worker that has stopped reporting (killed, OOM, lost node): it is
  retried if attempts remain, else failed with that reason;
- Redis knows a later state than the row (a write lost with a killed process): the row
  is brought up to date from the job.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from saq.job import Status
from saq.utils import now

from app.jobs.registry import TaskRegistry
from app.jobs.services import BackgroundJobService, Enqueuer, Transition
from app.jobs.states import JobStatus

if TYPE_CHECKING:
    from app.jobs.queue import TrackedQueue

log = structlog.get_logger("app.worker")


@dataclass
class ReconcileReport:
    checked: int = 0
    requeued: int = 0
    worker_lost: int = 0
    repaired: int = 0


class Reconciler:
    def __init__(
        self,
        queue: TrackedQueue,
        registry: TaskRegistry,
        *,
        default_timeout: int,
        interval: float,
        grace: float,
        worker_lost_after: float,
        batch: int = 500,
    ) -> None:
        self._queue = queue
        self._enqueuer = Enqueuer(queue, registry, default_timeout)
        self._interval = interval
        self._grace = grace
        self._worker_lost_after_ms = worker_lost_after * 1000
        self._batch = batch
        self._lock_key = f"saq:{queue.name}:reconcile-lock"
        self._cursor: tuple[datetime, UUID] | None = None

    async def run(self) -> None:
        while True:
            try:
                report = await self.run_once()
                if report.requeued or report.worker_lost or report.repaired:
                    log.info("reconciled background_jobs with redis", **vars(report))
            except Exception as exc:  # PostgreSQL or Redis down: try again next interval
                log.warning("reconcile pass failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._interval)

    async def run_once(self, *, force: bool = False) -> ReconcileReport:
        report = ReconcileReport()
        lock_ms = max(int(self._interval * 1000 * 0.9), 1)
        if not force and not await self._queue.redis.set(self._lock_key, 1, nx=True, px=lock_ms):
            return report  # another worker did this pass
        older_than = datetime.now(UTC) - timedelta(seconds=self._grace)
        async with self._queue.sessions() as session:
            service = BackgroundJobService(session, enqueuer=self._enqueuer)
            rows = await service.unfinished(
                older_than=older_than, after=self._cursor, limit=self._batch
            )
            # Continue after this page next time; start over once the end is reached.
            self._cursor = (
                (rows[-1].updated_at, rows[-1].job_id) if len(rows) == self._batch else None
            )
            if not rows:
                return report
            report.checked = len(rows)
            jobs = await self._queue.jobs(str(row.job_id) for row in rows)
            live_workers = set((await self._queue.info())["workers"])
            repairs: list[Transition] = []
            for row, job in zip(rows, jobs, strict=True):
                if job is None:
                    if row.status == JobStatus.RUNNING and row.worker_id in live_workers:
                        continue  # its worker still runs it and will report the outcome
                    if await service.send_to_queue(row):
                        report.requeued += 1
                        log.warning(
                            "job missing from redis, enqueued again", job_id=str(row.job_id)
                        )
                    continue
                if (
                    job.status == Status.ACTIVE
                    and job.worker_id not in live_workers
                    and now() - job.touched > self._worker_lost_after_ms
                ):
                    reason = f"worker lost: {job.worker_id} stopped reporting while running the job"
                    if job.retryable:
                        await self._queue.retry(job, error=reason)
                    else:
                        await self._queue.finish(job, Status.FAILED, error=reason)
                    report.worker_lost += 1
                    continue
                observed = Transition.of(job)
                if observed.status.value != row.status or observed.attempt != row.attempts:
                    repairs.append(observed)
            if repairs:
                report.repaired = len(await service.apply(repairs))
        return report
