"""`GET /api/v1/jobs` (the list: keyset pages, filters, `q`) and `GET /api/v1/jobs/stats`:
what an operator reads about jobs (docs/jobs-api.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.openapi.spec import Example, OpenAPIType, Schema
from litestar.params import QueryParameter

from app.auth.guard import BEARER, forbid_other_project, project_in_scope, role
from app.auth.roles import Principal, Role
from app.http_common.responses import DATABASE_DOWN, errors, string_only
from app.jobs.http.jobs.listing_schemas import (
    LIST_LIMIT_MAX,
    LIST_OFFSET_MAX,
    PAGE_EXAMPLE,
    STATS_DEFAULT_WINDOW,
    STATS_EXAMPLE,
    JobPage,
    JobStats,
    TaskStats,
    moment_parameter,
    success,
    text_parameter,
    uuid_parameter,
)
from app.jobs.http.shared.redaction import MASK, Redactor
from app.jobs.http.shared.schemas import JobRead
from app.jobs.reads.search import (
    CURSOR_PATTERN,
    Q_MAX,
    Q_PATTERN,
    STATUSES_PATTERN,
    JobSearch,
    Position,
    SearchError,
    parse_q,
    parse_statuses,
)
from app.jobs.reads.service import BackgroundJobService
from app.jobs.reads.stats import WINDOWS, failure_rate

# Litestar converts query values leniently, and to msgspec "null" (any case) is None for an
# optional UUID: `user_id=null` silently meant "no filter".
_TYPED_FILTERS = {"user_id": "a UUID", "project_id": "a UUID"}
STATUS_LIST_PATTERN = STATUSES_PATTERN  # `status=failed,aborted` (the list's, the events')
_BOOLEAN = ("true", "false")
_CURSOR_EXAMPLE = Position(
    datetime(2026, 11, 30, 10, tzinfo=UTC), UUID("0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f")
).cursor()


async def refuse_null_filters(request: Request[Any, Any, Any]) -> None:
    """`before_request` of the list and the stats: a literal `null` in a typed filter is a 400."""
    refused = [
        {"message": f"{value!r} is not {what}", "key": name, "source": "query"}
        for name, what in _TYPED_FILTERS.items()
        for value in request.query_params.getall(name, [])
        if value.lower() == "null"
    ]
    if refused:
        raise ValidationException(
            detail=f"Validation failed for GET {request.url.path}", extra=refused
        )


def bad_query(exc: SearchError) -> ValidationException:
    return ValidationException(
        detail=str(exc), extra=[{"message": exc.message, "key": exc.key, "source": "query"}]
    )


def _moment(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 date-time with its offset (Litestar's own conversion also took numbers)."""
    if value is None:
        return None
    try:
        moment = msgspec.convert(value, datetime, strict=True)
    except msgspec.ValidationError:
        raise SearchError(name, f"{value!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise SearchError(name, "a date-time needs its offset, e.g. 2026-11-30T10:00:00Z")
    return moment


class JobListController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)
    opt = role(Role.VIEWER)
    security = BEARER

    @get(
        "/",
        before_request=refuse_null_filters,
        responses={
            **success(JobPage, "A page of jobs, newest first.", PAGE_EXAMPLE),
            **errors(
                {
                    400: "A filter, `q` or the cursor is invalid: the body names it and says why.",
                    403: "The key's project is not the `project_id` (or `project:`) asked for, "
                    "or a viewer searched an argument it sees masked.",
                    503: DATABASE_DOWN,
                }
            ),
        },
    )
    async def list_jobs(
        self,
        jobs_service: NamedDependency[BackgroundJobService],
        principal: NamedDependency[Principal],
        redactor: NamedDependency[Redactor],
        status: Annotated[
            list[str] | None,
            QueryParameter(
                description="Jobs in any of these statuses: repeat it "
                "(`status=failed&status=aborted`) or list them (`status=failed,aborted`).",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.ARRAY,
                    "items": Schema(type=OpenAPIType.STRING, pattern=STATUS_LIST_PATTERN),
                },
                examples=[Example(value=["failed", "aborted"])],
            ),
        ] = None,
        task_name: Annotated[str | None, text_parameter("The task's name.", "trigger_test")] = None,
        queue: Annotated[str | None, text_parameter("The SAQ queue.", "background-jobs")] = None,
        worker_id: Annotated[
            str | None, text_parameter("The worker that ran it last.", "worker-1")
        ] = None,
        user_id: Annotated[UUID | None, uuid_parameter("The job's user.")] = None,
        project_id: Annotated[
            UUID | None, uuid_parameter("The job's project (a project-scoped key: its own only).")
        ] = None,
        created_after: Annotated[
            str | None, moment_parameter("Created after this moment (with its offset).")
        ] = None,
        created_before: Annotated[
            str | None, moment_parameter("Created before this moment (with its offset).")
        ] = None,
        has_error: Annotated[
            str | None,
            QueryParameter(
                description="`true`: jobs with an error (failed, aborted, or an attempt that "
                "failed before a retry); `false`: jobs without.",
                schema_extra=string_only(enum=list(_BOOLEAN)),
            ),
        ] = None,
        q: Annotated[
            str | None,
            QueryParameter(
                description="Terms a job must all match: `status:failed,aborted`, "
                "`task:<name>`, `queue:<name>`, `worker:<id>`, `user:<uuid>`, "
                '`project:<uuid>`, `error:"text"`, `args.<key>[.<key>]:<value>` (JSONB '
                "containment; numbers, true, false, null as JSON, other values as strings), "
                "and words (a task name's start or a text in the error). Text and argument "
                "terms look at no more than 10,000 jobs per page.",
                max_length=Q_MAX,
                schema_extra=string_only(pattern=Q_PATTERN),
                examples=[Example(value='status:failed task:trigger_test error:"failed"')],
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            QueryParameter(
                description="The `next_cursor` of the previous page.",
                schema_extra=string_only(pattern=CURSOR_PATTERN),
                examples=[Example(value=_CURSOR_EXAMPLE)],
            ),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=LIST_LIMIT_MAX)] = 50,
        offset: Annotated[
            int,
            QueryParameter(
                ge=0,
                le=LIST_OFFSET_MAX,
                description="Rows to skip (kept for older clients; use `cursor` to go on).",
            ),
        ] = 0,
    ) -> JobPage:
        """Jobs, newest first, a page at a time: every filter given must match (a
        project-scoped key sees its own project's jobs only)."""
        try:
            search = JobSearch(
                statuses=parse_statuses(status) if status is not None else None,
                task_names=(task_name,) if task_name is not None else (),
                queues=(queue,) if queue is not None else (),
                worker_ids=(worker_id,) if worker_id is not None else (),
                user_ids=(user_id,) if user_id is not None else (),
                created_after=_moment("created_after", created_after),
                created_before=_moment("created_before", created_before),
                has_error=None if has_error is None else _parse_boolean(has_error),
            )
            if q is not None:
                search = search.and_(parse_q(q))
            after = Position.from_cursor(cursor) if cursor is not None else None
        except SearchError as exc:
            raise bad_query(exc) from None
        for asked in search.project_ids:
            forbid_other_project(principal, asked)
        refuse_masked_arguments(search, redactor, principal)
        scope = project_in_scope(principal, project_id)
        if scope is not None:
            search = search.and_(JobSearch(project_ids=(scope,)))
        page = await jobs_service.search_page(search, after=after, limit=limit, offset=offset)
        return JobPage(
            items=[redactor.job(JobRead.from_columns(row), principal) for row in page.rows],
            total=page.total,
            total_is_exact=page.total_is_exact,
            limit=limit,
            offset=offset,
            next_cursor=page.next.cursor() if page.next is not None else None,
        )

    @get(
        "/stats",
        before_request=refuse_null_filters,
        responses={
            **success(JobStats, "Per task, the jobs created in the window.", STATS_EXAMPLE),
            **errors(
                {
                    400: "`window` is not one of the windows offered, or project_id is not a UUID.",
                    403: "The key's project is not the `project_id` asked for.",
                    503: DATABASE_DOWN,
                }
            ),
        },
    )
    async def job_stats(
        self,
        jobs_service: NamedDependency[BackgroundJobService],
        principal: NamedDependency[Principal],
        window: Annotated[
            str,
            QueryParameter(
                description="The jobs created in the last 5m, 15m, 1h, 6h, 24h or 7d.",
                schema_extra={"enum": list(WINDOWS)},
            ),
        ] = STATS_DEFAULT_WINDOW,
        project_id: Annotated[
            UUID | None, uuid_parameter("Only this project's jobs (a project-scoped key: its own).")
        ] = None,
    ) -> JobStats:
        """Per task: counts by status, failure rate, p50/p95 run and wait times."""
        if window not in WINDOWS:
            raise bad_query(SearchError("window", f"{window!r} is not one of {list(WINDOWS)}"))
        since, rows = await jobs_service.stats(
            window=window, project_id=project_in_scope(principal, project_id)
        )
        tasks = [
            TaskStats.from_row(
                row, failure_rate(row["failed"], row["complete"] + row["failed"] + row["aborted"])
            )
            for row in rows
        ]
        return JobStats(window=window, since=since, tasks=tasks)


def refuse_masked_arguments(search: JobSearch, redactor: Redactor, principal: Principal) -> None:
    """403 for an `args.` term under a key the caller sees masked: its answers would tell
    the masked value."""
    if not redactor.masks_for(principal):
        return
    for document in search.arguments:
        value, path = json.loads(document), []
        while isinstance(value, dict):
            ((key, value),) = value.items()
            path.append(key)
            if redactor.value({key: None})[key] == MASK:
                raise PermissionDeniedException(
                    detail=f"args.{'.'.join(path)}: this key's role sees it masked, so it "
                    "may not search it"
                )


def _parse_boolean(value: str) -> bool:
    if value not in _BOOLEAN:
        raise SearchError("has_error", f"{value!r} is not true or false")
    return value == "true"
