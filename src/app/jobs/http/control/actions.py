"""`POST /api/v1/jobs/{job_id}/retry`, `/bulk/cancel` and `/bulk/retry`: the operator's actions
on jobs that exist. Each call writes one audit row, whatever its outcome."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.spec import Example
from litestar.params import Body
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditAction, AuditLog
from app.auth.guard import BEARER, hide_other_project, project_in_scope, role
from app.auth.roles import Principal, Role
from app.http_common.responses import NOT_JSON, errors
from app.jobs.control.actions import BULK_LIMIT, FoundJob, JobActions, retryable
from app.jobs.http.control.action_schemas import (
    BULK_BY_FILTER_EXAMPLE,
    BULK_BY_IDS_EXAMPLE,
    BULK_RESULT_EXAMPLE,
    UNSET,
    BulkBody,
    BulkRequest,
    BulkResult,
    JobRetryAccepted,
)
from app.jobs.http.jobs.controllers import JobIdPath, _parse_job_id
from app.jobs.http.jobs.listing_schemas import success
from app.jobs.lifecycle import RETRYABLE_STATUSES, UNFINISHED_STATUSES
from app.jobs.outbox.enqueuer import Enqueuer

QUEUE_LATER = "queue unavailable: the reconciler enqueues it once Redis is back"
_BULK_ERRORS = errors(
    {
        400: f'The body is not `{{"job_ids": [...]}}` (1 to {BULK_LIMIT:,} UUIDs) or '
        '`{"filter": {...}}` (the list\'s filters), or a value is invalid. Nothing was done.',
        403: "The key's role may not do this, or the filter's project is another project's: "
        "nothing was done. (A job of another project counts as not found.)",
        415: NOT_JSON,
        503: "PostgreSQL or Redis cannot be reached.",
    }
)

_BODY_EXAMPLES = [
    Example(summary="by id", value=BULK_BY_IDS_EXAMPLE),
    Example(summary="by filter", value=BULK_BY_FILTER_EXAMPLE),
]


class JobNotRetryableError(ValueError):
    """Only a failed or aborted job can be retried."""


class JobActionController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)
    opt = role(Role.OPERATOR)
    security = BEARER

    @post(
        "/{job_id:str}/retry",
        status_code=HTTP_202_ACCEPTED,
        responses=errors(
            {
                400: "job_id is not a UUID.",
                404: "There is no job with this job_id (in the project of a scoped key).",
                409: "The job is not failed or aborted (queued, running or complete).",
                503: "PostgreSQL cannot be reached; nothing was changed.",
            }
        ),
    )
    async def retry_job(
        self,
        job_id: JobIdPath,
        job_actions: NamedDependency[JobActions],
        principal: NamedDependency[Principal],
        audit: NamedDependency[AuditLog],
    ) -> JobRetryAccepted:
        """Run a failed or aborted job again under the same job_id, for at least one more
        attempt; its error history is kept and records who retried it."""
        wanted = _parse_job_id(job_id)
        found = await job_actions.find([wanted])
        if not found:
            raise NotFoundException(detail=f"no job with job_id {wanted}")
        async with audit.recording(
            principal, AuditAction.RETRY, job_ids=[wanted], conflicts=(JobNotRetryableError,)
        ) as entry:
            hide_other_project(principal, found[0].project_id, wanted)
            retried = await job_actions.retry([wanted], principal.actor)
            if not retried.job_ids:
                raise JobNotRetryableError(
                    f"job {wanted} is {found[0].status}: only failed or aborted jobs are retried"
                )
            entry.detail = None if retried.enqueued else QUEUE_LATER
        return JobRetryAccepted(message="job queued again", job_id=wanted)

    @post(
        "/bulk/cancel",
        status_code=HTTP_200_OK,
        dto=BulkBody,
        return_dto=None,
        responses={
            **success(BulkResult, "What was cancelled and what was not.", BULK_RESULT_EXAMPLE),
            **_BULK_ERRORS,
        },
    )
    async def bulk_cancel(
        self,
        data: Annotated[BulkRequest, Body(examples=_BODY_EXAMPLES)],
        job_actions: NamedDependency[JobActions],
        principal: NamedDependency[Principal],
        audit: NamedDependency[AuditLog],
    ) -> BulkResult:
        """Abort queued and running jobs, by id or by filter (1,000 at most per call); rows
        end `aborted` as the jobs stop."""
        return await _bulk(AuditAction.BULK_CANCEL, data, job_actions, principal, audit)

    @post(
        "/bulk/retry",
        status_code=HTTP_200_OK,
        dto=BulkBody,
        return_dto=None,
        responses={
            **success(BulkResult, "What was retried and what was not.", BULK_RESULT_EXAMPLE),
            **_BULK_ERRORS,
        },
    )
    async def bulk_retry(
        self,
        data: Annotated[BulkRequest, Body(examples=_BODY_EXAMPLES)],
        job_actions: NamedDependency[JobActions],
        principal: NamedDependency[Principal],
        audit: NamedDependency[AuditLog],
    ) -> BulkResult:
        """Retry failed and aborted jobs, by id or by filter (1,000 at most per call)."""
        return await _bulk(AuditAction.BULK_RETRY, data, job_actions, principal, audit)


async def _bulk(
    action: AuditAction,
    data: BulkRequest,
    job_actions: JobActions,
    principal: Principal,
    audit: AuditLog,
) -> BulkResult:
    """Find the jobs (ids, or the filter up to the cap), act on those in the right status."""
    if (data.job_ids is UNSET) == (data.filter is UNSET):
        raise ValidationException(detail="send either job_ids or filter, not both or neither")
    asked_ids = list(dict.fromkeys(data.job_ids)) if data.job_ids is not UNSET else []
    out_of_scope = 0  # asked-for jobs of another project (by job_ids)
    async with audit.recording(principal, action, job_ids=asked_ids) as entry:
        entry.count = 0  # acted on, until the action says otherwise
        if data.filter is not UNSET:
            until = data.filter.window_end(datetime.now(UTC))
            asked = None if data.filter.project_id is UNSET else data.filter.project_id
            entry.filter = {
                **msgspec.to_builtins(data.filter),
                "created_before": until.isoformat(),
            }
            search = data.filter.search(until=until, project_id=project_in_scope(principal, asked))
            statuses = (
                RETRYABLE_STATUSES if action is AuditAction.BULK_RETRY else UNFINISHED_STATUSES
            )
            jobs, more = await job_actions.matching(search, statuses)
        else:
            until, more = None, False
            # Another project's job is one that does not exist, for a scoped key: never
            # acted on, counted as not found (the audit row says how many there were).
            found = await job_actions.find(asked_ids)
            jobs = [job for job in found if principal.sees_project(job.project_id)]
            out_of_scope = len(found) - len(jobs)
        acted = await _act(action, jobs, job_actions, principal)
        if entry.filter is not None:
            entry.job_ids = acted
        entry.count = len(acted)
        not_found = len(asked_ids) - len(jobs) if data.job_ids is not UNSET else 0
        result = BulkResult(
            action="retry" if action is AuditAction.BULK_RETRY else "cancel",
            matched=len(jobs),
            acted_on=len(acted),
            skipped=len(jobs) - len(acted),
            not_found=not_found,
            more_remain=more,
            job_ids=acted,
            created_before=until,
        )
        entry.detail = f"matched {result.matched}, skipped {result.skipped}, not found {not_found}"
        if out_of_scope:
            entry.detail += f" ({out_of_scope} of them another project's)"
        if more:
            entry.detail += f", more than {BULK_LIMIT:,} matched"
    return result


async def _act(
    action: AuditAction, jobs: list[FoundJob], job_actions: JobActions, principal: Principal
) -> list[Any]:
    if action is AuditAction.BULK_RETRY:
        return (await job_actions.retry(retryable(jobs), principal.actor)).job_ids
    cancelled, _ = await job_actions.cancel(jobs, reason="cancelled by API request (bulk)")
    return cancelled


def actions_dependencies(
    sessions: Callable[[], AsyncSession], enqueuer: Enqueuer
) -> dict[str, Provide]:
    """`job_actions`: the process's one `JobActions` (its queue, its outbox's enqueuer)."""
    job_actions = JobActions(sessions, enqueuer, events=enqueuer.queue.recorder.events)

    def provide_job_actions() -> JobActions:
        return job_actions

    return {"job_actions": Provide(provide_job_actions, use_cache=True, sync_to_thread=False)}
