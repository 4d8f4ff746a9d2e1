"""A tracked job's state machine: its statuses, the moves allowed between them, what SAQ
reports as a `Transition`, and the fold of a batch's transitions into each row's next state.
A leaf: the statements that write the fold are `lifecycle_sql.py`'s.

`ALLOWED_MOVES` is the one statement of the rules. The named status sets, the SQL guard, the
in-batch fold, and the table's CHECK constraint and partial index all derive from it. SAQ's
own words are used, except `running` for SAQ's `active`, so `/saq` and the table speak
nearly one language.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from saq.job import Job as SaqJob

from app.jobs.ids import created_at_of
from app.jobs.jsonb import to_json


class JobStatus(StrEnum):
    WAITING = "waiting"  # for its parents (`after=`): recorded, not on the queue yet
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"


# status -> the statuses a row in it may move to. A final row never moves: a late or
# duplicate event (a retry's `queued` after the next attempt started, a second delivery of
# a finished job) must not rewrite history. A waiting row is released (`queued`) when its
# last parent completes, or aborted when one ends otherwise; nothing moves a row back to
# waiting but an operator's retry of its parent (record/dependencies.py), and a waiting row
# never runs: its job is not on the queue.
_ON_QUEUE = frozenset(JobStatus) - {JobStatus.WAITING}
ALLOWED_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.ABORTED}),
    JobStatus.QUEUED: _ON_QUEUE,
    JobStatus.RUNNING: _ON_QUEUE,
    JobStatus.COMPLETE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.ABORTED: frozenset(),
}
TERMINAL_STATUSES = frozenset(status for status, moves in ALLOWED_MOVES.items() if not moves)
UNFINISHED_STATUSES = frozenset(JobStatus) - TERMINAL_STATUSES
# The unfinished rows whose job is on the queue (or should be): what the reconciler compares
# with Redis. A waiting row's job is not there until it is released.
ON_QUEUE_STATUSES = UNFINISHED_STATUSES - {JobStatus.WAITING}
# The one way out of a final status: an operator's manual retry (`RETRY_ENDED` in
# record/retry.py), not an event, so it is not in ALLOWED_MOVES. A completed job is not run
# again.
RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.ABORTED})
# target -> the statuses a row may be in when it moves there: what the SQL guard checks.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    target: frozenset(source for source, moves in ALLOWED_MOVES.items() if target in moves)
    for target in JobStatus
}


def can_move(source: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_MOVES[source]


def status_in(statuses: Iterable[JobStatus]) -> str:
    """`status IN ('queued', ...)` in the enum's order: the spelling the migrations wrote."""
    chosen = set(statuses)
    return "status IN ({})".format(", ".join(f"'{s.value}'" for s in JobStatus if s in chosen))


_FROM_SAQ = {
    "new": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "active": JobStatus.RUNNING,
    "aborting": JobStatus.RUNNING,
    "complete": JobStatus.COMPLETE,
    "failed": JobStatus.FAILED,
    "aborted": JobStatus.ABORTED,
}


def from_saq(status: str) -> JobStatus:
    """Translate a SAQ `Status` value (or its string) into the table's word."""
    return _FROM_SAQ[str(getattr(status, "value", status))]


# SAQ's own reasons, said so that a person reading the row understands them.
SAQ_REASONS = {
    "cancelled": "re-queued: the worker shut down before the job finished",
    "swept": "swept: the job's worker stopped responding while it ran",
}


def describe_error(exception: BaseException | None, saq_error: str | None) -> str | None:
    """One line a person can read: the exception if there is one, else SAQ's reason."""
    if exception is not None:
        message = str(exception)
        return f"{type(exception).__name__}: {message}" if message else type(exception).__name__
    if not saq_error:
        return None
    last = saq_error.strip().splitlines()[-1]
    if last in SAQ_REASONS:
        return SAQ_REASONS[last]
    # A traceback's last line names the exception with its module: keep the class name.
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+([A-Za-z_]\w*)(?=:|$)", r"\1", last)


def epoch_ms_to_datetime(millis: int | float | None) -> datetime | None:
    """SAQ keeps job times as epoch milliseconds; 0 means unset."""
    return datetime.fromtimestamp(millis / 1000, tz=UTC) if millis else None


# `job.meta` keys. A job the outbox made has its row's `job_id` as its SAQ key; any other job
# (cron, `scheduled=`, a caller's key, a plain `queue.enqueue`) carries a row id of its own.
ROW_ID = "job_id"
# Set on the jobs the outbox makes (their key is their row's job_id, the row exists): a job
# with neither this nor a row id was made by a plain SAQ producer and has no row yet.
FROM_OUTBOX = "outbox"
CRON = "cron"  # the schedule of a cron run, put there by the worker's settings
# Set on a job whose row had children waiting for it when it was enqueued: its end is
# written at once, not after the recorder's gather interval (a chain is latency-bound).
HAS_DEPENDENTS = "has_dependents"
# How many times an operator retried the row when this job was enqueued (absent: never).
# Events of an earlier run carry a smaller number, so they cannot touch the retried row.
MANUAL_RETRIES = "manual_retries"


def manual_retries_of(job: SaqJob) -> int:
    value = job.meta.get(MANUAL_RETRIES) if job.meta else None
    return value if isinstance(value, int) else 0


