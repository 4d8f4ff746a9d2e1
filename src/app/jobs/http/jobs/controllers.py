"""HTTP handlers: parse, call the enqueuer or `BackgroundJobService`, return a schema.

Each handler declares every answer it can give (`responses`), so the OpenAPI schema at
/schema/openapi.json lists them with their bodies; the parameters carry the limits the
server checks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi.spec import Example, OpenAPIFormat
from litestar.params import Body, HeaderParameter, PathParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT

from app.auth.audit import AuditAction, AuditLog
from app.auth.guard import BEARER, hide_other_project, project_in_scope, role
from app.auth.roles import Principal, Role
from app.db.models import BackgroundJob
from app.http_common.body import StrictJSONBody
from app.http_common.responses import DATABASE_DOWN, NOT_JSON, errors, string_only
from app.jobs.http.shared.redaction import Redactor
from app.jobs.http.shared.schemas import (
    IDEMPOTENCY_KEY_MAX,
    TRIGGER_ACCEPTED_MESSAGE,
    TRIGGER_EXAMPLE,
    WITHOUT_NUL,
    JobAccepted,
    JobCancelRequested,
    JobRead,
    TriggerTestRequest,
)
from app.jobs.lifecycle import JobStatus
from app.jobs.outbox.after import DependencyError
from app.jobs.outbox.enqueuer import Enqueuer, IdempotencyConflictError
from app.jobs.reads.job_rows import JobRows
from app.jobs.reads.service import BackgroundJobService, JobAlreadyFinishedError
from app.worker import tasks


def conflict(exc: Exception) -> ClientException:
    """A 409 as Litestar's own exception: logged as a client error, not with a traceback."""
    return ClientException(detail=str(exc), status_code=HTTP_409_CONFLICT)


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ("tasks",)
    opt = role(Role.OPERATOR)
    security = BEARER

    @post(
        "/trigger-test",
        status_code=HTTP_202_ACCEPTED,
        dto=StrictJSONBody[TriggerTestRequest],
        return_dto=None,
        responses=errors(
            {
                400: "The body is not JSON, or a value is missing, of the wrong type, out of "
                "range or unknown; or the Idempotency-Key is invalid; or `after` names a job "
                "that does not exist in this job's project. Nothing was written.",
                409: "This Idempotency-Key was already used with a different body.",
                413: "The body is larger than MAX_REQUEST_BODY bytes (64 KiB by default).",
                415: NOT_JSON,
                503: DATABASE_DOWN,
            }
        ),
    )
    async def trigger_test(
        self,
        data: Annotated[TriggerTestRequest, Body(examples=[Example(value=TRIGGER_EXAMPLE)])],
        enqueuer: NamedDependency[Enqueuer],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                description="Repeats with this key return the first request's job; "
                "the same key with another body is a 409.",
                min_length=1,
                max_length=IDEMPOTENCY_KEY_MAX,
                pattern=WITHOUT_NUL,
                schema_extra=string_only(),
            ),
        ] = None,
    ) -> JobAccepted:
        """Queue the test task; the job's row exists and the job is queued when this answers.

        With `after`, the job waits (`waiting`) until those jobs have all completed, and is
        aborted if one fails or is aborted; they must exist, in the new job's project.
        A project-scoped key triggers for its own project (filled in when `project_id` is null).
        """
        project_id = project_in_scope(principal, data.project_id)
        try:
            job = await enqueuer.enqueue(
                tasks.trigger_test,
                {"message": data.message, "sleep_seconds": data.sleep_seconds, "fail": data.fail},
                user_id=data.user_id,
                project_id=project_id,
                idempotency_key=project_idempotency_key(project_id, idempotency_key),
                enqueued_by=principal.actor,
                after=data.after,
            )
        except IdempotencyConflictError as exc:
            raise conflict(exc) from None
        except DependencyError as exc:
            raise ValidationException(
                detail=str(exc), extra=[{"key": "after", "message": str(exc), "source": "body"}]
            ) from None
        return JobAccepted(
            message=TRIGGER_ACCEPTED_MESSAGE, job_id=job.job_id, status=JobStatus(job.status)
        )


def project_idempotency_key(project_id: UUID | None, key: str | None) -> str | None:
    """The key as stored: each project has its own keys, so one tenant can neither block nor
    learn of another's (a repeat of another project's key was a 409). A job of no project
    keeps the key as sent; a project's is its id and the key's SHA-256 (within the column's
    255 characters, whatever the key's length)."""
    if key is None or project_id is None:
        return key
    return f"project {project_id}: {hashlib.sha256(key.encode()).hexdigest()}"


# The schema's `format: uuid` exactly: `UUID()` alone also takes braces, URNs, no dashes.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

JobIdPath = Annotated[
    str,
    PathParameter(
        description="The `job_id` the trigger returned; anything else but a UUID is a 400.",
        format=OpenAPIFormat.UUID,
    ),
]


def _parse_job_id(job_id: str) -> UUID:
    if _UUID_TEXT.fullmatch(job_id):
        return UUID(job_id)
    raise ValidationException(
        detail=f"job_id must be a UUID, got {job_id!r}",
        extra=[{"key": "job_id", "message": "not a valid UUID", "source": "path"}],
    )


async def _find_job(jobs_service: BackgroundJobService, job_id: UUID) -> BackgroundJob:
    row = await jobs_service.get_by_job_id(job_id)
    if row is None:
        raise NotFoundException(detail=f"no job with job_id {job_id}")
    return row


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)
    opt = role(Role.VIEWER)
    security = BEARER

    @get(
        "/{job_id:str}",
        responses=errors(
            {
                400: "job_id is not a UUID.",
                404: "There is no job with this job_id (in the project of a scoped key).",
                503: DATABASE_DOWN,
            }
        ),
    )
    async def get_job(
        self,
        job_id: JobIdPath,
        job_rows: NamedDependency[JobRows],
        principal: NamedDependency[Principal],
        redactor: NamedDependency[Redactor],
    ) -> JobRead:
        """What happened to one job: its status, timestamps, attempts, result and error
        (for a viewer, sensitive argument and result values masked)."""
        wanted = _parse_job_id(job_id)
        row = await job_rows.one(wanted)
        if row is None:
            raise NotFoundException(detail=f"no job with job_id {wanted}")
        hide_other_project(principal, row["project_id"], wanted)
        return redactor.job(JobRead.from_columns(row), principal)

    @post(
        "/{job_id:str}/cancel",
        status_code=HTTP_202_ACCEPTED,
        opt=role(Role.OPERATOR),
        responses=errors(
            {
                400: "job_id is not a UUID.",
                404: "There is no job with this job_id (in the project of a scoped key).",
                409: "The job has already ended (or is no longer on the queue).",
                503: "PostgreSQL or Redis cannot be reached; nothing was changed.",
            }
        ),
    )
    async def cancel_job(
        self,
        job_id: JobIdPath,
        jobs_service: NamedDependency[BackgroundJobService],
        principal: NamedDependency[Principal],
        audit: NamedDependency[AuditLog],
    ) -> JobCancelRequested:
        """Abort a job that is queued or running; the row ends `aborted`. Ended jobs: 409."""
        row = await _find_job(jobs_service, _parse_job_id(job_id))
        async with audit.recording(
            principal,
            AuditAction.CANCEL,
            job_ids=[row.job_id],
            conflicts=(JobAlreadyFinishedError,),
        ):
            hide_other_project(principal, row.project_id, row.job_id)
            await jobs_service.cancel(row, reason="cancelled by API request")
        return JobCancelRequested(message="cancellation requested", job_id=row.job_id)
