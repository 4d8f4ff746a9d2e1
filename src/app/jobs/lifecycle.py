"""A tracked job's state machine: its statuses, the moves allowed between them, and how what
SAQ reports becomes one guarded UPDATE of `background_jobs` (plus, in the same statement,
the rows of jobs first seen here: those the outbox did not make).

`ALLOWED_MOVES` is the one statement of the rules. The named status sets, the SQL guard, the
in-batch fold, and the table's CHECK constraint and partial index all derive from it. SAQ's
own words are used, except `running` for SAQ's `active`, so `/saq` and the table speak
nearly one language.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

import msgspec
from saq.job import Job as SaqJob
from sqlalchemy import Executable, Row, text


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"


# status -> the statuses a row in it may move to. A final row never moves: a late or
# duplicate event (a retry's `queued` after the next attempt started, a second delivery of
# a finished job) must not rewrite history.
ALLOWED_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(JobStatus),
    JobStatus.RUNNING: frozenset(JobStatus),
    JobStatus.COMPLETE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.ABORTED: frozenset(),
}
TERMINAL_STATUSES = frozenset(status for status, moves in ALLOWED_MOVES.items() if not moves)
UNFINISHED_STATUSES = frozenset(JobStatus) - TERMINAL_STATUSES
# The one way out of a final status: an operator's manual retry (`RETRY_ENDED` below), not
# an event, so it is not in ALLOWED_MOVES. A completed job is not run again.
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
CRON = "cron"  # the schedule of a cron run, put there by the worker's settings
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
            created_at=epoch_ms_to_datetime(job.queued) or datetime.now(UTC),
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


# Runs one statement, committed on return, and gives back its rows (a held connection's
# `execute`, or a session's).
Execute = Callable[[Executable, Mapping[str, Any]], Awaitable[Sequence[Row[Any]]]]

# One statement for a whole batch: unnest the batch's columns and join them to the rows.
# A row moves only from an allowed status (`sources`) and only forward in attempts.
_BATCH_COLUMNS = """
        CAST(:job_ids AS uuid[]), CAST(:statuses AS text[]), CAST(:sources AS text[]),
        CAST(:attempts AS integer[]), CAST(:worker_ids AS text[]),
        CAST(:started AS timestamptz[]), CAST(:completed AS timestamptz[]),
        CAST(:results AS jsonb[]), CAST(:errors AS text[]), CAST(:tracebacks AS text[]),
        CAST(:new_errors AS jsonb[]), CAST(:manual_retries AS integer[])"""
_BATCH_NAMES = """job_id, status, sources, attempt, worker_id, started_at, completed_at, result,
           error, traceback, new_errors, manual_retries"""
# What a moved row tells the events it is published in (`MovedRow`).
_MOVED = "job_id, task_name, queue, user_id, project_id"
_UPDATE = """
    UPDATE background_jobs AS b SET
        status = v.status,
        attempts = v.attempt,
        worker_id = COALESCE(v.worker_id, b.worker_id),
        started_at = COALESCE(v.started_at, b.started_at),
        completed_at = v.completed_at,
        result = CASE WHEN v.status = 'complete' THEN v.result ELSE b.result END,
        error = COALESCE(v.error, b.error),
        traceback = COALESCE(v.traceback, b.traceback),
        errors = COALESCE(b.errors || v.new_errors, b.errors),
        -- A task's progress is its attempt's: a new attempt starts without any.
        progress = CASE WHEN v.attempt > b.attempts THEN NULL ELSE b.progress END,
        progress_message = CASE WHEN v.attempt > b.attempts THEN NULL ELSE b.progress_message END,
        updated_at = now()
    FROM {batch}
    WHERE b.job_id = v.job_id
      AND b.status = ANY(string_to_array(v.sources, ','))
      AND b.attempts <= v.attempt
      AND b.manual_retries <= v.manual_retries
    RETURNING b.job_id, b.task_name, b.queue, b.user_id, b.project_id