class UntrackedJobError(LookupError):
    """A job with neither a row id in its meta nor a UUID key: no row can be its."""


def row_id_of(job: SaqJob) -> UUID | None:
    """The `background_jobs.job_id` of a SAQ job: its stamped row id, else its UUID key."""
    stamped = job.meta.get(ROW_ID) if job.meta else None
    try:
        return UUID(str(stamped)) if stamped else UUID(job.key)
    except (ValueError, TypeError, AttributeError):
        return None


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; one such character must not block every write.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _created_at(job: SaqJob) -> datetime:
    row_id = row_id_of(job)
    spelled = created_at_of(row_id) if row_id is not None else None
    return spelled or epoch_ms_to_datetime(job.queued) or datetime.now(UTC)


@dataclass(frozen=True)
class NewRow:
    """What the row of a job the outbox did not make is created with, when first seen."""

    job_key: str
    task_name: str
    queue: str
    arguments: str  # JSON
    max_attempts: int
    cron: str | None
    scheduled_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, job: SaqJob) -> NewRow:
        cron = job.meta.get(CRON)
        return cls(
            job_key=str(_text(job.key)),
            task_name=str(_text(job.function))[:200],
            queue=job.queue.name if job.queue is not None else "",
            arguments=to_json(job.kwargs or {}),
            max_attempts=max(job.retries, 1),
            cron=_text(str(cron)) if cron else None,
            scheduled_at=datetime.fromtimestamp(job.scheduled, tz=UTC) if job.scheduled else None,
            # The time its row id spells (the row's partition); an older id spells none.
            created_at=_created_at(job),
        )


@dataclass(frozen=True)
class Transition:
    """One thing that happened to a job, as SAQ reports it."""

    job_id: UUID
    task: str
    status: JobStatus
    attempt: int
    worker_id: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    at: datetime | None = None  # when an error happened (its entry in the row's history)
    new_row: NewRow | None = None  # the row to create if there is none yet (not an outbox job)
    manual_retries: int = 0  # the run of the row it belongs to (see MANUAL_RETRIES)
    urgent: bool = False  # an end that releases children: written without waiting

    @classmethod
    def of(cls, job: SaqJob, exception: BaseException | None = None) -> Transition:
        """The transition a SAQ job's current state stands for.

        Raises `UntrackedJobError` for a job no row can belong to (see `row_id_of`).
        """
        job_id = row_id_of(job)
        if job_id is None:
            raise UntrackedJobError(f"job {job.key!r} has no row id and no UUID key")
        status = from_saq(job.status)
        # A retried job keeps its last traceback in `error` while it runs again: only a job
        # that is waiting for a retry, or has ended, reports it.
        failed = status is not JobStatus.RUNNING and status is not JobStatus.COMPLETE
        failed = failed and bool(job.error)
        return cls(
            job_id=job_id,
            task=job.function,
            status=status,
            attempt=job.attempts,
            worker_id=job.worker_id,
            started_at=epoch_ms_to_datetime(job.started),
            completed_at=epoch_ms_to_datetime(job.completed)
            if status in TERMINAL_STATUSES
            else None,
            result=job.result if status is JobStatus.COMPLETE else None,
            error=_text(describe_error(exception, job.error)) if failed else None,
            traceback=_text(job.error) if failed else None,
            at=datetime.now(UTC) if failed else None,
            new_row=NewRow.of(job) if job.meta and ROW_ID in job.meta else None,
            manual_retries=manual_retries_of(job),
            urgent=status in TERMINAL_STATUSES and bool(job.meta and job.meta.get(HAS_DEPENDENTS)),
        )


@dataclass
class FoldedJob:
    """The transitions of one job within a batch, folded into the row's next state."""

    first: Transition
    last: Transition
    worker_id: str | None = None
    started_at: datetime | None = None
    error: str | None = None
    traceback: str | None = None
    new_errors: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[Transition] = field(default_factory=list)
    new_row: NewRow | None = None

    def add(self, transition: Transition) -> None:
        self.new_row = self.new_row or transition.new_row
        # The guarded UPDATE's rules, applied within the batch: only allowed moves, and
        # nothing from an older attempt (SAQ #277 can finish a job twice) or an older run.
        if self.last is not transition and (
            not can_move(self.last.status, transition.status)
            or transition.attempt < self.last.attempt
            or transition.manual_retries < self.last.manual_retries
        ):
            self.ignored.append(transition)
            return
        self.last = transition
        self.worker_id = transition.worker_id or self.worker_id
        self.started_at = transition.started_at or self.started_at
        if transition.error is not None:
            self.error, self.traceback = transition.error, transition.traceback
            at = transition.at or transition.completed_at or datetime.now(UTC)
            self.new_errors.append(
                {
                    "attempt": transition.attempt,
                    "at": at.isoformat(),
                    "status": transition.status.value,
                    "error": transition.error,
                    "traceback": transition.traceback,
                }
            )


def fold(transitions: Iterable[Transition]) -> dict[UUID, FoldedJob]:
    """Each job's transitions in the batch, folded in the order they were reported."""
    folded: dict[UUID, FoldedJob] = {}
    for transition in transitions:
        if transition.job_id not in folded:
            folded[transition.job_id] = FoldedJob(transition, transition)
        folded[transition.job_id].add(transition)
    return folded
