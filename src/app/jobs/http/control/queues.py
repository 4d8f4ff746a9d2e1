"""`GET /api/v1/queues`: per queue, what SAQ holds (queued, active, scheduled) and its live
workers, read from Redis through the app's queue (`TrackedQueue`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar_saq import TaskQueues

from app.auth.guard import BEARER, role
from app.auth.roles import Role
from app.http_common.responses import errors
from app.jobs.http.jobs.listing_schemas import (
    QUEUES_EXAMPLE,
    QueueList,
    QueueReport,
    WorkerReport,
    success,
)


def worker_report(worker_id: str, info: Mapping[str, Any]) -> WorkerReport:
    """A worker as SAQ's `worker_info` describes it (its stats may be missing)."""
    stats: Mapping[str, Any] = info.get("stats") or {}
    return WorkerReport(
        id=worker_id,
        complete=stats.get("complete"),
        failed=stats.get("failed"),
        retried=stats.get("retried"),
        aborted=stats.get("aborted"),
        uptime_ms=stats.get("uptime"),
    )


class QueueController(Controller):
    path = "/api/v1/queues"
    tags = ("queues",)
    # Queue depths and workers are every project's: not for a key scoped to one.
    opt = role(Role.VIEWER, every_project=True)
    security = BEARER

    @get(
        "/",
        responses={
            **success(QueueList, "Each queue's depth and live workers.", QUEUES_EXAMPLE),
            **errors(
                {
                    403: "A project-scoped key: queues hold every project's jobs.",
                    503: "Redis cannot be reached.",
                }
            ),
        },
    )
    async def list_queues(self, task_queues: NamedDependency[TaskQueues]) -> QueueList:
        """Per queue, from SAQ: jobs queued, active and scheduled, and the live workers."""
        reports = []
        for queue in task_queues.queues.values():
            info = await queue.info()
            workers = [
                worker_report(id_, worker) for id_, worker in sorted(info["workers"].items())
            ]
            reports.append(
                QueueReport(
                    name=info["name"],
                    queued=info["queued"],
                    active=info["active"],
                    scheduled=info["scheduled"],
                    live_workers=len(workers),
                    workers=workers,
                )
            )
        return QueueList(queues=reports)
