"""The cron page (`/monitor/cron`): every schedule with its cron expression, next run, pause and
last runs, from the same `Schedules` as `GET /api/v1/schedules`. Its Pause and Resume buttons
(operators only) call the API's own `POST /api/v1/schedules/{name}/pause` and `/resume`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from markupsafe import Markup
from sqlalchemy import RowMapping

from app.jobs.control.schedules import Schedule, Schedules
from app.jobs.lifecycle import JobStatus
from app.jobs.queue.pauses import PAUSES_TTL
from app.monitor.charts import runs_strip
from app.monitor.errors import PAGE_ERRORS
from app.monitor.pages import MONITOR_ROLES, page
from app.monitor.views import STATUS_ICONS, duration, excerpt, moment, seconds_between

RUNS_LISTED = 10  # runs in a schedule's table
RUNS_DRAWN = 50  # runs in its strip
REFRESH_SECONDS = 10  # how often an open page redraws itself


@dataclass(frozen=True, slots=True)
class RunLine:
    job_id: str
    status: str
    icon: str
    scheduled: str
    started: str
    ended: str
    run_time: str
    error: str


@dataclass(frozen=True)
class ScheduleLine:
    name: str
    cron: str
    job_key: str | None
    next_run: str
    next_in: str
    paused_by: str | None
    paused_at: str
    runs: list[RunLine]
    strip: Markup
    drawn: int


class MonitorCron(Controller):
    path = "/monitor"
    opt = MONITOR_ROLES
    include_in_schema = False
    exception_handlers = PAGE_ERRORS

    @get("/cron", name="monitor:cron")
    async def cron(
        self, request: Request[Any, Any, Any], schedules: NamedDependency[Schedules]
    ) -> Template:
        """Every schedule, its next run and its last runs; `?part=body` for a live redraw."""
        now = datetime.now(UTC)
        lines = [schedule_line(s, now) for s in await schedules.all(RUNS_DRAWN, now)]
        name = "cron_body.html" if request.query_params.get("part") == "body" else "cron.html"
        return page(
            name,
            request,
            schedules=lines,
            now=now,
            queue=schedules.queue_name,
            pause_delay=f"{PAUSES_TTL:g} s",
            refresh_seconds=REFRESH_SECONDS,
        )


def schedule_line(schedule: Schedule, now: datetime) -> ScheduleLine:
    runs = schedule.runs  # newest first
    return ScheduleLine(
        name=schedule.name,
        cron=schedule.cron,
        job_key=schedule.job_key,
        next_run=moment(schedule.next_run_at),
        next_in=duration((schedule.next_run_at - now).total_seconds()),
        paused_by=schedule.paused_by,
        paused_at=moment(schedule.paused_at),
        runs=[_run_line(row) for row in runs[:RUNS_LISTED]],
        strip=runs_strip(runs[::-1], current=UUID(int=0)),
        drawn=len(runs),
    )


def _run_line(row: RowMapping) -> RunLine:
    status = JobStatus(row["status"])
    return RunLine(
        job_id=str(row["job_id"]),
        status=status.value,
        icon=STATUS_ICONS[status],
        scheduled=moment(row["scheduled_at"]),
        started=moment(row["started_at"]),
        ended=moment(row["completed_at"]),
        run_time=duration(seconds_between(row["started_at"], row["completed_at"])),
        error=excerpt(row["error"]),
    )
