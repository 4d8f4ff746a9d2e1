"""The overview's figures: SAQ's queues and live workers (Redis) and their pauses (PostgreSQL),
and per task the last hour's outcomes from the table (the stats endpoint's statement, and
completed/failed per minute)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from litestar_saq import TaskQueues

from app.jobs.control.queues import QueuePauseState
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reads.stats import failure_rate
from app.monitor.queries import MonitorQueries
from app.monitor.views import duration, moment

log = structlog.get_logger(__name__)
STUCK_SHOWN = 50


@dataclass
class QueueLine:
    name: str
    queued: int
    active: int
    scheduled: int
    workers: list[str]
    paused_by: str | None = None  # paused: its workers take none of its jobs
    paused_at: str = "—"


@dataclass
class TaskLine:
    task_name: str
    complete: int
    failed: int
    aborted: int
    running: int
    queued: int
    waiting: int  # for other jobs: not on the queue yet
    failure_rate: str
    p50: str
    p95: str


@dataclass
class Overview:
    queues: list[QueueLine] = field(default_factory=list)
    redis_error: str | None = None
    tasks: list[TaskLine] = field(default_factory=list)
    minutes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    oldest_queued: str = "—"
    oldest_queued_at: str = "—"
    stuck: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def read(
        cls,
        task_queues: TaskQueues,
        jobs_service: BackgroundJobService,
        queries: MonitorQueries,
        since: datetime,
        now: datetime,
        pauses: Mapping[str, QueuePauseState] | None = None,
    ) -> Overview:
        overview = cls()
        pauses = pauses or {}
        live: set[str] = set()
        try:
            for queue in task_queues.queues.values():
                info = await queue.info()
                workers = sorted(info["workers"])
                live.update(workers)
                pause = pauses.get(info["name"])
                overview.queues.append(
                    QueueLine(
                        info["name"],
                        info["queued"],
                        info["active"],
                        info["scheduled"],
                        workers,
                        paused_by=pause.paused_by if pause else None,
                        paused_at=moment(pause.paused_at) if pause and pause.paused_at else "—",
                    )
                )
        except Exception as exc:  # Redis away: the table's figures still show
            log.warning("overview without queues", error=str(exc))
            overview.redis_error = "Redis cannot be reached: queues and workers are unknown."
        _, stats = await jobs_service.stats(window="1h", project_id=None, now=now)
        for row in stats:
            run = row["run_seconds"] or [None, None]
            ended = row["complete"] + row["failed"] + row["aborted"]
            rate = failure_rate(row["failed"], ended)
            overview.tasks.append(
                TaskLine(
                    task_name=row["task_name"],
                    complete=row["complete"],
                    failed=row["failed"],
                    aborted=row["aborted"],
                    running=row["running"],
                    queued=row["queued"],
                    waiting=row["waiting"],
                    failure_rate="—" if rate is None else f"{rate * 100:.1f} %",
                    p50=duration(run[0]),
                    p95=duration(run[1]),
                )
            )
        minutes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for minute in await queries.per_minute(since):
            minutes[minute["task_name"]].append(minute)
        overview.minutes = {
            task.task_name: minutes.get(task.task_name, []) for task in overview.tasks
        }
        oldest = await queries.oldest_queued()
        if oldest is not None:
            overview.oldest_queued = duration((now - oldest).total_seconds())
            overview.oldest_queued_at = moment(oldest)
        if overview.redis_error is None:
            overview.stuck = [
                {
                    "job_id": str(row["job_id"]),
                    "task_name": row["task_name"],
                    "worker_id": row["worker_id"] or "—",
                    "running_for": duration(
                        (now - row["started_at"]).total_seconds() if row["started_at"] else None
                    ),
                    "updated": moment(row["updated_at"]),
                }
                for row in await queries.running()
                if row["worker_id"] not in live
            ][:STUCK_SHOWN]
        return overview
