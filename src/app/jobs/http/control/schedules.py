"""`/api/v1/schedules`: the cron schedules with their next time and last runs (viewer), and
pausing and resuming one (operator, one audit row per call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import Link, OpenAPIResponse, Operation
from litestar.params import PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK
from sqlalchemy import RowMapping

from app.auth.guard import BEARER, role
from app.auth.roles import Principal, Role
from app.http_common.responses import errors
from app.jobs.control.schedules import (
    RUNS_MAX,
    RUNS_SHOWN,
    Schedule,
    Schedules,
    UnknownScheduleError,
)
from app.jobs.http.control.ops_schemas import (
    SCHEDULE_EXAMPLE,
    SCHEDULES_EXAMPLE,
    ScheduleList,
    ScheduleRead,
    ScheduleRun,
)
from app.jobs.http.jobs.listing_schemas import success

NamePath = Annotated[str, PathParameter(description="The schedule's name: its task's name.")]
PAUSE, RESUME = "pauseSchedule", "resumeSchedule"


def answer_links_to(*operation_ids: str, name: str = "$response.body#/name") -> type[Operation]:
    """An operation whose 200 answer names a schedule the `operation_ids` act on (OpenAPI's
    `links`: a client, or schemathesis's stateful phase, follows them)."""

    @dataclass
    class Linked(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                ok.links = {
                    target: Link(operation_id=target, parameters={"name": name})
                    for target in operation_ids
                }

    return Linked


_ACTION_ERRORS = errors(
    {
        403: "The key's role may not do this (operator), or it is scoped to a project.",
        404: "No schedule of this name is declared.",
        503: "PostgreSQL cannot be reached; nothing was changed.",
    }
)


class ScheduleController(Controller):
    path = "/api/v1/schedules"
    tags = ("schedules",)
    # Schedules belong to no project: not for a key scoped to one.
    opt = role(Role.VIEWER, write=Role.OPERATOR, every_project=True)
    security = BEARER

    @get(
        "/",
        operation_class=answer_links_to(PAUSE, RESUME, name="$response.body#/schedules/0/name"),
        responses={
            **success(ScheduleList, "Every declared schedule.", SCHEDULES_EXAMPLE),
            **errors(
                {
                    400: f"`runs` is not a whole number from 0 to {RUNS_MAX}.",
                    403: "A project-scoped key: schedules are every project's.",
                    503: "PostgreSQL cannot be reached.",
                }
            ),
        },
    )
    async def list_schedules(
        self,
        schedules: NamedDependency[Schedules],
        runs: Annotated[
            int, QueryParameter(ge=0, le=RUNS_MAX, description="Last runs shown per schedule.")
        ] = RUNS_SHOWN,
    ) -> ScheduleList:
        """Every schedule the workers run: its cron expression, next run time (UTC), whether
        it is paused (by whom, since when) and its last runs, newest first."""
        return ScheduleList(schedules=[schedule_read(s) for s in await schedules.all(runs)])

    @post(
        "/{name:str}/pause",
        operation_id=PAUSE,
        operation_class=answer_links_to(RESUME),
        status_code=HTTP_200_OK,
        responses={**success(ScheduleRead, "The schedule, paused.", SCHEDULE_EXAMPLE)}
        | _ACTION_ERRORS,
    )
    async def pause(
        self,
        name: NamePath,
        schedules: NamedDependency[Schedules],
        principal: NamedDependency[Principal],
    ) -> ScheduleRead:
        """Pause a schedule: the workers enqueue none of its runs (within a few seconds, in
        every worker), and withdraw a run that waits for its time; a running run finishes."""
        try:
            return schedule_read(await schedules.pause(name, principal))
        except UnknownScheduleError as exc:
            raise NotFoundException(detail=str(exc)) from None

    @post(
        "/{name:str}/resume",
        operation_id=RESUME,
        operation_class=answer_links_to(PAUSE),
        status_code=HTTP_200_OK,
        responses={**success(ScheduleRead, "The schedule, resumed.", SCHEDULE_EXAMPLE)}
        | _ACTION_ERRORS,
    )
    async def resume(
        self,
        name: NamePath,
        schedules: NamedDependency[Schedules],
        principal: NamedDependency[Principal],
    ) -> ScheduleRead:
        """Resume a schedule: its next run is enqueued at its next time."""
        try:
            return schedule_read(await schedules.resume(name, principal))
        except UnknownScheduleError as exc:
            raise NotFoundException(detail=str(exc)) from None


def schedule_read(schedule: Schedule) -> ScheduleRead:
    return ScheduleRead(
        name=schedule.name,
        cron=schedule.cron,
        queue=schedule.queue,
        job_key=schedule.job_key,
        next_run_at=schedule.next_run_at,
        paused=schedule.paused_by is not None,
        paused_by=schedule.paused_by,
        paused_at=schedule.paused_at,
        runs=[_run(row) for row in schedule.runs],
    )


def _run(row: RowMapping) -> ScheduleRun:
    started, ended = row["started_at"], row["completed_at"]
    return ScheduleRun(
        job_id=row["job_id"],
        status=row["status"],
        scheduled_at=row["scheduled_at"],
        created_at=row["created_at"],
        started_at=started,
        completed_at=ended,
        run_seconds=(ended - started).total_seconds() if started and ended else None,
        attempts=row["attempts"],
        error=row["error"],
    )


def schedules_dependencies(schedules: Schedules) -> dict[str, Provide]:
    """The process's `schedules`: its CRON, and their pauses."""

    def provide_schedules() -> Schedules:
        return schedules

    return {"schedules": Provide(provide_schedules, use_cache=True, sync_to_thread=False)}
