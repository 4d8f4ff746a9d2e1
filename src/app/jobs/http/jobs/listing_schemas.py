"""Bodies of the job list, the stats and the queues, their parameters, and the examples
OpenAPI shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIFormat
from litestar.params import QueryParameter

from app.http_common.responses import string_only
from app.jobs.http.shared.schemas import TASK_NAME_MAX, WITHOUT_NUL, JobRead

LIST_LIMIT_MAX = 200
LIST_OFFSET_MAX = 10_000  # `offset` reads every row it skips: cursors go further
STATS_DEFAULT_WINDOW = "1h"


class JobPage(msgspec.Struct):
    """A page of jobs, newest first; `next_cursor` continues after its last row."""

    items: list[JobRead]
    # How many jobs match, counted up to 1,000; more than that: 1,000 and not exact.
    # null for a search with text or argument terms, which is not counted.
    total: int | None
    total_is_exact: bool
    limit: int
    offset: int
    # Pass it as `cursor` (with the same filters) for the next page; null: this is the last.
    # A search with text or argument terms may return fewer than `limit` items and a cursor:
    # it stopped after looking at 10,000 jobs.
    next_cursor: str | None


class StatusCounts(msgspec.Struct):
    queued: int
    running: int
    complete: int
    failed: int
    aborted: int
    waiting: int  # for other jobs (`after=`): not on the queue yet


class Percentiles(msgspec.Struct):
    """Seconds."""

    p50: float
    p95: float


class TaskStats(msgspec.Struct):
    """One task's jobs created in the window."""

    task_name: str
    total: int
    counts: StatusCounts
    # failed / (complete + failed + aborted); null when none has ended.
    failure_rate: float | None
    run_seconds: Percentiles | None  # from the (last) start to the end, of ended jobs
    wait_seconds: Percentiles | None  # from the row's creation to the (last) start

    @classmethod
    def from_row(cls, row: Any, failure_rate: float | None) -> TaskStats:
        def percentiles(values: list[float] | None) -> Percentiles | None:
            return Percentiles(*values) if values else None

        counts = StatusCounts(*[row[name] for name in StatusCounts.__struct_fields__])
        return cls(
            task_name=row["task_name"],
            total=row["total"],
            counts=counts,
            failure_rate=failure_rate,
            run_seconds=percentiles(row["run_seconds"]),
            wait_seconds=percentiles(row["wait_seconds"]),
        )


class JobStats(msgspec.Struct):
    window: str
    since: datetime  # jobs created at or after this moment
    tasks: list[TaskStats]


class WorkerReport(msgspec.Struct):
    """A worker that reported to its queue within the last heartbeat (SAQ's worker info)."""

    id: str
    complete: int | None
    failed: int | None
    retried: int | None
    aborted: int | None
    uptime_ms: int | None


class QueueReport(msgspec.Struct):
    name: str
    queued: int  # waiting for a worker
    active: int  # taken by a worker
    scheduled: int  # to run later (a retry's delay, a scheduled time)
    live_workers: int
    workers: list[WorkerReport]
    # Paused: its workers take none of its jobs (`POST /api/v1/queues/{name}/pause`).
    paused: bool = False
    paused_by: str | None = None
    paused_at: datetime | None = None


class QueueList(msgspec.Struct):
    queues: list[QueueReport]


_JOB = {
    "job_id": "0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f",
    "task_name": "trigger_test",
    "queue": "background-jobs",
    "status": "failed",
    "arguments": {"message": "Test message", "sleep_seconds": 0.1, "fail": True},
    "result": None,
    "error": "TestTaskFailure: failed on request",
    "traceback": "Traceback (most recent call last): ...",
    "errors": [
        {
            "attempt": 1,
            "at": "2026-11-30T10:00:00.240000+00:00",
            "status": "failed",
            "error": "TestTaskFailure: failed on request",
            "traceback": "Traceback (most recent call last): ...",
        }
    ],
    "attempts": 1,
    "max_attempts": 1,
    "user_id": None,
    "project_id": "6f1c2b9e-3d4a-4e5f-8a7b-9c0d1e2f3a4b",
    "worker_id": "worker-1",
    "enqueued_by": "bgj_Xb3k9QeZ",
    "job_key": None,
    "cron": None,
    "scheduled_at": None,
    "created_at": "2026-11-30T10:00:00.123456Z",
    "updated_at": "2026-11-30T10:00:00.250000Z",
    "started_at": "2026-11-30T10:00:00.130000Z",
    "completed_at": "2026-11-30T10:00:00.240000Z",
    "progress": None,
    "progress_message": None,
}
PAGE_EXAMPLE = {
    "items": [_JOB],
    "total": 1,
    "total_is_exact": True,
    "limit": 50,
    "offset": 0,
    "next_cursor": None,
}
STATS_EXAMPLE = {
    "window": "1h",
    "since": "2026-11-30T09:00:00Z",
    "tasks": [
        {
            "task_name": "trigger_test",
            "total": 120,
            "counts": {
                "queued": 3,
                "running": 2,
                "complete": 105,
                "failed": 8,
                "aborted": 2,
                "waiting": 0,
            },
            "failure_rate": 0.0696,
            "run_seconds": {"p50": 0.105, "p95": 0.31},
            "wait_seconds": {"p50": 0.004, "p95": 0.02},
        }
    ],
}
QUEUES_EXAMPLE = {
    "queues": [
        {
            "name": "background-jobs",
            "queued": 12,
            "active": 10,
            "scheduled": 1,
            "live_workers": 1,
            "paused": False,
            "paused_by": None,
            "paused_at": None,
            "workers": [
                {
                    "id": "8c6f2e1a-0b9d-4c3e-a2f1-5d6e7f8a9b0c",
                    "complete": 5120,
                    "failed": 12,
                    "retried": 3,
                    "aborted": 1,
                    "uptime_ms": 3600000,
                }
            ],
        }
    ]
}


def success(model: type, description: str, example: dict[str, Any]) -> dict[int, ResponseSpec]:
    """A 200 answer with its body's schema and an example (replaces Litestar's own)."""
    return {
        200: ResponseSpec(
            data_container=model,
            description=description,
            examples=[Example(summary="an answer", value=example)],
            generate_examples=False,
        )
    }


def text_parameter(description: str, example: str, maximum: int = TASK_NAME_MAX) -> Any:
    return QueryParameter(
        description=description,
        max_length=maximum,
        pattern=WITHOUT_NUL,
        schema_extra=string_only(),
        examples=[Example(value=example)],
    )


def uuid_parameter(description: str) -> Any:
    return QueryParameter(
        description=description, schema_extra=string_only(format=OpenAPIFormat.UUID)
    )


def moment_parameter(description: str) -> Any:
    return QueryParameter(
        description=description,
        schema_extra=string_only(format=OpenAPIFormat.DATE_TIME),
        examples=[Example(value="2026-11-30T10:00:00Z")],
    )
