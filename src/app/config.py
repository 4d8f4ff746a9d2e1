"""Settings read from the environment once, and the plugin configs built from them."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import litestar_saq.config
import msgspec
import structlog
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from litestar.config.app import AppConfig
from litestar.logging.config import LoggingConfig, StructLoggingConfig
from litestar.plugins import InitPluginProtocol
from litestar.serialization import decode_json
from litestar_saq import SAQConfig, SAQPlugin
from redis.asyncio import from_url as redis_from_url

from app.jobs.queue import TrackedQueue
from app.jobs.registry import TaskRegistry

# The project root holds db/migrations; src/app/config.py is two folders below it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


Number = TypeVar("Number", int, float)


def _env_number(env: dict[str, str], name: str, default: Number, minimum: int = 0) -> Number:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


def _async_database_url(url: str) -> str:
    """Accept the usual postgres:// spellings and pin the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SettingsError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment; see the README's configuration table."""

    database_url: str = "postgresql+asyncpg://user:password@localhost:5432/app_db"
    redis_url: str = "redis://localhost:6379/0"
    queue_name: str = "background-jobs"
    worker_concurrency: int = 10
    job_timeout: int = 60
    shutdown_grace_period: int = 10
    db_pool_size: int = 10
    log_level: str = "INFO"
    log_json: bool = field(default_factory=lambda: not sys.stderr.isatty())
    saq_web_enabled: bool = True
    max_request_body: int = 64 * 1024
    migrations_path: Path = PROJECT_ROOT / "db" / "migrations"
    # Reliability (docs/reliability.md): how fast a lost job or a dead worker is noticed.
    reconcile_interval: float = 5.0
    reconcile_grace: float = 10.0
    worker_lost_after: float = 30.0
    sweep_interval: int = 10
    flush_interval_ms: float = 2.0
    busy_flush_interval_ms: float = 10.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        defaults = cls()
        log_level = env.get("LOG_LEVEL", defaults.log_level).upper()
        if log_level not in logging.getLevelNamesMapping():
            raise SettingsError(f"LOG_LEVEL must be a logging level name, got {log_level!r}")
        return cls(
            database_url=_async_database_url(env.get("DATABASE_URL") or defaults.database_url),
            redis_url=env.get("REDIS_URL") or defaults.redis_url,
            queue_name=env.get("SAQ_QUEUE_NAME") or defaults.queue_name,
            worker_concurrency=_env_number(
                env, "WORKER_CONCURRENCY", defaults.worker_concurrency, minimum=1
            ),
            job_timeout=_env_number(env, "JOB_TIMEOUT", defaults.job_timeout, minimum=1),
            shutdown_grace_period=_env_number(
                env, "WORKER_SHUTDOWN_GRACE_PERIOD", defaults.shutdown_grace_period
            ),
            db_pool_size=_env_number(env, "DB_POOL_SIZE", defaults.db_pool_size, minimum=1),
            log_level=log_level,
            log_json=_env_bool(env, "LOG_JSON", defaults.log_json),
            saq_web_enabled=_env_bool(env, "SAQ_WEB_ENABLED", defaults.saq_web_enabled),
            max_request_body=_env_number(
                env, "MAX_REQUEST_BODY", defaults.max_request_body, minimum=1024
            ),
            migrations_path=Path(env.get("MIGRATIONS_PATH") or defaults.migrations_path),
            reconcile_interval=_env_number(env, "RECONCILE_INTERVAL", defaults.reconcile_interval),
            reconcile_grace=_env_number(env, "RECONCILE_GRACE", defaults.reconcile_grace),
            worker_lost_after=_env_number(env, "WORKER_LOST_AFTER", defaults.worker_lost_after),
            sweep_interval=_env_number(env, "SWEEP_INTERVAL", defaults.sweep_interval, minimum=1),
            flush_interval_ms=_env_number(
                env, "LIFECYCLE_FLUSH_INTERVAL_MS", defaults.flush_interval_ms
            ),
            busy_flush_interval_ms=_env_number(
                env, "LIFECYCLE_BUSY_FLUSH_INTERVAL_MS", defaults.busy_flush_interval_ms
            ),
        )

    def engine_options(self) -> dict[str, Any]:
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_pool_size,
            "pool_pre_ping": True,
        }


