"""The composition root: `create_app(settings)` wires plugins, routes and dependencies.

`litestar --app app.asgi:create_app ...` and `uvicorn --factory app.asgi:create_app`
call it with no argument, reading the settings from the environment. The API process and
every worker process (the SAQ plugin's CLI calls it too) build their parts here, once:
one engine, the one queue and its recorder, the enqueuer, the reconciler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import litestar_saq.config
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from litestar import Litestar
from litestar.serialization import decode_json
from litestar_saq import SAQPlugin
from redis.asyncio import from_url as redis_from_url
from saq.job import CronJob
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.audit import AuditLog
from app.auth.cli import KeysCli
from app.auth.cross_site import CrossSiteChecks
from app.auth.guard import AccessControl, Authenticator
from app.auth.http import AuditController, KeyController, access_dependencies
from app.auth.saq_web import SaqWebRoles
from app.auth.session import SessionCookies, SessionStore
from app.auth.throttle import FailureThrottle
from app.config import Settings, SettingsError, sqlalchemy_config
from app.db.connection import HeldConnection, autocommit_sessions, create_engine
from app.jobs.control.cli import QueuesCli
from app.jobs.control.queues import QueuePausing
from app.jobs.control.schedules import Schedules
from app.jobs.http.control.actions import JobActionController, actions_dependencies
from app.jobs.http.control.queues import QueueController, queues_dependencies
from app.jobs.http.control.schedules import ScheduleController, schedules_dependencies
from app.jobs.http.control.workers import WorkerController, workers_dependencies
from app.jobs.http.jobs.controllers import JobController, TaskController
from app.jobs.http.jobs.events import EventController
from app.jobs.http.jobs.listing import JobListController
from app.jobs.http.jobs.streams import events_dependencies
from app.jobs.http.shared.dependencies import jobs_dependencies
from app.jobs.http.shared.exception_handlers import exception_handlers
from app.jobs.http.shared.redaction import Redactor, redaction_dependencies
from app.jobs.metrics import JobMetrics
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.queue.gate import QueueGate
from app.jobs.queue.pauses import SchedulePauses
from app.jobs.queue.tracked import TrackedQueue
from app.jobs.reads.event_hub import EventHub
from app.jobs.reads.job_rows import JobRows
from app.jobs.reads.workers import Workers
from app.jobs.reconciler import Reconciler
from app.jobs.record.events import EventPublisher, stream_key
from app.jobs.record.recorder import LifecycleRecorder
from app.jobs.registry import TaskRegistry
from app.logs import logging_config
from app.monitor.plugin import Monitor
from app.monitor.security import MONITOR_PATH, session_secret
from app.ops.collector import JobsCollector
from app.ops.http import Operations, ScrapeAccess
from app.ops.partitions import Partitions
from app.ops.probes import Probes
from app.ops.retention import Retention
from app.runtime import tune_garbage_collector
from app.web_ui import (
    DOCS_PATH,
    SECURITY_HEADERS,
    BrowserPolicies,
    RedirectToTrailingSlash,
    describe_open_mode,
    docs_assets_router,
    openapi_config,
)
from app.worker.settings import REGISTRY, ApiQueueLifecycle, saq_config


@dataclass(frozen=True)
class Parts:
    """What one process builds once and its API and worker share."""

    database: SQLAlchemyAsyncConfig  # its engine, made on first use, is the process's one
    sessions: Callable[[], AsyncSession]  # autocommit sessions for reads
    queue: TrackedQueue
    enqueuer: Enqueuer
    reconciler: Reconciler
    retention: Retention  # run by the workers, and by admins through the API
    metrics: JobMetrics  # the queue's and the recorder's job counts

    async def close_clients(self) -> None:
        """Close the Redis client and the engine (a CLI command's, which connected nothing else)."""
        await self.queue.redis.aclose()
        await self.close_engine()

    async def close(self) -> None:
        """Flush and close what the parts opened (the app's own shutdown does it in the API)."""
        await self.queue.disconnect()
        await self.enqueuer.close()
        await self.close_engine()

    async def close_engine(self) -> None:
        """Close the pool's connections. The API's shutdown calls it too: advanced-alchemy's
        disposes the engine only under its first state key, which a second app in one
        process (a test's) no longer has."""
        if self.database.engine_instance is not None:
            await self.database.engine_instance.dispose()


def build_parts(settings: Settings, registry: TaskRegistry) -> Parts:
    """The process's parts; nothing connects until it is used."""
    database = sqlalchemy_config(settings)
    database.create_engine_callable = create_engine  # checked at checkout, no pre-ping
    engine = database.get_engine
    sessions = autocommit_sessions(engine)
    # Fail fast when Redis is unreachable instead of hanging a request or a worker.
    redis = redis_from_url(settings.redis_url, socket_connect_timeout=2)
    metrics = JobMetrics(redis, settings.queue_name)  # counted here, added up in Redis
    queue = TrackedQueue(
        redis,
        name=settings.queue_name,
        dump=litestar_saq.config.serializer,
        load=decode_json,
        recorder=LifecycleRecorder(
            HeldConnection(engine),
            flush_interval=settings.flush_interval_ms / 1000,
            busy_flush_interval=settings.busy_flush_interval_ms / 1000,
            metrics=metrics,
            events=EventPublisher(redis, settings.queue_name, maxlen=settings.events_stream_maxlen),
        ),
        metrics=metrics,
        pauses=SchedulePauses(sessions, settings.queue_name),  # runs of paused cron schedules
        gate=QueueGate(redis, settings.queue_name, sessions, recheck=settings.queue_pause_recheck),
    )
    # Concurrent triggers share one INSERT and one Redis pipeline.
    enqueuer = Enqueuer(queue, registry, settings.job_timeout, HeldConnection(engine))
    queue.recorder.release = enqueuer.enqueue_recorded  # children released by a parent's end
    reconciler = Reconciler(
        queue,
        enqueuer,
        sessions,
        interval=settings.reconcile_interval,
        grace=settings.reconcile_grace,
        worker_lost_after=settings.worker_lost_after,
    )
    partitions = Partitions(
        engine,
        width=timedelta(minutes=settings.job_partition_minutes),
        ahead=settings.job_partitions_ahead,
    )
    retention = Retention(
        sessions,
        partitions,
        redis,
        settings.queue_name,
        job_days=settings.job_retention_days,
        audit_days=settings.audit_retention_days,
        interval=settings.retention_interval,
        metrics=metrics,
    )
    return Parts(database, sessions, queue, enqueuer, reconciler, retention, metrics)


def create_app(
    settings: Settings | None = None,
    registry: TaskRegistry = REGISTRY,
    cron: Sequence[CronJob[Any]] | None = None,
) -> Litestar:
    """The API, and (through the SAQ plugin's CLI) the worker, for `registry`'s tasks and the
    schedules `cron` (default: `CRON` in `worker/settings.py`)."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as exc:  # one line that says what to change, no traceback
            raise SystemExit(f"configuration error: {exc}") from None
    parts = build_parts(settings, registry)
    queues = saq_config(
        settings,
        registry,
        parts.queue,
        parts.reconciler,
        parts.database,
        cron=cron,
        retention=parts.retention,
    )
    saq = SAQPlugin(queues)
    # Every route declares the role it needs (docs/security.md); open mode lets all in.
    secret = session_secret(settings.session_secret)
    cookies = SessionCookies(secret)  # the monitor's logins, which the guard accepts too
    authenticator = Authenticator(
        parts.sessions,
        open_mode=settings.open_mode,
        bootstrap_digest=settings.admin_key_digest,
        disabled_but_keyed=settings.auth_disabled and not settings.open_mode,
        cookies=cookies,
        session_store=SessionStore(parts.queue.redis, f"bgj:{settings.queue_name}:session"),
        throttle=(
            FailureThrottle(settings.auth_failures_per_minute)
            if settings.auth_failures_per_minute
            else None
        ),
    )
    audit = AuditLog(parts.sessions)
    # The schedules the workers run, as this process's queue config holds them.
    declared = [job for config in queues.queue_configs for job in config.scheduled_tasks]
    schedules = Schedules(declared, settings.queue_name, parts.sessions, audit)
    queue_pausing = QueuePausing([settings.queue_name], parts.queue.redis, parts.sessions, audit)
    events = EventHub(parts.queue.redis, stream_key(settings.queue_name))
    app = Litestar(
        route_handlers=[
            TaskController,
            JobController,
            JobListController,
            JobActionController,
            EventController,
            QueueController,
            ScheduleController,
            WorkerController,
            KeyController,
            AuditController,
            docs_assets_router(),
        ],
        plugins=[
            SQLAlchemyPlugin(config=parts.database),
            saq,
            ApiQueueLifecycle(saq),
            # After `saq`, whose UI routes it gives their roles (and a link to the monitor).
            SaqWebRoles(queues, audit, monitor_path=MONITOR_PATH),
            AccessControl(authenticator),
            KeysCli(parts.database),
            QueuesCli(queue_pausing, parts.close_clients),
            Monitor(
                parts.sessions,
                authenticator,
                cookies,
                secret,
                queues.web_path if queues.web_enabled else None,
            ),
            Probes(settings.migrations_path, parts.database.alembic_config.version_table_name),
            Operations(
                JobsCollector(parts.metrics, parts.queue, parts.sessions),
                parts.retention,
                ScrapeAccess(
                    authenticator,
                    token_digest=settings.metrics_token_digest,
                    public=settings.metrics_public,
                ),
            ),
        ],
        dependencies={
            **jobs_dependencies(parts.enqueuer, parts.sessions, JobRows(parts.database.get_engine)),
            **actions_dependencies(parts.sessions, parts.enqueuer),
            **redaction_dependencies(settings.redact_keys),
            **schedules_dependencies(schedules),
            **queues_dependencies(queue_pausing),
            **workers_dependencies(Workers(parts.sessions)),
            # One reader of the job events per API process, shared by every stream.
            **events_dependencies(events, settings.events_heartbeat, settings.events_max_stream),
            # Keys change in transactions (a key and its audit row together); made on first use.
            **access_dependencies(
                lambda: parts.database.create_session_maker()(), authenticator, audit
            ),
        },
        exception_handlers=exception_handlers(),
        # SAQ's lines about a failed job show its arguments masked as a viewer sees them.
        logging_config=logging_config(
            settings.log_level, settings.log_json, Redactor(settings.redact_keys).value
        ),
        openapi_config=openapi_config(title="Tracked background jobs", version="0.1.0"),
        middleware=[
            # First: no route, and no other check, sees a request another site made.
            CrossSiteChecks(open_mode=settings.open_mode, allowed_hosts=settings.allowed_hosts),
            BrowserPolicies(queues.web_path, DOCS_PATH),
            *([RedirectToTrailingSlash(queues.web_path)] if queues.web_enabled else []),
        ],
        response_headers=SECURITY_HEADERS,
        request_max_body_size=settings.max_request_body,
        on_shutdown=[parts.enqueuer.close, events.close, parts.close_engine],  # in this order
    )
    if settings.open_mode:
        app.on_startup.append(describe_open_mode)
    app.on_startup.append(tune_garbage_collector)  # last: after every plugin's start-up
    return app
