"""What the jobs API's handlers receive: the process's `Enqueuer` and a `BackgroundJobService`."""

from __future__ import annotations

from collections.abc import Callable

from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.reads.job_rows import JobRows
from app.jobs.reads.service import BackgroundJobService


def jobs_dependencies(
    enqueuer: Enqueuer, sessions: Callable[[], AsyncSession], job_rows: JobRows
) -> dict[str, Provide]:
    """`enqueuer` is the process's own: one queue and one insert batcher for every request.

    The trigger takes the enqueuer alone: a session per request would cost it more than the
    rest of its work (docs/benchmarks.md). `jobs_service` is a plain dependency, not a
    generator, and reads with autocommit sessions (`autocommit_sessions`): the service gives
    its connection back after each read, so there is nothing to clean up after a request.
    `job_rows` is the process's one `JobRows`: `GET` one job reads through the driver.
    """

    def provide_enqueuer() -> Enqueuer:
        return enqueuer

    def provide_job_rows() -> JobRows:
        return job_rows

    def provide_jobs_service() -> BackgroundJobService:
        return BackgroundJobService(sessions(), enqueuer=enqueuer, job_rows=job_rows)

    return {
        "enqueuer": Provide(provide_enqueuer, use_cache=True, sync_to_thread=False),
        "job_rows": Provide(provide_job_rows, use_cache=True, sync_to_thread=False),
        "jobs_service": Provide(provide_jobs_service, sync_to_thread=False),
    }
