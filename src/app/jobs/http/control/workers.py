"""`GET /api/v1/workers`: the live worker processes of the app's queues and what each runs
now, and the workers that stopped reporting with rows still running on them."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar_saq import TaskQueues

from app.auth.guard import BEARER, role
from app.auth.roles import Role
from app.http_common.responses import errors
from app.jobs.http.control.ops_schemas import (
    WORKERS_EXAMPLE,
    LostWorkerRead,
    RunningJobRead,
    WorkerList,
    WorkerRead,
)
from app.jobs.http.jobs.listing_schemas import success
from app.jobs.reads.workers import RunningJob, Workers, WorkersNow


class WorkerController(Controller):
    path = "/api/v1/workers"
    tags = ("queues",)
    opt = role(Role.VIEWER, every_project=True)  # every project's jobs run on them
    security = BEARER

    @get(
        "/",
        responses={
            **success(WorkerList, "The live workers and the lost ones.", WORKERS_EXAMPLE),
            **errors(
                {
                    403: "A project-scoped key: workers run every project's jobs.",
                    503: "Redis or PostgreSQL cannot be reached.",
                }
            ),
        },
    )
    async def list_workers(
        self, task_queues: NamedDependency[TaskQueues], workers: NamedDependency[Workers]
    ) -> WorkerList:
        """Each live worker process (host, pid, queue, concurrency, start, last report) and
        the jobs it runs now; workers that stopped reporting with rows still running on them."""
        return worker_list(await workers.now(task_queues.queues.values()), datetime.now(UTC))


def worker_list(found: WorkersNow, now: datetime) -> WorkerList:
    workers = []
    for worker in found.workers:
        who, stats = worker.identity, worker.stats
        reported = who.reported_at
        workers.append(
            WorkerRead(
                id=worker.id,
                queue=worker.queue,
                host=who.host,
                pid=who.pid,
                concurrency=who.concurrency,
                started_at=who.started_at,
                last_report_at=reported,
                last_report_age_seconds=(now - reported).total_seconds() if reported else None,
                complete=stats.get("complete"),
                failed=stats.get("failed"),
                retried=stats.get("retried"),
                aborted=stats.get("aborted"),
                uptime_ms=stats.get("uptime"),
                running=[_running(job) for job in worker.running],
                running_from="listing" if worker.listed else "rows",
            )
        )
    lost = [
        LostWorkerRead(id=w.id, queue=w.queue, running=[_running(job) for job in w.running])
        for w in found.lost
    ]
    return WorkerList(workers=workers, lost_workers=lost, running_rows_capped=found.scan_capped)


def _running(job: RunningJob) -> RunningJobRead:
    return RunningJobRead(
        key=job.key, job_id=job.job_id, task_name=job.task_name, started_at=job.started_at
    )


def workers_dependencies(workers: Workers) -> dict[str, Provide]:
    """The process's `workers` reader."""

    def provide_workers() -> Workers:
        return workers

    return {"workers": Provide(provide_workers, use_cache=True, sync_to_thread=False)}
