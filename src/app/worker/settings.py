"""Queue configuration, task registration and the lifecycle hooks of the SAQ worker.

The hooks only report to `BackgroundJobService`; what a report means for the row is
decided there. A failed report is logged and never fails the job itself.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import structlog
from litestar_saq import QueueConfig
from saq.types import Context
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.jobs.registry import TaskRegistry
from app.jobs.services import BackgroundJobService, epoch_ms_to_datetime
from app.jobs.states import from_saq
from app.worker import tasks

# Every task the worker runs and the API may enqueue.
TASKS = (tasks.trigger_test,)
REGISTRY = TaskRegistry(TASKS)

if TYPE_CHECKING:
    from app.config import Settings

log = structlog.get_logger("app.worker")


def queue_config(settings: Settings, registry: TaskRegistry = REGISTRY) -> QueueConfig:
    return QueueConfig(
        dsn=settings.redis_url,
        name=settings.queue_name,
        tasks=registry.functions,
        concurrency=settings.worker_concurrency,
        # partials of module functions, so the config survives pickling into child processes.
        startup=partial(startup, settings=settings),
        shutdown=shutdown,
        before_process=before_process,
        after_process=after_process,
        shutdown_grace_period_s=settings.shutdown_grace_period,
    )


def _state(ctx: Context) -> dict[str, Any]:
    """SAQ's ctx is one dict shared by startup, hooks and task; our keys sit beside its own."""
    return cast("dict[str, Any]", ctx)


async def startup(ctx: Context, *, settings: Settings) -> None:
    engine = create_async_engine(settings.database_url, **settings.engine_options())
    _state(ctx)["db_engine"] = engine
    _state(ctx)["db_sessions"] = async_sessionmaker(engine, expire_on_commit=False)
    log.info("worker started", queue=settings.queue_name, concurrency=settings.worker_concurrency)


async def shutdown(ctx: Context) -> None:
    engine: AsyncEngine | None = _state(ctx).get("db_engine")
    if engine is not None:
        await engine.dispose()


async def before_process(ctx: Context) -> None:
    state = _state(ctx)
    job = state["job"]
    state["started_monotonic"] = time.monotonic()
    try:
        async with state["db_sessions"]() as session:
            await BackgroundJobService(session).mark_running(
                UUID(job.key),
                attempt=job.attempts,
                worker_id=job.worker_id,
                started_at=epoch_ms_to_datetime(job.started) or datetime.now(UTC),
            )
    except Exception:
        log.exception("could not record job start", job_id=job.key)
    # Logged after the write: whoever reads this line and then the row sees the same status.
    log.info("job started", job_id=job.key, task=job.function, attempt=job.attempts)


async def after_process(ctx: Context) -> None:
    state = _state(ctx)
    job = state["job"]
    exception = state.get("exception")
    duration_ms = round(
        (time.monotonic() - state.get("started_monotonic", time.monotonic())) * 1000
    )
    try:
        async with state["db_sessions"]() as session:
            await BackgroundJobService(session).record_outcome(job, exception)
    except Exception:
        log.exception("could not record job outcome", job_id=job.key)
    fields: dict[str, Any] = {
        "job_id": job.key,
        "task": job.function,
        "status": from_saq(job.status).value,
        "attempt": job.attempts,
        "duration_ms": duration_ms,
    }
    if exception is not None:
        fields["error"] = f"{type(exception).__name__}: {exception}"
    log.info("job finished", **fields)
