"""HTTP handlers: parse, call `BackgroundJobService`, return a schema."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED

from app.db.models import BackgroundJob
from app.jobs.schemas import (
    TRIGGER_ACCEPTED_MESSAGE,
    JobAccepted,
    JobCancelRequested,
    JobPage,
    JobRead,
    TriggerTestRequest,
)
from app.jobs.services import BackgroundJobService
from app.jobs.states import JobStatus
from app.worker import tasks


class TaskController(Controller):
    path = "/api/v1/tasks"
    tags = ("tasks",)

    @post("/trigger-test", status_code=HTTP_202_ACCEPTED)
    async def trigger_test(
        self,
        data: JSONBody[TriggerTestRequest],
        jobs_service: NamedDependency[BackgroundJobService],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", min_length=1, max_length=255),
        ] = None,
    ) -> JobAccepted:
        """Queue the test task; the job's row exists and the job is queued when this answers."""
        job = await jobs_service.enqueue(
            tasks.trigger_test,
            {"message": data.message, "sleep_seconds": data.sleep_seconds, "fail": data.fail},
            user_id=data.user_id,
            project_id=data.project_id,
            idempotency_key=idempotency_key,
        )
        return JobAccepted(message=TRIGGER_ACCEPTED_MESSAGE, job_id=str(job.job_id))


def _parse_job_id(job_id: str) -> UUID:
    try:
        return UUID(job_id)
    except ValueError:
        raise ValidationException(
            detail=f"job_id must be a UUID, got {job_id!r}",
            extra=[{"key": "job_id", "message": "not a valid UUID", "source": "path"}],
        ) from None


async def _find_job(jobs_service: BackgroundJobService, job_id: str) -> BackgroundJob:
    """The row of `job_id`: 400 if it is not a UUID, 404 if there is none."""
    row = await jobs_service.get_by_job_id(_parse_job_id(job_id))
    if row is None:
        raise NotFoundException(detail=f"no job with job_id {job_id}")
    return row


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get("/{job_id:str}")
    async def get_job(
        self, job_id: FromPath[str], jobs_service: NamedDependency[BackgroundJobService]
    ) -> JobRead:
        """What happened to one job: its status, timestamps, attempts, result and error."""
        return JobRead.from_row(await _find_job(jobs_service, job_id))

    @post("/{job_id:str}/cancel", status_code=HTTP_202_ACCEPTED)
    async def cancel_job(
        self, job_id: FromPath[str], jobs_service: NamedDependency[BackgroundJobService]
    ) -> JobCancelRequested:
        """Abort a job that is queued or running; the row ends `aborted`. Ended jobs: 409."""
        row = await _find_job(jobs_service, job_id)
        await jobs_service.cancel(row, reason="cancelled by API request")
        return JobCancelRequested(message="cancellation requested", job_id=job_id)

    @get("/")
    async def list_jobs(
        self,
        jobs_service: NamedDependency[BackgroundJobService],
        status: FromQuery[JobStatus | None] = None,
        task_name: FromQuery[str | None] = None,
        user_id: FromQuery[UUID | None] = None,
        project_id: FromQuery[UUID | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> JobPage:
        """Jobs, newest first, filtered by any of status, task, user and project."""
        rows, total = await jobs_service.list_page(
            status=status,
            task_name=task_name,
            user_id=user_id,
            project_id=project_id,
            limit=limit,
            offset=offset,
        )
        return JobPage(
            items=[JobRead.from_columns(row) for row in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
