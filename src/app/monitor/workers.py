"""The workers page (`/monitor/workers`): each live worker process (id, host, pid, queue,
concurrency, start, last report) and the jobs it runs now, with links; the workers that stopped
reporting with rows still running on them, flagged. The same reads as `GET /api/v1/workers`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from litestar_saq import TaskQueues

from app.jobs.reads.workers import LiveWorker, RunningJob, Workers, WorkersNow
from app.monitor.errors import PAGE_ERRORS
from app.monitor.pages import MONITOR_ROLES, page
from app.monitor.views import duration, moment

log = structlog.get_logger(__name__)
REFRESH_SECONDS = 5  # how often an open page redraws itself


@dataclass(frozen=True, slots=True)
class JobLine:
    job_id: str | None
    key: str
    task_name: str
    running_for: str


@dataclass(frozen=True)
class WorkerLine:
    id: str
    queue: str
    host: str
    pid: str
    concurrency: str
    started: str
    up_for: str
    reported: str  # how long ago it last reported
    jobs: list[JobLine]
    listed: bool
    complete: str
    failed: str


class MonitorWorkers(Controller):
    path = "/monitor"
    opt = MONITOR_ROLES
    include_in_schema = False
    exception_handlers = PAGE_ERRORS

    @get("/workers", name="monitor:workers")
    async def workers(
        self,
        request: Request[Any, Any, Any],
        task_queues: NamedDependency[TaskQueues],
        workers: NamedDependency[Workers],
    ) -> Template:
        """The live workers and the lost ones; `?part=body` for a live redraw."""
        now = datetime.now(UTC)
        problem = None
        try:
            found = await workers.now(task_queues.queues.values())
        except Exception as exc:  # Redis away: say so, the page still renders
            log.warning("workers page without Redis", error=str(exc))
            found, problem = WorkersNow(), "Redis cannot be reached: the workers are unknown."
        name = "workers_body.html" if request.query_params.get("part") == "body" else "workers.html"
        return page(
            name,
            request,
            workers=[worker_line(worker, now) for worker in found.workers],
            lost=[
                (lost.id, lost.queue, [_job_line(job, now) for job in lost.running])
                for lost in found.lost
            ],
            capped=found.scan_capped,
            problem=problem,
            now=now,
            refresh_seconds=REFRESH_SECONDS,
        )


def worker_line(worker: LiveWorker, now: datetime) -> WorkerLine:
    who = worker.identity
    return WorkerLine(
        id=worker.id,
        queue=worker.queue,
        host=who.host or "—",
        pid=str(who.pid) if who.pid is not None else "—",
        concurrency=str(who.concurrency) if who.concurrency is not None else "—",
        started=moment(who.started_at),
        up_for=_since(who.started_at, now),
        reported=_since(who.reported_at, now),
        jobs=[_job_line(job, now) for job in worker.running],
        listed=worker.listed,
        complete=_count(worker.stats.get("complete")),
        failed=_count(worker.stats.get("failed")),
    )


def _job_line(job: RunningJob, now: datetime) -> JobLine:
    return JobLine(
        job_id=job.job_id,
        key=job.key,
        task_name=job.task_name or "(row not written yet)",
        running_for=_since(job.started_at, now),
    )


def _since(moment_: datetime | None, now: datetime) -> str:
    return duration(max((now - moment_).total_seconds(), 0.0)) if moment_ else "—"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"
