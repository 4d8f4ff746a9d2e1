"""How a request gets its `BackgroundJobService`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.services import BackgroundJobService, Enqueuer


def jobs_service_provider(
    enqueuer: Enqueuer,
) -> Callable[[AsyncSession], Coroutine[Any, Any, BackgroundJobService]]:
    """`enqueuer` is the process's own: one queue, one insert batcher for every request."""

    async def provide_jobs_service(
        db_session: NamedDependency[AsyncSession],
    ) -> BackgroundJobService:
        return BackgroundJobService(session=db_session, enqueuer=enqueuer)

    return provide_jobs_service
