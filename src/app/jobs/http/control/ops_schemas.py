"""The bodies of `/api/v1/schedules`, `/api/v1/workers` and a queue's pause, and their examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec


class ScheduleRun(msgspec.Struct):
    """One run of a schedule, from its row."""

    job_id: UUID
    status: str
    scheduled_at: datetime | None  # the time the schedule gave it
    created_at: datetime  # when the worker enqueued it (ahead of its time)
    started_at: datetime | None
    completed_at: datetime | None
    run_seconds: float | None  # start of its last attempt to its end
    attempts: int
    error: str | None


class ScheduleRead(msgspec.Struct):
    name: str  # its task's name
    cron: str  # SAQ's cron syntax, UTC; a sixth field counts seconds
    queue: str
    job_key: str | None  # SAQ's key of its runs (`cron:<name>`); None: not unique
    next_run_at: datetime  # by its cron expression, paused or not
    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    runs: list[ScheduleRun]  # newest first


class ScheduleList(msgspec.Struct):
    schedules: list[ScheduleRead]


class RunningJobRead(msgspec.Struct):
    key: str  # SAQ's key
    job_id: str | None  # the row's: GET /api/v1/jobs/{job_id}
    task_name: str | None  # None: its row is not written yet
    started_at: datetime | None


class WorkerRead(msgspec.Struct):
    """A live worker process: SAQ's worker record and what the tracked worker adds to it."""

    id: str
    queue: str
    host: str | None  # None: a worker that does not say (a plain SAQ worker)
    pid: int | None
    concurrency: int | None
    started_at: datetime | None
    last_report_at: datetime | None  # on the worker's clock
    last_report_age_seconds: float | None  # as this API process's clock sees it
    complete: int | None
    failed: int | None
    retried: int | None
    aborted: int | None
    uptime_ms: int | None
    running: list[RunningJobRead]
    running_from: Literal["listing", "rows"]  # the worker's own list, or the rows naming it


class LostWorkerRead(msgspec.Struct):
    """A worker with no record left (it stopped reporting) and rows still running on it."""

    id: str
    queue: str
    running: list[RunningJobRead]


class WorkerList(msgspec.Struct):
    workers: list[WorkerRead]
    lost_workers: list[LostWorkerRead]
    running_rows_capped: bool  # more running rows than were looked at


_RUN = {
    "job_id": "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f",
    "status": "complete",
    "scheduled_at": "2026-12-01T03:00:00Z",
    "created_at": "2026-11-30T03:00:01.204Z",
    "started_at": "2026-12-01T03:00:00.012Z",
    "completed_at": "2026-12-01T03:00:41.530Z",
    "run_seconds": 41.518,
    "attempts": 1,
    "error": None,
}
SCHEDULE_EXAMPLE: dict[str, Any] = {
    "name": "nightly_report",
    "cron": "0 3 * * *",
    "queue": "background-jobs",
    "job_key": "cron:nightly_report",
    "next_run_at": "2026-12-02T03:00:00Z",
    "paused": True,
    "paused_by": "bgj_Xb3k9QeZ",
    "paused_at": "2026-12-01T12:04:10.118Z",
    "runs": [_RUN],
}
SCHEDULES_EXAMPLE = {"schedules": [SCHEDULE_EXAMPLE]}
_RUNNING = {
    "key": "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f",
    "job_id": "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f",
    "task_name": "trigger_test",
    "started_at": "2026-12-01T12:04:09.500Z",
}
_LOST_JOB = "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e80"
WORKERS_EXAMPLE = {
    "workers": [
        {
            "id": "8c6f2e1a-0b9d-4c3e-a2f1-5d6e7f8a9b0c",
            "queue": "background-jobs",
            "host": "worker-7d9f",
            "pid": 41,
            "concurrency": 10,
            "started_at": "2026-12-01T08:00:02.310Z",
            "last_report_at": "2026-12-01T12:04:08.002Z",
            "last_report_age_seconds": 2.4,
            "complete": 5120,
            "failed": 12,
            "retried": 3,
            "aborted": 1,
            "uptime_ms": 14645692,
            "running": [_RUNNING],
            "running_from": "rows",
        }
    ],
    "lost_workers": [
        {
            "id": "2b1d9c7e-5f3a-4e8b-9c1d-0e2f3a4b5c6d",
            "queue": "background-jobs",
            "running": [{**_RUNNING, "key": _LOST_JOB, "job_id": _LOST_JOB}],
        }
    ],
    "running_rows_capped": False,
}


class QueuePauseRead(msgspec.Struct):
    """A queue's pause after a pause, resume or drain call."""

    name: str
    paused: bool
    paused_by: str | None  # the actor, as the audit log has it
    paused_at: datetime | None
    running: int  # its jobs taken by a worker and not yet ended (a drain waits for 0)


QUEUE_PAUSE_EXAMPLE: dict[str, Any] = {
    "name": "background-jobs",
    "paused": True,
    "paused_by": "bgj_Xk3f9a2b",
    "paused_at": "2026-12-07T15:00:00Z",
    "running": 3,
}
