"""The tasks, the cron schedule, the SAQ plugin's configuration and the worker's hooks.

Where the row is written: every transition of a job passes through the queue
(`app.jobs.queue.tracked.TrackedQueue`), which hands it to its recorder. That is what lets a sweep,
an abort from `/saq` or a shutdown re-queue reach the row: none of them runs
`before_process`/`after_process`. The hooks below only put the job on every log line the
task writes; the reconciler started here repairs what no process could report.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import structlog
from litestar.config.app import AppConfig
from litestar.plugins import InitPluginProtocol
from litestar_saq import CronJob, QueueConfig, SAQConfig, SAQPlugin
from saq.job import CronJob as SaqCronJob
from saq.types import Context, PartialTimersDict

from app.jobs.lifecycle import CRON as CRON_META
from app.jobs.queue.identity import this_process
from app.jobs.registry import TaskRegistry, policy_of
from app.runtime import tune_garbage_collector
from app.worker import tasks

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig

    from app.config import Settings
    from app.jobs.queue.tracked import TrackedQueue
    from app.jobs.reconciler import Reconciler
    from app.ops.retention import Retention

# Every task the worker runs and the API may enqueue.
TASKS = (tasks.trigger_test,)
REGISTRY = TaskRegistry(TASKS)
# Tasks the worker runs on a schedule: `CronJob(tasks.name, cron="0 3 * * *")` (UTC; a sixth
# field counts seconds). Each run gets its own row; the task's @tracked_task policy applies.
CRON: tuple[CronJob, ...] = ()

log = structlog.get_logger(__name__)


def saq_config(
    settings: Settings,
    registry: TaskRegistry,
    queue: TrackedQueue,
    reconciler: Reconciler,
    database: SQLAlchemyAsyncConfig,
    cron: Sequence[SaqCronJob[Any]] | None = None,
    retention: Retention | None = None,
) -> SAQConfig:
    """The SAQ plugin's configuration around this process's one queue.

    `litestar workers run` forks its extra worker processes from the process that built
    `queue`: each child has its own copy, unconnected, with nothing opened yet. `cron`
    defaults to `CRON`; `retention`, when given, runs in every worker (one at a time).
    """
    return SAQConfig(
        queue_configs=[queue_config(settings, registry, reconciler, database, cron, retention)],
        queue_instances={queue.name: queue},
        web_enabled=settings.saq_web_enabled,
        web_path="/saq",
        use_server_lifespan=False,
    )


def queue_config(
    settings: Settings,
    registry: TaskRegistry,
    reconciler: Reconciler,
    database: SQLAlchemyAsyncConfig,
    cron: Sequence[SaqCronJob[Any]] | None = None,
    retention: Retention | None = None,
) -> QueueConfig:
    identity: dict[str, Any] = {}  # filled in by the worker's process when it starts
    return QueueConfig(
        dsn=settings.redis_url,
        name=settings.queue_name,
        tasks=registry.functions,
        scheduled_tasks=[
            tracked_cron(job, settings.job_timeout) for job in (CRON if cron is None else cron)
        ],
        concurrency=settings.worker_concurrency,
        startup=partial(
            startup,
            settings=settings,
            reconciler=reconciler,
            retention=retention,
            identity=identity,
        ),
        shutdown=partial(shutdown, database=database),
        before_process=before_process,
        after_process=after_process,
        shutdown_grace_period_s=settings.shutdown_grace_period,
        metadata=identity,  # SAQ's worker record carries it (app.jobs.queue.identity)
        timers=cast(
            "PartialTimersDict",
            # worker_info is how the reconciler tells a live worker from a lost one.
            {"sweep": settings.sweep_interval, "worker_info": _worker_info_interval(settings)},
        ),
    )


@dataclass
class TrackedCronJob(CronJob):
    """A cron task with its whole policy and its schedule in every run it enqueues.

    SAQ's worker hands a CronJob's fields to `queue.enqueue` as the run's Job fields
    (`Worker.schedule`): these two complete the task's retry policy, and `meta` carries the
    schedule to the run's row.
    """

    retry_delay: float = 0.0
    retry_backoff: bool | float = False


def tracked_cron(job: SaqCronJob[Any], default_timeout: int) -> TrackedCronJob:
    """`job` run as its task's `@tracked_task` policy says, its schedule recorded per run."""
    if any(value is not None for value in (job.timeout, job.retries, job.heartbeat)):
        raise ValueError(
            f"cron task {job.function.__qualname__}: declare timeout, attempts and heartbeat "
            "with @tracked_task on the function, not on its CronJob"
        )
    policy = policy_of(job.function).job_settings(default_timeout)
    return TrackedCronJob(
        function=job.function,
        cron=job.cron,
        unique=job.unique,  # SAQ's semantics: a unique cron task runs one run at a time
        timeout=policy["timeout"],
        heartbeat=policy["heartbeat"],
        retries=policy["retries"],
        ttl=job.ttl,
        kwargs=job.kwargs,
        meta={**getattr(job, "meta", {}), CRON_META: job.cron},
        retry_delay=policy["retry_delay"],
        retry_backoff=policy["retry_backoff"],
    )


