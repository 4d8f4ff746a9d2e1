"""The lifecycle's statements: the guarded batch UPDATE of `background_jobs` that writes
what SAQ reported (inserting, in the same statement, the rows of jobs first seen here: those
the outbox did not make), and an operator's retry of ended jobs.

Their guards are spelled from `lifecycle.py`'s `ALLOWED_SOURCES` and status sets; the
in-batch fold that prepares a batch is `lifecycle.fold`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Executable, Row, TextClause, text

from app.jobs.ids import created_between
from app.jobs.jsonb import to_json
from app.jobs.lifecycle import (
    ALLOWED_SOURCES,
    TERMINAL_STATUSES,
    JobStatus,
    NewRow,
    Transition,
    fold,
)
from app.jobs.record.counting import counted

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
# What a moved row tells the events it is published in (`MovedRow`), whether it has
# children waiting for it (`Written.ended_parents`), and what `job_stats` counts of it
# (app/jobs/record/counting.py).
_MOVED = "job_id, task_name, queue, user_id, project_id, has_dependents, status"
_COUNTED = f"{_MOVED}, created_at, started_at, completed_at"
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
      -- The batch's ids, looked up as such (an index scan of them, whatever the plan), in
      -- the partitions their times fall in.
      AND b.job_id = ANY(CAST(:job_ids AS uuid[]))
      AND b.created_at BETWEEN CAST(:oldest AS timestamptz) AND CAST(:newest AS timestamptz)
      AND b.status = ANY(string_to_array(v.sources, ','))
      AND b.attempts <= v.attempt
      AND b.manual_retries <= v.manual_retries
    RETURNING {returning}
"""
_RETURNING = ", ".join(f"b.{column}" for column in _COUNTED.split(", "))


def _guarded_update(counts: str) -> TextClause:
    """The rows that moved, and in the same statement what those that ended add to
    `job_stats`."""
    update = _UPDATE.format(
        batch=f"unnest({_BATCH_COLUMNS}) AS v({_BATCH_NAMES})", returning=_RETURNING
    )
    return text(
        f"""
    WITH moved AS ({update}){counts}
    SELECT {_MOVED} FROM moved
    """  # noqa: S608 - built from this module's constants only
    )


def _first_seen_and_update(counts: str) -> TextClause:
    """A batch with jobs the outbox did not make: their rows are inserted by the same
    statement, already in the state the batch's fold reached (the UPDATE, which runs on the
    statement's snapshot, cannot see them). A row that exists already (another process was
    first, or the job was enqueued again from its row) is updated as usual."""
    update = _UPDATE.format(batch="v", returning=_RETURNING)
    return text(
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
        RETURNING {_COUNTED}
    ),
    updated AS ({update}),
    moved AS (SELECT {_COUNTED} FROM inserted UNION ALL SELECT {_COUNTED} FROM updated){counts}
    SELECT {_MOVED} FROM moved
    """  # noqa: S608 - built from this module's constants only
    )


# A batch's statement: `first_seen` inserts rows too; `ends`: some transition of the batch
# is to a final status, so the counts are written (a batch of starts pays nothing for them).
_BATCH_STATEMENTS = {
    (first_seen, ends): (_first_seen_and_update if first_seen else _guarded_update)(
        counted("moved") if ends else ""
    )
    for first_seen in (False, True)
    for ends in (False, True)
}
GUARDED_UPDATE = _BATCH_STATEMENTS[False, True]
FIRST_SEEN_AND_UPDATE = _BATCH_STATEMENTS[True, True]

_ENDED_VALUES = frozenset(status.value for status in TERMINAL_STATUSES)
# The statuses each status may follow, as the statement's comma-separated text argument.
_SOURCES = {
    target: ",".join(sorted(source.value for source in sources))
    for target, sources in ALLOWED_SOURCES.items()
}


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
    """A batch's outcome: the transitions that took effect, each moved row's facts, and the
    rows with dependents that ended (their children are released or aborted next)."""

    applied: list[Transition]
    rows: dict[UUID, MovedRow]
    ended_parents: dict[UUID, JobStatus] = field(default_factory=dict)


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
        **_created_between(f.last.job_id for f in batch),
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
    ends = any(f.last.status in TERMINAL_STATUSES for f in batch)
    statement = _BATCH_STATEMENTS[any(new_rows), ends]
    rows = await execute(statement, parameters)
    moved = {row[0]: MovedRow.of(row) for row in rows}
    ended_parents = {
        values[0]: JobStatus(values[6])
        for values in map(tuple, rows)
        if values[5:6] == (True,) and values[6] in _ENDED_VALUES
    }
    applied = [
        t
        for t in transitions
        if t.job_id in moved and not any(t is i for i in folded[t.job_id].ignored)
    ]
    return Written(applied, moved, ended_parents)


def _created_between(job_ids: Iterable[UUID]) -> dict[str, datetime]:
    """The bounds on `created_at` the statements read between (only those partitions)."""
    oldest, newest = created_between(job_ids)
    return {"oldest": oldest, "newest": newest}


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
