"""What the monitor's action buttons ask the server before acting: how many jobs "all
matching this filter" is. The actions themselves are the API's (`POST /api/v1/jobs/{id}/retry`,
`/cancel`, `/bulk/retry`, `/bulk/cancel`): the page's script calls them with its session and
CSRF token, so they are guarded, capped and audited in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException

from app.auth.guard import role
from app.auth.roles import Role
from app.jobs.control.actions import BULK_LIMIT, JobActions
from app.jobs.http.control.action_schemas import JobFilter
from app.jobs.lifecycle import RETRYABLE_STATUSES, UNFINISHED_STATUSES
from app.jobs.reads.search import JobSearch, SearchError
from app.monitor.views import PageFilters

_STATUSES = {"retry": RETRYABLE_STATUSES, "cancel": UNFINISHED_STATUSES}


def job_filter(search: JobSearch, until: datetime) -> JobFilter:
    """The bulk API's filter for a page's search, its window closed at `until`; SearchError
    when the page filters by something the bulk API cannot (text terms, a field twice)."""
    if search.scans_text:
        raise SearchError("q", "text and argument terms cannot select jobs for an action")
    fields: dict[str, Any] = {"created_before": until}
    for name, values in (
        ("task_name", search.task_names),
        ("queue", search.queues),
        ("worker_id", search.worker_ids),
        ("user_id", search.user_ids),
        ("project_id", search.project_ids),
    ):
        if len(values) > 1:
            raise SearchError(name, "an action takes one value of each filter")
        if values:
            fields[name] = values[0]
    if search.statuses is not None:
        fields["status"] = sorted(search.statuses)
    if search.has_error is not None:
        fields["has_error"] = search.has_error
    if search.created_after is not None:
        fields["created_after"] = search.created_after
    return JobFilter(**fields)


class MonitorActions(Controller):
    path = "/monitor"
    opt = role(Role.OPERATOR, every_project=True)
    include_in_schema = False

    @get("/count", name="monitor:count")
    async def count(
        self, request: Request[Any, Any, Any], job_actions: NamedDependency[JobActions]
    ) -> dict[str, Any]:
        """How many jobs an action on "all matching" would act on now (up to the cap), and the
        bulk API's filter that names exactly that window."""
        action = request.query_params.get("action", "")
        if action not in _STATUSES:
            raise ValidationException(detail="action must be retry or cancel")
        until = datetime.now(UTC)  # the window the bulk call will act on ends here
        try:
            filters = PageFilters.from_query(dict(request.query_params.dict()))
            found = job_filter(filters.search, until)
        except SearchError as exc:
            raise ValidationException(detail=str(exc)) from None
        jobs, more = await job_actions.matching(
            found.search(until=until, project_id=None), _STATUSES[action]
        )
        return {
            "action": action,
            "count": len(jobs),
            "more": more,
            "cap": BULK_LIMIT,
            "filter": msgspec.to_builtins(found),
        }
