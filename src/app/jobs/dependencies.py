"""How a request gets its `BackgroundJobService`."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.jobs.services import BackgroundJobService, Enqueuer


def jobs_service_provider(
    enqueuer: Enqueuer, engine: Callable[[], AsyncEngine]
) -> Callable[[], BackgroundJobService]:
    """`enqueuer` is the process's own: one queue and one insert batcher for every request.

    The service opens a session only when the request reads (the trigger does not), and
    gives its connection back at the end of each read, so there is nothing to clean up
    after the request (a generator dependency's clean-up was ~3 % of a trigger's CPU).
    Its statements run in autocommit: each read is one statement (a page comes with its
    total), so a transaction would only add BEGIN and ROLLBACK round trips.
    """
    sessions: list[async_sessionmaker[AsyncSession]] = []

    def provide_jobs_service() -> BackgroundJobService:
        if not sessions:  # the engine is made on first use, never at start-up
            autocommit = engine().execution_options(isolation_level="AUTOCOMMIT")
            sessions.append(async_sessionmaker(autocommit, expire_on_commit=False))
        return BackgroundJobService(sessions=sessions[0], enqueuer=enqueuer)

    return provide_jobs_service