def _worker_info_interval(settings: Settings) -> int:
    """Often enough that a live worker never looks lost (SAQ keeps the record interval + 1 s)."""
    return max(1, min(10, int(settings.worker_lost_after // 3)))


def _state(ctx: Context) -> dict[str, Any]:
    """SAQ's ctx is one dict shared by startup, hooks and task; our keys sit beside its own."""
    return cast("dict[str, Any]", ctx)


async def startup(
    ctx: Context,
    *,
    settings: Settings,
    reconciler: Reconciler,
    retention: Retention | None,
    identity: dict[str, Any],
) -> None:
    worker = ctx["worker"]
    await worker.queue.connect()  # starts the lifecycle recorder (a no-op if connected)
    # Before SAQ's first worker record (its upkeep starts after the startup hooks).
    identity.update(this_process(worker.queue.name, worker.concurrency, worker.queue.started))
    _state(ctx)["reconciler"] = asyncio.create_task(reconciler.run(), name="reconciler")
    if retention is not None:
        _state(ctx)["retention"] = asyncio.create_task(retention.run(), name="retention")
    tune_garbage_collector()
    forward_stop_to_worker_processes()
    log.info("worker started", queue=settings.queue_name, concurrency=settings.worker_concurrency)


def forward_stop_to_worker_processes() -> None:
    """In the first process of `workers run --workers N`: pass a SIGTERM on to the others.

    `docker stop` signals the container's first process only, and litestar-saq's own
    handler, which would stop the others, is replaced by its event loop's: the other
    processes kept taking jobs until they were killed, and their running jobs ended `failed`
    (worker lost). Each stops as the first one does: its running jobs are re-queued within
    WORKER_SHUTDOWN_GRACE_PERIOD. The loop's own handler still runs: set_wakeup_fd tells it
    of every signal that has a Python handler.
    """
    if multiprocessing.parent_process() is not None or not multiprocessing.active_children():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            if child.pid:  # started (never 0: that would be our own process group)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, forward)


async def shutdown(ctx: Context, *, database: SQLAlchemyAsyncConfig) -> None:
    for name in ("reconciler", "retention"):
        loop: asyncio.Task[None] | None = _state(ctx).pop(name, None)
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
    # The pool's idle connections close now; the recorder's held one stays checked out and
    # flushes pending writes (e.g. re-queues made while stopping) when litestar-saq
    # disconnects the queue, last.
    if database.engine_instance is not None:
        await database.engine_instance.dispose()


async def before_process(ctx: Context) -> None:
    job = ctx["job"]
    structlog.contextvars.bind_contextvars(job_id=job.key, task=job.function)


async def after_process(ctx: Context) -> None:
    structlog.contextvars.unbind_contextvars("job_id", "task")


class ApiQueueLifecycle(InitPluginProtocol):
    """The API process's side of litestar-saq: queues, but no in-process workers.

    Drops the worker start-up hooks litestar-saq adds (workers run in their own process,
    `litestar workers run`; here the hooks would only start an idle heartbeat thread and bind
    worker fields to every API log line), connects the queues at start-up (a Redis the
    queue cannot run on is refused there, in one line), and disconnects them at shutdown so
    their pending lifecycle writes (aborts from `/saq`) are flushed. Listed after `SAQPlugin`.
    """

    def __init__(self, saq: SAQPlugin) -> None:
        self._saq = saq

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        worker_hooks: set[Any] = set()
        for worker in self._saq.get_workers().values():
            if worker.separate_process:
                worker_hooks |= {worker.on_app_startup, worker.on_app_shutdown}
        app_config.on_startup = [h for h in app_config.on_startup if h not in worker_hooks]
        app_config.on_shutdown = [h for h in app_config.on_shutdown if h not in worker_hooks]
        app_config.on_startup.append(self._connect_queues)
        app_config.on_shutdown.append(self._disconnect_queues)
        return app_config

    async def _connect_queues(self) -> None:
        for queue in self._saq.get_queues().queues.values():
            await queue.connect()

    async def _disconnect_queues(self) -> None:
        for queue in self._saq.get_queues().queues.values():
            await queue.disconnect()