"""
GUARDED_UPDATE = text(_UPDATE.format(batch=f"unnest({_BATCH_COLUMNS}) AS v({_BATCH_NAMES})"))

# A batch with jobs the outbox did not make: their rows are inserted by the same statement,
# already in the state the batch's fold reached (the UPDATE, which runs on the statement's
# snapshot, cannot see them). A row that exists already (another process was first, or the
# job was enqueued again from its row) is updated as usual.
FIRST_SEEN_AND_UPDATE = text(
    f"""
    WITH v AS (
        SELECT * FROM unnest({_BATCH_COLUMNS},
            CAST(:ids AS uuid[]), CAST(:job_keys AS text[]), CAST(:crons AS text[]),
            CAST(:scheduled AS timestamptz[]), CAST(:task_names AS text[]),
            CAST(:queues AS text[]), CAST(:arguments AS jsonb[]),
            CAST(:max_attempts AS integer[]), CAST(:created AS timestamptz[])
        ) AS v({_BATCH_NAMES}, id, job_key, cron, scheduled_at, task_name, queue, arguments,
               max_attempts, created_at)
    ),
    inserted AS (
        INSERT INTO background_jobs (id, job_id, job_key, cron, scheduled_at, task_name, queue,
            arguments, max_attempts, status, attempts, worker_id, started_at, completed_at,
            result, error, traceback, errors, created_at, updated_at)
        SELECT id, job_id, job_key, cron, scheduled_at, task_name, queue, arguments,
            max_attempts, status, attempt, worker_id, started_at, completed_at,
            CASE WHEN status = 'complete' THEN result END, error, traceback,
            COALESCE(new_errors, '[]'::jsonb), created_at, now()
        FROM v WHERE task_name IS NOT NULL
        ON CONFLICT DO NOTHING
        RETURNING {_MOVED}
    ),
    updated AS ({_UPDATE.format(batch="v")})
    SELECT {_MOVED} FROM inserted UNION ALL SELECT {_MOVED} FROM updated
    """  # noqa: S608 - built from this module's constants only
)

# The statuses each status may follow, as the statement's comma-separated text argument.
_SOURCES = {
    target: ",".join(sorted(source.value for source in sources))
    for target, sources in ALLOWED_SOURCES.items()
}

_JSON = msgspec.json.Encoder(enc_hook=str)  # what JSON cannot say (a UUID, a date) as text
# A NUL character, escaped (an even run of backslashes before it is not its escape).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def to_json(value: Any) -> str:
    encoded = _JSON.encode(value).decode()
    # jsonb cannot hold NUL; one such character must not block every write.
    return _JSON_NUL.sub(r"\1\\ufffd", encoded) if "\\u0000" in encoded else encoded


@dataclass(frozen=True, slots=True)
class MovedRow:
    """What the events of a row that moved say besides the transition (`_MOVED`)."""

    task_name: str | None = None
    queue: str | None = None
    user_id: UUID | None = None
    project_id: UUID | None = None

    @classmethod
    def of(cls, row: Sequence[Any]) -> MovedRow:
        return cls(*row[1:5])


@dataclass(frozen=True, slots=True)
class Written:
    """A batch's outcome: the transitions that took effect, and each moved row's facts."""

    applied: list[Transition]
    rows: dict[UUID, MovedRow]


async def apply_transitions(
    execute: Execute, transitions: Sequence[Transition]
) -> list[Transition]:
    """Write a batch of transitions as one guarded UPDATE; returns those that took effect.

    A row that is final, or already at a later attempt or run, is left as it is (that event
    came late or twice). Jobs first seen in this batch get their row in the same statement.
    """
    return (await write_transitions(execute, transitions)).applied


async def write_transitions(execute: Execute, transitions: Sequence[Transition]) -> Written:
    """`apply_transitions`, also returning what the moved rows' events need."""
    folded = fold(transitions)
    if not folded:
        return Written([], {})
    batch = list(folded.values())
    parameters: dict[str, Any] = {
        "job_ids": [f.last.job_id for f in batch],
        "statuses": [f.last.status.value for f in batch],
        "sources": [_SOURCES[f.last.status] for f in batch],
        "attempts": [max(f.first.attempt, f.last.attempt) for f in batch],
        "worker_ids": [f.worker_id for f in batch],
        "started": [f.started_at for f in batch],
        "completed": [f.last.completed_at for f in batch],
        "results": [
            to_json(f.last.result)
            if f.last.status is JobStatus.COMPLETE and f.last.result is not None
            else None
            for f in batch
        ],
        "errors": [f.error for f in batch],
        "tracebacks": [f.traceback for f in batch],
        "new_errors": [to_json(f.new_errors) if f.new_errors else None for f in batch],
        "manual_retries": [f.last.manual_retries for f in batch],
    }
    new_rows = [f.new_row for f in batch]
    if any(new_rows):  # never for the outbox's jobs: their batches stay one plain UPDATE
        parameters.update(_new_row_parameters(new_rows))
    rows = await execute(FIRST_SEEN_AND_UPDATE if any(new_rows) else GUARDED_UPDATE, parameters)
    moved = {row[0]: MovedRow.of(row) for row in rows}
    applied = [
        t
        for t in transitions
        if t.job_id in moved and not any(t is i for i in folded[t.job_id].ignored)
    ]
    return Written(applied, moved)


# An operator's retry of ended jobs: back to `queued` under the same job_id, for at least one
# more attempt, with an entry in the history saying who retried it. One statement for any
# number of jobs; its status guard makes concurrent retries of a job take effect once.
RETRY_ENDED = text(
    f"""
    UPDATE background_jobs SET
        status = 'queued',
        max_attempts = GREATEST(max_attempts, attempts + 1),
        manual_retries = manual_retries + 1,
        completed_at = NULL,
        progress = NULL,
        progress_message = NULL,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempts, 'at', CAST(:at AS text), 'status', 'queued',
            'retried_from', status, 'retried_by', CAST(:actor AS text))),
        updated_at = now()
    WHERE job_id = ANY(CAST(:job_ids AS uuid[])) AND {status_in(RETRYABLE_STATUSES)}
    RETURNING *
    """  # noqa: S608 - built from this module's constants only
)


def retry_parameters(job_ids: Iterable[UUID], actor: str) -> dict[str, Any]:
    return {"job_ids": list(job_ids), "actor": actor, "at": datetime.now(UTC).isoformat()}


# The statement's parameter -> the `NewRow` field it lists.
_NEW_ROW_COLUMNS = {
    "job_keys": "job_key",
    "crons": "cron",
    "scheduled": "scheduled_at",
    "task_names": "task_name",
    "queues": "queue",
    "arguments": "arguments",
    "max_attempts": "max_attempts",
    "created": "created_at",
}


def _new_row_parameters(new_rows: Sequence[NewRow | None]) -> dict[str, list[Any]]:
    """The rows to create, one entry per job of the batch (None: a job that has its row)."""
    columns = {
        name: [getattr(r, attribute) if r else None for r in new_rows]
        for name, attribute in _NEW_ROW_COLUMNS.items()
    }
    columns["ids"] = [uuid4() if r else None for r in new_rows]
    return columns
