"""The periodic repair that makes PostgreSQL the source of truth and Redis the fast path.

Each pass (one worker at a time, under a Redis lock) first settles stale waiting rows
(`dependencies.repair_waiting`), then takes the other unfinished rows that have not changed
for a while and compares them with their jobs in Redis (`decide`):

- the job is missing from Redis (Redis flushed or restarted without persistence, the API
  died or Redis was down between the insert and the enqueue): the job is enqueued again
  from the row's task and arguments, unless a live worker is still running it;
- the job runs on a worker that has stopped reporting (killed, OOM, lost node), or on a
  live worker that no longer runs it (its end never reached Redis): it is retried if
  attempts remain, else failed with that reason; a job being aborted ends `aborted`;
- Redis knows a later state than the row (a write lost with a killed process): the row
  is brought up to date from the job.

A running row is left to a live worker only while the worker lists the job among those it
runs now (`Listing`, in the worker's SAQ record: newer than the run's start, both on the
worker's clock), and never longer than the task's timeout plus WORKER_LOST_AFTER after the
row last changed: SAQ's worker ends a job at its timeout, so a worker that still has not
reported by then never will (a plain SAQ worker lists nothing: only this bound applies).
For WORKER_LOST_AFTER after Redis restarts, a worker missing from it is not taken for lost:
its record may not be back yet.

A row of a job the outbox did not make names its job by `job_key`, which a later run may
use again (a cron key always is): such a lost run is not enqueued again but ends `aborted`
(the schedule makes the next run; or the later run took its place).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
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
from app.jobs.queue.running import Listing, fleet_of
from app.jobs.reads.service import BackgroundJobService
from app.jobs.registry import UnknownTaskError

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
    END_ABORT = "end abort"  # an abort its worker will never carry out
    REPAIR = "repair"
    GIVE_UP = "give up"  # a lost cron run, or a lost job whose key another run now holds


DROPPED = "dropped by its worker"
LOST_CRON_RUN = "lost from Redis before it finished; the schedule makes the next run"
REPLACED_RUN = "lost from Redis; a later run with the same key took its place"
# Live workers, by id, with what each lists (None: a worker that lists nothing).
Fleet = Mapping[str, Listing | None]


def decide(
    row: BackgroundJob,
    job: Job | None,
    fleet: Fleet,
    *,
    now_ms: float,
    worker_lost_after_ms: float,
    timeout_ms: float,
    fleet_complete: bool = True,
    abort_pending: bool = False,
) -> Action:
    """What one pass does about an unfinished row, given the job its key names in Redis
    (None: missing), which may be a later run with the same key, and the live workers.
    `timeout_ms` is the row's task's timeout. `fleet_complete` is False while a restarted
    Redis may still miss the records of live workers: none is taken for lost then.
    `abort_pending`: the job's abort is under way (its abort key, a few seconds long, is
    there): whoever aborted it, a worker or a sweep, is still to end it."""
    this_row = job is not None and row_id_of(job) == row.job_id
    if this_row and job is not None and manual_retries_of(job) < (row.manual_retries or 0):
        # The run before an operator's retry, ended: the retry's job never reached Redis.
        return Action.ENQUEUE_AGAIN
    if job is None or row_id_of(job) != row.job_id:
        limit_ms = timeout_ms + worker_lost_after_ms
        runs_it = _runs_it(row, fleet, now_ms, limit_ms, fleet_complete=fleet_complete)
        if row.status == JobStatus.RUNNING and runs_it:
            return Action.LEAVE  # its worker still runs it and will report the outcome
        if job is not None or row.cron:
            return Action.GIVE_UP
        return Action.ENQUEUE_AGAIN
    lost = fleet_complete and _lost(job, fleet, now_ms, worker_lost_after_ms)
    dropped = _dropped(job, fleet)
    if job.status == Status.ACTIVE and (lost or dropped):
        return Action.RETRY if job.retryable else Action.FAIL
    started = job.worker_id is not None  # else an abort of a job taken but not yet started
    if job.status == Status.ABORTING and started and not abort_pending and (lost or dropped):
        return Action.END_ABORT  # its worker will never carry the abort out
    if from_saq(job.status) != row.status or job.attempts != row.attempts:
        return Action.REPAIR
    return Action.LEAVE


def _runs_it(
    row: BackgroundJob, fleet: Fleet, now_ms: float, limit_ms: float, *, fleet_complete: bool
) -> bool:
    """Whether the worker of a running row whose job Redis lost may still run it."""
    if row.worker_id is None:
        return False
    if row.updated_at is not None and now_ms - _ms(row.updated_at) > limit_ms:
        return False  # past the task's timeout: SAQ's worker has ended the run by now
    if row.worker_id not in fleet:
        return not fleet_complete  # lost, unless its record is yet to come back
    listing = fleet[row.worker_id]
    if listing is None or row.started_at is None:
        return True  # it lists nothing: only the bound above applies
    return listing.lists(row.job_id, since_ms=_ms(row.started_at)) is not False


def _lost(job: Job, fleet: Fleet, now_ms: float, worker_lost_after_ms: float) -> bool:
    """Its worker stopped reporting, and the job has not changed for WORKER_LOST_AFTER."""
    return job.worker_id not in fleet and now_ms - job.touched > worker_lost_after_ms


def _dropped(job: Job, fleet: Fleet) -> bool:
    """Its worker lives but says it no longer runs this run (begun at `started`)."""
    listing = fleet.get(job.worker_id) if job.worker_id else None
    row_id = row_id_of(job)
    if listing is None or row_id is None:
        return False
    return listing.lists(row_id, since_ms=job.started or job.touched) is False


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


@dataclass
class ReconcileReport:
    checked: int = 0
    requeued: int = 0
    worker_lost: int = 0
    dropped: int = 0
    repaired: int = 0
    released: int = 0  # waiting rows whose parents had all completed
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
                counts = (report.requeued, report.worker_lost, report.dropped, report.repaired)
                if any(counts) or report.released:
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
        report.released = await service.repair_waiting(older_than)
        rows = await service.unfinished(
            queue=self._queue.name, older_than=older_than, after=self._cursor, limit=self._batch
        )
        # Continue after this page next time; start over once the end is reached.
        self._cursor = (rows[-1].updated_at, rows[-1].job_id) if len(rows) == self._batch else None
        if not rows:
            return report
        report.checked = len(rows)
        # The workers before the jobs: a listing without a job was then made after the run's
        # end was sent, so the job read next shows that end if Redis took it.
        fleet = fleet_of((await self._queue.info())["workers"])
        jobs = await self._queue.jobs(row.job_key or str(row.job_id) for row in rows)
        # A Redis up for less than WORKER_LOST_AFTER may still miss live workers' records.
        uptime_s = (await self._queue.redis.info("server"))["uptime_in_seconds"]
        fleet_complete = uptime_s * 1000 >= self._worker_lost_after_ms
        aborting = [job for job in jobs if job is not None and job.status == Status.ABORTING]
        pending = await self._aborts_pending(aborting)
        missing: list[BackgroundJob] = []
        repairs: list[Transition] = []
        for row, job in zip(rows, jobs, strict=True):
            action = decide(
                row,
                job,
                fleet,
                now_ms=now(),
                worker_lost_after_ms=self._worker_lost_after_ms,
                timeout_ms=self._timeout_ms(row.task_name),
                fleet_complete=fleet_complete,
                abort_pending=job is not None and job.key in pending,
            )
            if action is Action.ENQUEUE_AGAIN:
                missing.append(row)
            elif job is not None and action in (Action.RETRY, Action.FAIL, Action.END_ABORT):
                await self._take_back(job, action, fleet, report)
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

    async def _take_back(
        self, job: Job, action: Action, fleet: Fleet, report: ReconcileReport
    ) -> None:
        """End or retry a running job no worker runs any more, saying why."""
        if job.worker_id in fleet:
            reason = f"{DROPPED}: {job.worker_id} no longer runs the job; Redis still held it"
            report.dropped += 1
        else:
            reason = f"worker lost: {job.worker_id} stopped reporting while running the job"
            report.worker_lost += 1
        if action is Action.END_ABORT:
            await self._queue.finish(job, Status.ABORTED, error=job.error or reason)
        elif action is Action.RETRY:
            await self._queue.retry(job, error=reason)
        else:
            await self._queue.finish(job, Status.FAILED, error=reason)

    async def _aborts_pending(self, jobs: list[Job]) -> set[str]:
        if not jobs:
            return set()
        async with self._queue.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.exists(job.abort_id)
            found = await pipe.execute()
        return {job.key for job, exists in zip(jobs, found, strict=True) if exists}

    def _timeout_ms(self, task_name: str) -> float:
        try:
            policy = self._enqueuer.registry.policy(task_name)
        except UnknownTaskError:  # a job a plain producer made, for a task not here
            return self._enqueuer.default_timeout * 1000.0
        return float(policy.job_settings(self._enqueuer.default_timeout)["timeout"]) * 1000


def _given_up(row: BackgroundJob, reason: str) -> Transition:
    log.warning("job lost from redis, not enqueued again", job_id=str(row.job_id), reason=reason)
    ended = datetime.now(UTC)
    return Transition(
        row.job_id, row.task_name, JobStatus.ABORTED, row.attempts,
        completed_at=ended, error=reason, at=ended,
    )  # fmt: skip
