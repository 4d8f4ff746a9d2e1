"""Settings read from the environment once, and the database config built from them (the
logging config is `app.logs`'s). A leaf: imports nothing from `app`."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)

# The project root holds db/migrations; src/app/config.py is two folders below it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Every connection of the process plans without sorts and without JIT. The job list's
# pages come from index scans in the list's order, and a sort would read every matching
# row first (app.jobs.reads.queries); JIT only slows statements this short. Set when a
# connection opens, a page needs no transaction to set them: one round trip per page.
# A statement with no sortless plan still sorts: only the choice between plans changes.
PLANNER_SETTINGS = (("enable_sort", "off"), ("jit", "off"))


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


Number = TypeVar("Number", int, float)


def _env_number(env: Mapping[str, str], name: str, default: Number, minimum: int = 0) -> Number:
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


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


# Shorter keys could be guessed (generated keys are longer).
ADMIN_API_KEY_MIN_LENGTH = 32
# What a secret must hold by the estimate below: repeats and few distinct characters fall
# short, random secrets of that length never do (docs/security.md has the figures).
SECRET_MIN_BITS = 80


def estimated_bits(secret: str) -> float:
    """A generous estimate of a secret's entropy: its length times the Shannon entropy of its
    characters; 0 for a repetition of a shorter string. It catches `"a" * 32` or `"ab" * 16`,
    not every weak choice: generate secrets."""
    if secret in (secret + secret)[1:-1]:  # periodic: "abcabc..."
        return 0.0
    counts = Counter(secret)
    return -sum(n * math.log2(n / len(secret)) for n in counts.values())


def _strong_secret_digest(env: Mapping[str, str], name: str) -> str | None:
    """SHA-256 of the secret named `name`, as `app.auth.keys.digest` spells it (the plaintext
    is not kept); None if unset; SettingsError if it is short or easy to guess."""
    secret = env.get(name) or ""
    if not secret:
        return None
    if len(secret) < ADMIN_API_KEY_MIN_LENGTH:
        raise SettingsError(
            f"{name} must be at least {ADMIN_API_KEY_MIN_LENGTH} characters, got {len(secret)}"
        )
    bits = estimated_bits(secret)
    if bits < SECRET_MIN_BITS:
        raise SettingsError(
            f"{name} is too easy to guess (about {bits:.0f} bits: repeated or few distinct "
            "characters); use a random one, e.g. python -c "
            '"import secrets; print(secrets.token_urlsafe(32))"'
        )
    return hashlib.sha256(secret.encode()).hexdigest()


def _admin_key_digest(env: Mapping[str, str]) -> str | None:
    return _strong_secret_digest(env, "ADMIN_API_KEY")


def _metrics_token_digest(env: Mapping[str, str]) -> str | None:
    """The scrape's bearer token."""
    return _strong_secret_digest(env, "METRICS_TOKEN")


def _session_secret(env: Mapping[str, str]) -> str | None:
    """SESSION_SECRET, shared by the API processes so that a session works in each."""
    secret = env.get("SESSION_SECRET") or ""
    if not secret:
        return None
    if len(secret) < ADMIN_API_KEY_MIN_LENGTH:
        raise SettingsError(
            f"SESSION_SECRET must be at least {ADMIN_API_KEY_MIN_LENGTH} characters, "
            f"got {len(secret)}"
        )
    return secret


