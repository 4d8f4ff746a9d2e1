"""What each lifecycle event reports, as `TrackedQueue` builds it, applied one at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.reads.service import BackgroundJobService


async def mark_running(
    jobs: BackgroundJobService, job_id: UUID, *, attempt: int, worker_id: str, started_at: datetime
) -> bool:
    transition = Transition(
        job_id, "t", JobStatus.RUNNING, attempt, worker_id=worker_id, started_at=started_at
    )
    return bool(await jobs.apply([transition]))


async def mark_complete(
    jobs: BackgroundJobService, job_id: UUID, *, attempt: int, result: Any, completed_at: datetime
) -> bool:
    transition = Transition(
        job_id, "t", JobStatus.COMPLETE, attempt, result=result, completed_at=completed_at
    )
    return bool(await jobs.apply([transition]))


async def mark_retrying(
    jobs: BackgroundJobService, job_id: UUID, *, attempt: int, error: str, traceback: str | None
) -> bool:
    transition = Transition(
        job_id, "t", JobStatus.QUEUED, attempt, error=error, traceback=traceback
    )
    return bool(await jobs.apply([transition]))


async def mark_failed(
    jobs: BackgroundJobService,
    job_id: UUID,
    *,
    attempt: int,
    error: str,
    traceback: str | None,
    completed_at: datetime,
) -> bool:
    transition = Transition(
        job_id,
        "t",
        JobStatus.FAILED,
        attempt,
        error=error,
        traceback=traceback,
        completed_at=completed_at,
    )
    return bool(await jobs.apply([transition]))
