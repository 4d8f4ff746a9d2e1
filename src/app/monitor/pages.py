"""The monitor's pages: the jobs table (`/monitor`), a job (`/monitor/jobs/{id}`) and the
overview (`/monitor/overview`), rendered on the server from the job list's own services.

Live updates come from the API's one event stream per tab (`GET /api/v1/events`, the process's
shared `EventHub`); the table asks `/monitor/rows` only for the rows those events name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template
from litestar_saq import TaskQueues

from app.auth.guard import role
from app.auth.roles import Principal, Role
from app.jobs.control.actions import BULK_LIMIT
from app.jobs.control.queues import QueuePausing
from app.jobs.http.jobs.listing import refuse_masked_arguments
from app.jobs.http.shared.redaction import Redactor
from app.jobs.http.shared.schemas import JobRead
from app.jobs.lifecycle import RETRYABLE_STATUSES, UNFINISHED_STATUSES, JobStatus
from app.jobs.reads.search import Position, SearchError
from app.jobs.reads.service import BackgroundJobService
from app.monitor.charts import outcome_chart, runs_strip
from app.monitor.errors import PAGE_ERRORS
from app.monitor.overview import Overview
from app.monitor.queries import MonitorQueries, count_text
from app.monitor.security import csp_headers
from app.monitor.views import (
    PAGE_SIZES,
    STATUS_ICONS,
    PageFilters,
    job_view,
    relative_view,
    row_view,
)

MONITOR_ROLES = role(Role.VIEWER, every_project=True)  # it shows every project's jobs
MAX_LIVE_IDS = 200  # job ids one live-update request may name


def page(
    name: str, request: Request[Any, Any, Any], status_code: int = 200, **context: Any
) -> Template:
    """A monitor page with what every page shows (who is logged in, the nav)."""
    principal: Principal = request.user
    return Template(
        template_name=name,
        context={
            "principal": principal,
            "operator": principal.may(Role.OPERATOR),
            "path": request.url.path,
            "saq_path": request.app.state.get("monitor_saq_path"),
            **context,
        },
        headers=csp_headers(),
        status_code=status_code,
    )


class MonitorPages(Controller):
    path = "/monitor"
    opt = MONITOR_ROLES
    include_in_schema = False
    exception_handlers = PAGE_ERRORS

    @get(["/", "/jobs"], name="monitor:jobs")
    async def jobs(
        self,
        request: Request[Any, Any, Any],
        jobs_service: NamedDependency[BackgroundJobService],
        monitor_queries: NamedDependency[MonitorQueries],
        redactor: NamedDependency[Redactor],
    ) -> Template:
        """The jobs table, newest first, filtered by the URL's query."""
        try:
            filters = PageFilters.from_query(dict(request.query_params.dict()))
        except SearchError as exc:
            return page("jobs.html", request, 400, problem=exc, filters=None, rows=[])
        # As the API: a search by a value the caller sees masked would tell the value.
        refuse_masked_arguments(filters.search, redactor, request.user)
        rows: Sequence[Mapping[Any, Any]]
        if filters.before is not None:
            found = await monitor_queries.newer_page(filters.search, filters.before, filters.limit)
            older = found[-1] if found else None
            rows, newer_exists = found, len(found) == filters.limit
            next_position = Position(older["created_at"], older["id"]) if older else None
        else:
            listed = await jobs_service.search_page(
                filters.search, after=filters.after, limit=filters.limit, offset=0
            )
            rows, next_position = listed.rows, listed.next
            newer_exists = filters.after is not None
        views = [row_view(row) for row in rows]
        counts = await monitor_queries.status_counts(filters.search)
        return page(
            "jobs.html",
            request,
            filters=filters,
            rows=views,
            counts=_count_links(filters, counts),
            counted_at=counts.at.strftime("%H:%M:%S") if counts else None,
            counted_newest=None if counts is None or counts.complete else f"{counts.newest:,}",
            older_url=filters.page_url(cursor=next_position.cursor()) if next_position else None,
            newer_url=filters.page_url(before=views[0].cursor) if views and newer_exists else None,
            first_page=filters.after is None and filters.before is None,
            page_sizes=PAGE_SIZES,
            statuses=[(status.value, STATUS_ICONS[status]) for status in JobStatus],
            bulk_limit=BULK_LIMIT,
            live_query=filters.query_string(),
            drawn_at=Position(datetime.now(UTC), UUID(int=0)).cursor(),
        )

    @get("/rows", name="monitor:rows")
    async def rows(
        self,
        request: Request[Any, Any, Any],
        monitor_queries: NamedDependency[MonitorQueries],
        redactor: NamedDependency[Redactor],
    ) -> Template:
        """The table rows of the jobs named in `ids` that the page's filters match (what the
        page asks for when events name jobs), or of those newer than `before` (what it asks
        for once its event stream is open: the jobs made while it connected)."""
        try:
            filters = PageFilters.from_query(dict(request.query_params.dict()))
            ids = [UUID(value) for value in request.query_params.get("ids", "").split(",") if value]
        except (SearchError, ValueError) as exc:
            return page("rows.html", request, 400, rows=[], problem=str(exc))
        refuse_masked_arguments(filters.search, redactor, request.user)
        if filters.before is not None:  # what was created since the page was drawn
            found = await monitor_queries.newer_page(filters.search, filters.before, filters.limit)
        else:
            found = await monitor_queries.rows(filters.search, ids[:MAX_LIVE_IDS])
        return page("rows.html", request, rows=[row_view(row) for row in found], filters=filters)

    @get("/jobs/{job_id:str}", name="monitor:job")
    async def job(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        jobs_service: NamedDependency[BackgroundJobService],
        monitor_queries: NamedDependency[MonitorQueries],
        redactor: NamedDependency[Redactor],
        task_queues: NamedDependency[TaskQueues],
    ) -> Template:
        """One job: its timeline, attempts, errors, arguments and result, and its task's runs."""
        try:
            wanted = UUID(job_id)
        except ValueError:
            raise NotFoundException(detail=f"{job_id!r} is not a job id") from None
        row = await jobs_service.get_by_job_id(wanted)
        if row is None:
            raise NotFoundException(detail=f"no job with job_id {wanted}")
        principal: Principal = request.user
        view = job_view(JobRead.from_row(row), redactor, principal)
        saq_url = await _saq_url(request, task_queues, row.queue, row.job_key or str(row.job_id))
        runs = await monitor_queries.task_runs(row.task_name)
        relatives = [relative_view(r) for r in await monitor_queries.relatives(wanted)]
        context = {
            **view,
            "parents": [r for r in relatives if r["relation"] == "parent"],
            "children": [r for r in relatives if r["relation"] == "child"],
            "saq_url": saq_url,
            "runs_svg": runs_strip(runs, current=wanted),
            "runs_count": len(runs),
            "retryable": JobStatus(row.status) in RETRYABLE_STATUSES,
            "cancellable": JobStatus(row.status) in UNFINISHED_STATUSES,
        }
        name = "job_panel.html" if request.query_params.get("part") == "panel" else "job.html"
        return page(name, request, **context)

    @get("/overview", name="monitor:overview")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        jobs_service: NamedDependency[BackgroundJobService],
        monitor_queries: NamedDependency[MonitorQueries],
        task_queues: NamedDependency[TaskQueues],
        queue_pausing: NamedDependency[QueuePausing],
    ) -> Template:
        """Queues (paused or not) and workers now; per task, the last hour's outcomes; what
        may be stuck. An operator pauses and resumes a queue here (the API's calls)."""
        now = datetime.now(UTC)
        since = now - timedelta(hours=1)
        pauses = await queue_pausing.states()
        overview = await Overview.read(
            task_queues, jobs_service, monitor_queries, since, now, pauses
        )
        charts = {task: outcome_chart(minutes, since) for task, minutes in overview.minutes.items()}
        return page("overview.html", request, overview=overview, charts=charts, now=now)


def _count_links(filters: PageFilters, counts: Any) -> list[dict[str, Any]] | None:
    if counts is None:
        return None
    return [
        {
            "status": status.value,
            "icon": STATUS_ICONS[status],
            "count": count_text(count),
            "url": filters.url(status=status.value),
        }
        for status, count in counts.by_status.items()
    ]


async def _saq_url(
    request: Request[Any, Any, Any], task_queues: TaskQueues, queue_name: str, job_key: str
) -> str | None:
    """The job's page in SAQ's UI, while Redis still holds the job."""
    saq_path = request.app.state.get("monitor_saq_path")
    queue = task_queues.queues.get(queue_name)
    if saq_path is None or queue is None:
        return None
    try:
        found = await queue.job(job_key)
    except Exception:  # Redis away: the page still shows the row
        return None
    return f"{saq_path}/queues/{queue_name}/jobs/{found.key}" if found is not None else None
