"""A running task's progress: how far it is (0..1) and a short message, on its row.

A task calls `await report_progress(ctx, 0.5, "halfway")` (or SAQ's own
`await ctx["job"].update(progress=0.5)`). The queue reports it to the recorder like any
transition; the recorder keeps only the latest update of each job until its next write, and
writes them with `apply_progress`: one UPDATE that touches only the progress columns, and only
of a row that is running the same attempt and run. A late update (the job has ended, or moved
on to its next attempt) changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from saq.job import Job as SaqJob
from sqlalchemy import text

from app.jobs.lifecycle import manual_retries_of, row_id_of
from app.jobs.record.statements import Execute, MovedRow

PROGRESS_MESSAGE = "progress_message"  # its `job.meta` key
PROGRESS_MESSAGE_MAX = 200  # characters; the column is a varchar(200)


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    job_id: UUID
    attempt: int
    manual_retries: int
    progress: float
    message: str | None = None

    @classmethod
    def of(cls, job: SaqJob) -> ProgressUpdate | None:
        """The progress a SAQ job carries now; None for a job that no row can be its."""
        job_id = row_id_of(job)
        if job_id is None:
            return None
        message = job.meta.get(PROGRESS_MESSAGE) if job.meta else None
        return cls(
            job_id=job_id,
            attempt=job.attempts,
            manual_retries=manual_retries_of(job),
            progress=clamped(job.progress),
            message=_short(message) if isinstance(message, str) else None,
        )


def clamped(progress: Any) -> float:
    """Within 0..1 whatever the task passed (SAQ stores what it is given)."""
    try:
        value = float(progress)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)


def _short(message: str) -> str:
    # PostgreSQL text cannot hold NUL.
    return message.replace("\x00", "\ufffd")[:PROGRESS_MESSAGE_MAX]


async def report_progress(
    ctx: Mapping[str, Any], progress: float, message: str | None = None
) -> None:
    """From a task: how far it is (0..1) and, optionally, a short message (≤ 200 characters).

    Cheap to call often: the row is written with the next batch of the recorder, which keeps
    only each job's latest update. It also counts as the job's heartbeat in SAQ.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be within 0 and 1, got {progress}")
    job: SaqJob = ctx["job"]
    meta = {key: value for key, value in (job.meta or {}).items() if key != PROGRESS_MESSAGE}
    if message is not None:
        meta[PROGRESS_MESSAGE] = _short(message)
    await job.update(progress=progress, meta=meta)


# Only a running row at the same attempt and run takes it: never an ended row, never a later
# attempt's. Returns what the progress events need (`MovedRow`).
_APPLY = text(
    """
    UPDATE background_jobs AS b SET
        progress = v.progress,
        progress_message = v.message,
        updated_at = now()
    FROM unnest(
        CAST(:job_ids AS uuid[]), CAST(:attempts AS integer[]),
        CAST(:manual_retries AS integer[]), CAST(:progress AS double precision[]),
        CAST(:messages AS text[])
    ) AS v(job_id, attempt, manual_retries, progress, message)
    WHERE b.job_id = v.job_id
      AND b.status = 'running'
      AND b.attempts = v.attempt
      AND b.manual_retries = v.manual_retries
    RETURNING b.job_id, b.task_name, b.queue, b.user_id, b.project_id
    """
)


async def apply_progress(
    execute: Execute, updates: Sequence[ProgressUpdate]
) -> list[tuple[ProgressUpdate, MovedRow]]:
    """Write the latest update of each job in one statement; returns those that took effect."""
    latest = {update.job_id: update for update in updates}
    if not latest:
        return []
    batch = list(latest.values())
    rows = await execute(
        _APPLY,
        {
            "job_ids": [u.job_id for u in batch],
            "attempts": [u.attempt for u in batch],
            "manual_retries": [u.manual_retries for u in batch],
            "progress": [u.progress for u in batch],
            "messages": [u.message for u in batch],
        },
    )
    moved = {row[0]: MovedRow.of(row) for row in rows}
    return [(u, moved[u.job_id]) for u in batch if u.job_id in moved]
