"""Queue configuration, task registration and the lifecycle hooks of the SAQ worker.

Where the row is written: every transition of a job passes through the queue
(`app.jobs.queue.TrackedQueue`), which reports it to `BackgroundJobService` in batches.
That is what lets a sweep, an abort from `/saq` or a shutdown re-queue reach the row: none
of them runs `before_process`/`after_process`. The hooks below put the job on every log
line the task writes; the reconciler started here repairs what no process could report.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import structlog
from litestar_saq import QueueConfig
from saq.types import Context, PartialTimersDict

from app.jobs.reconciler import Reconciler
from app.jobs.registry import TaskRegistry
from app.system import tune_garbage_collector
from app.worker import tasks

if TYPE_CHECKING:
    from app.config import Settings
    from app.jobs.queue import TrackedQueue

# Every task the worker runs and the API may enqueue.
TASKS = (tasks.trigger_test,)
REGISTRY = TaskRegistry(TASKS)

log = structlog.get_logger("app.worker")


def queue_config(settings: Settings, registry: TaskRegistry = REGISTRY) -> QueueConfig:
    return QueueConfig(
        dsn=settings.redis_url,
        name=settings.queue_name,
        tasks=registry.functions,
        concurrency=settings.worker_concurrency,
        # partials of module functions, so the config survives pickling into child processes.
        startup=partial(startup, settings=settings, registry=registry),
        shutdown=shutdown,
        before_process=before_process,
        after_process=after_process,
        shutdown_grace_period_s=settings.shutdown_grace_period,
        timers=cast(
            "PartialTimersDict",
            # worker_info is how the reconciler tells a live worker from a lost one.
            {"sweep": settings.sweep_interval, "worker_info": _worker_info_interval(settings)},
        ),
    )


def _worker_info_interval(settings: Settings) -> int:
    """Often enough that a live worker never looks lost (SAQ keeps the record interval + 1 s)."""
    return max(1, min(10, int(settings.worker_lost_after // 3)))


def _state(ctx: Context) -> dict[str, Any]:
    """SAQ's ctx is one dict shared by startup, hooks and task; our keys sit beside its own."""
    return cast("dict[str, Any]", ctx)


async def startup(ctx: Context, *, settings: Settings, registry: TaskRegistry) -> None:
    queue = cast("TrackedQueue", ctx["worker"].queue)
    await queue.connect()  # starts the lifecycle recorder (a no-op if already connected)
    reconciler = Reconciler(
        queue,
        registry,
        default_timeout=settings.job_timeout,
        interval=settings.reconcile_interval,
        grace=settings.reconcile_grace,
        worker_lost_after=settings.worker_lost_after,
    )
    _state(ctx)["reconciler"] = asyncio.create_task(reconciler.run(), name="reconciler")
    tune_garbage_collector()
    log.info("worker started", queue=settings.queue_name, concurrency=settings.worker_concurrency)


async def shutdown(ctx: Context) -> None:
    reconciler: asyncio.Task[None] | None = _state(ctx).pop("reconciler", None)
    if reconciler is not None:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
    # Pending lifecycle writes (e.g. re-queues made while stopping) are flushed when the
    # queue disconnects, which litestar-saq does last.


async def before_process(ctx: Context) -> None:
    job = ctx["job"]
    structlog.contextvars.bind_contextvars(job_id=job.key, task=job.function)


async def after_process(ctx: Context) -> None:
    structlog.contextvars.unbind_contextvars("job_id", "task")
