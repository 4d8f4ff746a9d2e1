"""How a request gets its `BackgroundJobService`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from litestar.di import NamedDependency
from litestar_saq import TaskQueues
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.jobs.registry import TaskRegistry
from app.jobs.services import BackgroundJobService, Enqueuer


def jobs_service_provider(
    settings: Settings, registry: TaskRegistry
) -> Callable[[AsyncSession, TaskQueues], Coroutine[Any, Any, BackgroundJobService]]:
    async def provide_jobs_service(
        db_session: NamedDependency[AsyncSession], task_queues: NamedDependency[TaskQueues]
    ) -> BackgroundJobService:
        enqueuer = Enqueuer(
            queue=task_queues.get(settings.queue_name),
            registry=registry,
            default_timeout=settings.job_timeout,
        )
        return BackgroundJobService(session=db_session, enqueuer=enqueuer)

    return provide_jobs_service
