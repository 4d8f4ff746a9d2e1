"""`/api/v1/queues`: per queue, what SAQ holds (queued, active, scheduled), its live workers
and its pause (viewer); pausing, resuming and draining one (operator, one audit row per call).
Depths and workers are read from Redis through the app's queue (`TrackedQueue`); pauses from
PostgreSQL (`app.jobs.control.queues`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK
from litestar_saq import TaskQueues

from app.auth.guard import BEARER, role
from app.auth.roles import Principal, Role
from app.http_common.responses import errors
from app.jobs.control.queues import QueuePauseState, QueuePausing, UnknownQueueError
from app.jobs.http.control.ops_schemas import QUEUE_PAUSE_EXAMPLE, QueuePauseRead
from app.jobs.http.jobs.listing_schemas import (
    QUEUES_EXAMPLE,
    QueueList,
    QueueReport,
    WorkerReport,
    success,
)

NamePath = Annotated[str, PathParameter(description="The queue's name (SAQ_QUEUE_NAME).")]
DRAIN_WAIT_MAX = 30  # seconds a drain call may wait for the running jobs to end
_DRAIN_LOOK_EVERY = 0.2  # seconds between two looks at the running count while a drain waits

_ACTION_ERRORS = errors(
    {
        403: "The key's role may not do this (operator), or it is scoped to a project.",
        404: "No queue of this name is served here.",
        503: "PostgreSQL or Redis cannot be reached.",
    }
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
    opt = role(Role.VIEWER, write=Role.OPERATOR, every_project=True)
    security = BEARER

    @get(
        "/",
        responses={
            **success(QueueList, "Each queue's depth, live workers and pause.", QUEUES_EXAMPLE),
            **errors(
                {
                    403: "A project-scoped key: queues hold every project's jobs.",
                    503: "Redis or PostgreSQL cannot be reached.",
                }
            ),
        },
    )
    async def list_queues(
        self, task_queues: NamedDependency[TaskQueues], queue_pausing: NamedDependency[QueuePausing]
    ) -> QueueList:
        """Per queue, from SAQ: jobs queued, active and scheduled, and the live workers; and
        whether it is paused (by whom, since when)."""
        pauses = await queue_pausing.states()
        reports = []
        for queue in task_queues.queues.values():
            info = await queue.info()
            workers = [
                worker_report(id_, worker) for id_, worker in sorted(info["workers"].items())
            ]
            pause = pauses.get(info["name"])
            reports.append(
                QueueReport(
                    name=info["name"],
                    queued=info["queued"],
                    active=info["active"],
                    scheduled=info["scheduled"],
                    live_workers=len(workers),
                    workers=workers,
                    paused=bool(pause and pause.paused),
                    paused_by=pause.paused_by if pause else None,
                    paused_at=pause.paused_at if pause else None,
                )
            )
        return QueueList(queues=reports)

    @post(
        "/{name:str}/pause",
        status_code=HTTP_200_OK,
        responses={**success(QueuePauseRead, "The queue, paused.", QUEUE_PAUSE_EXAMPLE)}
        | _ACTION_ERRORS,
    )
    async def pause(
        self,
        name: NamePath,
        queue_pausing: NamedDependency[QueuePausing],
        principal: NamedDependency[Principal],
    ) -> QueuePauseRead:
        """Pause a queue: no worker takes its jobs from now on (triggers are still accepted:
        their jobs wait, `queued`); the jobs already taken finish. Paused already: a no-op."""
        state = await _known(queue_pausing.pause(name, principal))
        return await _read(queue_pausing, state)

    @post(
        "/{name:str}/resume",
        status_code=HTTP_200_OK,
        responses={**success(QueuePauseRead, "The queue, resumed.", QUEUE_PAUSE_EXAMPLE)}
        | _ACTION_ERRORS,
    )
    async def resume(
        self,
        name: NamePath,
        queue_pausing: NamedDependency[QueuePausing],
        principal: NamedDependency[Principal],
    ) -> QueuePauseRead:
        """Resume a queue: its workers take its jobs again at once. Not paused: a no-op."""
        state = await _known(queue_pausing.resume(name, principal))
        return await _read(queue_pausing, state)

    @post(
        "/{name:str}/drain",
        status_code=HTTP_200_OK,
        responses={
            **success(QueuePauseRead, "The queue, paused; `running`: left.", QUEUE_PAUSE_EXAMPLE)
        }
        | _ACTION_ERRORS
        | errors({400: f"`wait` is not a number of seconds from 0 to {DRAIN_WAIT_MAX}."}),
    )
    async def drain(
        self,
        name: NamePath,
        queue_pausing: NamedDependency[QueuePausing],
        principal: NamedDependency[Principal],
        wait: Annotated[
            float,
            QueryParameter(
                ge=0, le=DRAIN_WAIT_MAX, description="Seconds to wait for `running` to reach 0."
            ),
        ] = 0,
    ) -> QueuePauseRead:
        """Drain a queue: pause it, then wait up to `wait` seconds for its running jobs to
        end. `running` is how many are left (0: drained); call again to wait more."""
        state = await _known(queue_pausing.pause(name, principal, drain=True))
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        running = await queue_pausing.running(name)
        while running and loop.time() < until:
            await asyncio.sleep(_DRAIN_LOOK_EVERY)
            running = await queue_pausing.running(name)
        return _pause_read(state, running)


async def _known(change: Awaitable[QueuePauseState]) -> QueuePauseState:
    """`change`'s new state; a queue not served here is a 404."""
    try:
        return await change
    except UnknownQueueError as exc:
        raise NotFoundException(detail=str(exc)) from None


async def _read(queue_pausing: QueuePausing, state: QueuePauseState) -> QueuePauseRead:
    return _pause_read(state, await queue_pausing.running(state.name))


def _pause_read(state: QueuePauseState, running: int) -> QueuePauseRead:
    return QueuePauseRead(
        name=state.name,
        paused=state.paused,
        paused_by=state.paused_by,
        paused_at=state.paused_at,
        running=running,
    )


def queues_dependencies(queue_pausing: QueuePausing) -> dict[str, Provide]:
    """The process's `queue_pausing`: its queues' pauses."""

    def provide_queue_pausing() -> QueuePausing:
        return queue_pausing

    return {"queue_pausing": Provide(provide_queue_pausing, use_cache=True, sync_to_thread=False)}