def _env_keys(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of keys, lower-cased; `-` alone names none."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip() == "-":
        return ()
    return tuple(key.strip().lower() for key in raw.split(",") if key.strip())


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
    # Seconds a worker of a paused queue waits for the resume's message before it looks itself.
    queue_pause_recheck: float = 5.0
    # Access (docs/security.md): open mode only when asked for and no admin key is given.
    auth_disabled: bool = False
    admin_key_digest: str | None = field(default=None, repr=False)
    # Operations (README, docs/security.md): retention of ended jobs, the /metrics scrape.
    job_retention_days: float = 30.0  # 0: ended jobs are kept for ever; fractions allowed
    # background_jobs's partitions (docs/scaling.md): their width, and how many are made ahead.
    job_partition_minutes: int = 1440
    job_partitions_ahead: int = 3
    audit_retention_days: int = 0  # 0: the audit log is kept for ever
    retention_interval: float = 3600.0
    metrics_token_digest: str | None = field(default=None, repr=False)
    metrics_public: bool = False
    # The jobs API's events and bodies (README "Jobs API"): arguments and results under these
    # keys (any case, at any depth) are masked for viewers.
    redact_keys: tuple[str, ...] = ("password", "token", "secret", "api_key")
    events_heartbeat: float = 15.0  # seconds between two heartbeat comments of a stream
    events_max_stream: float = 3600.0  # seconds a stream lasts before the client reconnects
    events_stream_maxlen: int = 10_000  # events the Redis Stream keeps for resuming, about
    # Signs the monitor's session cookies and CSRF tokens (docs/security.md); None: a random
    # secret per process (sessions end when it restarts, and are not shared between processes).
    session_secret: str | None = field(default=None, repr=False)
    # Host names the API answers besides this machine's loopback names (docs/security.md):
    # checked in open mode, and with the checks on once any is given; `*`: any name.
    allowed_hosts: tuple[str, ...] = ()
    # Failed keys and logins per client address and minute before it is refused (429); 0: no
    # limit (docs/security.md).
    auth_failures_per_minute: int = 20

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (the process's environment if None), which is only read."""
        env = os.environ if environ is None else environ
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
            queue_pause_recheck=_env_number(
                env, "QUEUE_PAUSE_RECHECK_SECONDS", defaults.queue_pause_recheck, minimum=1
            ),
            auth_disabled=_env_bool(env, "AUTH_DISABLED", defaults.auth_disabled),
            admin_key_digest=_admin_key_digest(env),
            job_retention_days=_env_number(env, "JOB_RETENTION_DAYS", defaults.job_retention_days),
            job_partition_minutes=_env_number(
                env, "JOB_PARTITION_MINUTES", defaults.job_partition_minutes, minimum=1
            ),
            job_partitions_ahead=_env_number(
                env, "JOB_PARTITIONS_AHEAD", defaults.job_partitions_ahead, minimum=1
            ),
            audit_retention_days=_env_number(
                env, "AUDIT_RETENTION_DAYS", defaults.audit_retention_days
            ),
            retention_interval=_env_number(
                env, "RETENTION_INTERVAL", defaults.retention_interval, minimum=1
            ),
            metrics_token_digest=_metrics_token_digest(env),
            metrics_public=_env_bool(env, "METRICS_PUBLIC", defaults.metrics_public),
            redact_keys=_env_keys(env, "REDACT_KEYS", defaults.redact_keys),
            events_heartbeat=_env_number(
                env, "EVENTS_HEARTBEAT_SECONDS", defaults.events_heartbeat
            ),
            events_max_stream=_env_number(
                env, "EVENTS_MAX_STREAM_SECONDS", defaults.events_max_stream
            ),
            events_stream_maxlen=_env_number(
                env, "EVENTS_STREAM_MAXLEN", defaults.events_stream_maxlen, minimum=100
            ),
            session_secret=_session_secret(env),
            allowed_hosts=_env_keys(env, "ALLOWED_HOSTS", defaults.allowed_hosts),
            auth_failures_per_minute=_env_number(
                env, "AUTH_FAILURES_PER_MINUTE", defaults.auth_failures_per_minute
            ),
        )

    @property
    def open_mode(self) -> bool:
        """No access checks: AUTH_DISABLED=true, and no ADMIN_API_KEY (a key turns them on)."""
        return self.auth_disabled and self.admin_key_digest is None

    def engine_options(self) -> dict[str, Any]:
        return {
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_pool_size,
            # No pool_pre_ping: app.db.connection.create_engine checks at checkout instead.
            # A failed statement's error names its SQL, never its values (a key's digest, a
            # job's arguments) in a log line or an answer.
            "hide_parameters": True,
            "connect_args": {"server_settings": dict(PLANNER_SETTINGS)},
        }


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        connection_string=settings.database_url,
        engine_config=EngineConfig(**settings.engine_options()),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # A request's own session (only /ready and /metrics use one) ends with its response.
        before_send_handler="autocommit",
        alembic_config=AlembicAsyncConfig(script_location=str(settings.migrations_path)),
        create_all=False,
    )
