"""`GET /api/v1/jobs/{job_id}/events` and `GET /api/v1/events`: Server-Sent Events of the rows'
status and progress changes, from the process's one `EventHub`.

Each event's `id:` is its Redis Stream id: a client that reconnects with `Last-Event-ID`
gets the events after it, then the live ones. A heartbeat comment goes out after
`EVENTS_HEARTBEAT_SECONDS` without an event; a stream ends after `EVENTS_MAX_STREAM_SECONDS`
(the client reconnects and resumes). A job's stream starts with the job as `GET` shows it
(`event: job`, unless resuming) and ends with its final status, or once the key or session
it was opened with no longer stands (`app.jobs.http.jobs.streams`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from app.auth.guard import (
    BEARER,
    credential_check,
    hide_other_project,
    project_in_scope,
    role,
)
from app.auth.roles import Principal, Role
from app.db.models import BackgroundJob
from app.http_common.responses import errors, string_only
from app.jobs.http.jobs.controllers import JobIdPath, _find_job, _parse_job_id
from app.jobs.http.jobs.listing import STATUS_LIST_PATTERN as _STATUS_LIST
from app.jobs.http.jobs.listing import bad_query as _bad_query
from app.jobs.http.jobs.listing import refuse_null_filters
from app.jobs.http.jobs.listing_schemas import text_parameter as _text
from app.jobs.http.jobs.listing_schemas import uuid_parameter as _uuid
from app.jobs.http.jobs.streams import EventStreams, event_message, follow
from app.jobs.http.shared.redaction import Redactor
from app.jobs.http.shared.schemas import JobRead
from app.jobs.lifecycle import TERMINAL_STATUSES
from app.jobs.reads.search import SearchError, parse_statuses
from app.jobs.reads.service import BackgroundJobService
from app.jobs.record.events import STATUS, JobEvent

SNAPSHOT = "job"  # the `event:` of a job's stream's first message: the job as GET shows it
_EVENT_ID = r"^[0-9]{1,19}(-[0-9]{1,19})?$"  # Redis's id; `<ms>` alone is `<ms>-0`
_STREAM = (
    "A `text/event-stream`: `event: status` and `event: progress` messages whose `data` is "
    "the change as JSON (job_id, status, attempt, progress, ...), each with an `id:` to "
    "resume from, and `: heartbeat` comments."
)

LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        description="The `id:` of the last event received: the stream resumes after it.",
        schema_extra=string_only(pattern=_EVENT_ID),
    ),
]


class EventMessage(msgspec.Struct):
    """One message of a stream, as OpenAPI describes an event of `text/event-stream`."""

    event: Literal["job", "status", "progress"]
    id: str  # resume after it with Last-Event-ID
    data: str  # JSON: the job (`job`), or the change (`status`, `progress`)


def _stream_answer(description: str) -> dict[int, ResponseSpec]:
    return {
        200: ResponseSpec(
            data_container=EventMessage,
            description=f"{description} {_STREAM}",
            media_type="text/event-stream",
            generate_examples=False,
        )
    }


class EventController(Controller):
    path = "/api/v1"
    tags = ("events",)
    opt = role(Role.VIEWER)
    security = BEARER

    @get(
        "/jobs/{job_id:str}/events",
        responses={
            **_stream_answer("The job's changes, from its current state to its end."),
            **errors(
                {
                    400: "job_id is not a UUID, or Last-Event-ID is not an event id.",
                    404: "There is no job with this job_id (in the project of a scoped key).",
                    503: "PostgreSQL or Redis cannot be reached.",
                }
            ),
        },
    )
    async def job_events(
        self,
        request: Request[Any, Any, Any],
        job_id: JobIdPath,
        jobs_service: NamedDependency[BackgroundJobService],
        principal: NamedDependency[Principal],
        redactor: NamedDependency[Redactor],
        event_streams: NamedDependency[EventStreams],
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        """One job's status and progress changes; ends once the job has ended."""
        wanted = _parse_job_id(job_id)
        last_event_id = _event_id(last_event_id)
        hide_other_project(principal, (await _find_job(jobs_service, wanted)).project_id, wanted)
        hub = event_streams.hub

        def wants(event: JobEvent) -> bool:
            return event.job_id == wanted

        subscription = await hub.subscribe(wants)
        try:
            first: list[ServerSentEventMessage] = []
            ended = False
            if last_event_id is not None:
                for entry_id, event in await hub.history(last_event_id, subscription.since, wants):
                    first.append(event_message(entry_id, event))
                    ended = ended or (event.kind == STATUS and event.final)
            if not ended:
                # Read after subscribing: a change committed meanwhile is in the row or comes next.
                row = await _find_job(jobs_service, wanted)
                ended = row.status in TERMINAL_STATUSES
                if last_event_id is None or ended:
                    first.append(_snapshot(row, subscription.since, redactor, principal))
        except BaseException:
            hub.unsubscribe(subscription)
            raise
        if ended:
            hub.unsubscribe(subscription)
            return ServerSentEvent(first)
        return ServerSentEvent(
            follow(
                first,
                subscription,
                event_streams,
                last_event_id,
                until_final=True,
                still_valid=credential_check(request),
            )
        )

    @get(
        "/events",
        before_request=refuse_null_filters,
        responses={
            **_stream_answer("Every job's changes that match the filters, as they happen."),
            **errors(
                {
                    400: "A filter or Last-Event-ID is invalid.",
                    403: "The key's project is not the `project_id` asked for.",
                    503: "Redis cannot be reached.",
                }
            ),
        },
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        event_streams: NamedDependency[EventStreams],
        status: Annotated[
            list[str] | None,
            QueryParameter(
                description="Changes to any of these statuses (progress: `running`); repeat "
                "it or list them (`status=failed,aborted`).",
                schema_extra={
                    "one_of": None,
                    "type": OpenAPIType.ARRAY,
                    "items": Schema(type=OpenAPIType.STRING, pattern=_STATUS_LIST),
                },
            ),
        ] = None,
        task_name: Annotated[
            str | None, _text("Changes of this task's jobs.", "trigger_test")
        ] = None,
        queue: Annotated[
            str | None, _text("Changes of this queue's jobs.", "background-jobs")
        ] = None,
        user_id: Annotated[UUID | None, _uuid("Changes of this user's jobs.")] = None,
        project_id: Annotated[
            UUID | None, _uuid("Changes of this project's jobs (a project-scoped key: its own).")
        ] = None,
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        """Status and progress changes of every job that matches the filters, live."""
        last_event_id = _event_id(last_event_id)
        try:
            statuses = parse_statuses(status) if status is not None else None
        except SearchError as exc:
            raise _bad_query(exc) from None
        scope = project_in_scope(principal, project_id)

        def wants(event: JobEvent) -> bool:
            return (
                (statuses is None or event.status in statuses)
                and (task_name is None or event.task_name == task_name)
                and (queue is None or event.queue == queue)
                and (user_id is None or event.user_id == user_id)
                and (scope is None or event.project_id == scope)
            )

        hub = event_streams.hub
        subscription = await hub.subscribe(wants)
        try:
            history = (
                await hub.history(last_event_id, subscription.since, wants)
                if last_event_id is not None
                else []
            )
        except BaseException:
            hub.unsubscribe(subscription)
            raise
        first = [event_message(entry_id, event) for entry_id, event in history]
        return ServerSentEvent(
            follow(
                first,
                subscription,
                event_streams,
                last_event_id,
                until_final=False,
                still_valid=credential_check(request),
            )
        )


def _event_id(value: str | None) -> str | None:
    """The Last-Event-ID header as a full stream id; a 400 for anything else."""
    if value is None:
        return None
    if not re.fullmatch(_EVENT_ID, value):
        raise ValidationException(
            detail=f"Last-Event-ID must be an event's id, like 1764496800000-0, got {value!r}",
            extra=[{"message": "not an event id", "key": "Last-Event-ID", "source": "header"}],
        )
    return value if "-" in value else f"{value}-0"


def _snapshot(
    row: BackgroundJob, since: str, redactor: Redactor, principal: Principal
) -> ServerSentEventMessage:
    job = redactor.job(JobRead.from_row(row), principal)
    return ServerSentEventMessage(data=msgspec.json.encode(job).decode(), event=SNAPSHOT, id=since)
