"""How a request gets its `BackgroundJobService`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.jobs.services import BackgroundJobService, Enqueuer


def jobs_service_provider(
    enqueuer: Enqueuer, engine: Callable[[], AsyncEngine]
) -> Callable[[], AsyncGenerator[BackgroundJobService, Any]]:
    """`enqueuer` is the process's own: one queue and one insert batcher for every request.

    The service opens a session only if the request reads (the trigger does not). Its
    statements run in autocommit: each is one statement (a page comes with its total), so
    a transaction would only add BEGIN and ROLLBACK round trips to every read.
    """
    sessions: list[async_sessionmaker[AsyncSession]] = []

    async def provide_jobs_service() -> AsyncGenerator[BackgroundJobService, Any]:
        if not sessions:  # the engine is made on first use, never at start-up
            autocommit = engine().execution_options(isolation_level="AUTOCOMMIT")
            sessions.append(async_sessionmaker(autocommit, expire_on_commit=False))
        service = BackgroundJobService(sessions=sessions[0], enqueuer=enqueuer)
        try:
            yield service
        finally:
            await service.close()

    return provide_jobs_service