_LOG_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: Any, **_: Any) -> bytes:
    return _LOG_ENCODER.encode(event)


class _IsoTimeStamper:
    """structlog's `TimeStamper(fmt="iso")` (UTC, microseconds), with the date and time of
    day rendered once a second instead of once a line: a third of a log line's cost."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads never see half of it

    def __call__(
        self, _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second, prefix = self._second
        if int(now) != second:
            second = int(now)
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        event_dict["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def logging_config(settings: Settings) -> StructLoggingConfig:
    """structlog for our lines and for stdlib loggers (SAQ, uvicorn): JSON unless on a TTY."""
    level = logging.getLevelNamesMapping()[settings.log_level]
    as_json = settings.log_json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    return StructLoggingConfig(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _IsoTimeStamper(),
            structlog.processors.format_exc_info,
            # Workers write two lines per job: msgspec renders them several times faster.
            structlog.processors.JSONRenderer(serializer=_json_line) if as_json else renderer,
        ],
        logger_factory=structlog.BytesLoggerFactory()
        if as_json
        else structlog.WriteLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        log_exceptions="always",
        # A client's mistake is answered with a 4xx; its stack trace is noise in the log.
        disable_stack_trace={400, 404, 405, 409, 413, 422, 503},
        standard_lib_logging_config=LoggingConfig(
            root={"level": settings.log_level, "handlers": ["queue_listener"]},
            formatters={
                "standard": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "foreign_pre_chain": [
                        _IsoTimeStamper(),
                        structlog.stdlib.add_log_level,
                        structlog.stdlib.ExtraAdder(),
                    ],
                    # format_exc_info: SAQ logs failures with logger.exception(...).
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                }
            },
            # SAQ's own per-job info lines repeat our "job started"/"job finished" lines.
            loggers={"saq": {"level": max(level, logging.WARNING), "propagate": True}},
        ),
    )


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        connection_string=settings.database_url,
        engine_config=EngineConfig(**settings.engine_options()),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # Lifecycle writes commit explicitly (the row must be committed before the enqueue).
        before_send_handler="autocommit",
        alembic_config=AlembicAsyncConfig(script_location=str(settings.migrations_path)),
        create_all=False,
    )


class ApiQueueLifecycle(InitPluginProtocol):
    """The API process's side of litestar-saq: queues, but no in-process workers.

    Drops the worker start-up hooks litestar-saq adds (workers run in their own process,
    `litestar workers run`; here the hooks would only start an idle heartbeat thread and bind
    worker fields to every API log line), and disconnects the queues at shutdown so their
    pending lifecycle writes (aborts from `/saq`) are flushed. Listed after `SAQPlugin`.
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
        app_config.on_shutdown.append(self._disconnect_queues)
        return app_config

    async def _disconnect_queues(self) -> None:
        for queue in self._saq.get_queues().queues.values():
            await queue.disconnect()


def tracked_queue(settings: Settings) -> TrackedQueue:
    """The queue of this process; nothing connects until it is used."""
    return TrackedQueue(
        # Fail fast when Redis is unreachable instead of hanging a request or a worker.
        redis_from_url(settings.redis_url, socket_connect_timeout=2),
        name=settings.queue_name,
        dump=litestar_saq.config.serializer,
        load=decode_json,
        database_url=settings.database_url,
        # No pre-ping: the recorder retries a failed batch anyway, and a ping per flush
        # would double the round trips of the worker's only database traffic.
        engine_options={**settings.engine_options(), "pool_pre_ping": False},
        flush_interval=settings.flush_interval_ms / 1000,
        busy_flush_interval=settings.busy_flush_interval_ms / 1000,
    )


def saq_config(settings: Settings, registry: TaskRegistry | None = None) -> SAQConfig:
    from app.worker.settings import REGISTRY, queue_config

    return SAQConfig(
        queue_configs=[queue_config(settings, registry or REGISTRY)],
        queue_instances={settings.queue_name: tracked_queue(settings)},
        web_enabled=settings.saq_web_enabled,
        web_path="/saq",
        use_server_lifespan=False,
    )
