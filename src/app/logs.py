"""The logging config: structlog for our lines and for the standard library's (SAQ,
uvicorn), JSON lines unless on a terminal. A leaf: imports nothing from `app`."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import msgspec
import structlog
from litestar.logging.config import LoggingConfig, StructLoggingConfig
from litestar.types import GetLogger
from saq.job import Job

_LOG_ENCODER = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event: Any, **_: Any) -> bytes:
    return _LOG_ENCODER.encode(event)


class _IsoTimeStamper:
    """structlog's `TimeStamper(fmt="iso")` (UTC, microseconds), with the date and time of
    day rendered once a second instead of once a line (its cost: docs/benchmarks.md)."""

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


# Probed every few seconds by orchestrators: an INFO line each would drown the real requests.
_HEALTH_CHECK_PATHS = frozenset({"/health", "/ready"})


def _access_fields(logger: str, args: object) -> dict[str, Any] | None:
    """The fields of one of uvicorn's access lines (its format's arguments), else None."""
    if logger != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return None
    return dict(zip(("client", "method", "path", "http_version", "status"), args, strict=True))


class _QuietHealthChecks(logging.Filter):
    """Health checks' access lines become DEBUG lines: dropped unless LOG_LEVEL is DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        access = _access_fields(record.name, record.args)
        if access is None or str(access["path"]).partition("?")[0] not in _HEALTH_CHECK_PATHS:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class _MaskJobArguments(logging.Filter):
    """SAQ logs a failed job whole ("Error processing job Job<...>", at ERROR), arguments and
    result included: they are shown through `mask` (REDACT_KEYS' values as `***`), as a
    viewer sees them."""

    def __init__(self, mask: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self._mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            self._mask is not None
            and isinstance(args, tuple)
            and any(isinstance(arg, Job) for arg in args)
        ):
            record.args = tuple(self._shown(arg) if isinstance(arg, Job) else arg for arg in args)
        return True

    def _shown(self, job: Job) -> str:
        assert self._mask is not None
        masked = dataclasses.replace(
            job, kwargs=self._mask(job.kwargs), result=self._mask(job.result)
        )
        return masked.info(full=True)


def _uvicorn_fields(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """An access line as fields instead of uvicorn's text; no terminal colour codes."""
    args = event_dict.pop("positional_args", None)
    event_dict.pop("color_message", None)
    access = _access_fields(event_dict["_record"].name, args)
    if access is not None:
        event_dict.update(event="http request", **access)
    return event_dict


class _StructAndStdlibLogging(StructLoggingConfig):
    """Litestar applies only the structlog half of a StructLoggingConfig (the plugin that
    would apply the rest is not used): apply `standard_lib_logging_config` too, after
    uvicorn's own logging set-up, so SAQ's and uvicorn's lines look like ours."""

    def configure(self) -> GetLogger:
        if self.standard_lib_logging_config is not None:
            self.standard_lib_logging_config.configure()
        return super().configure()


def logging_config(
    log_level: str, as_json: bool, mask: Callable[[Any], Any] | None = None
) -> StructLoggingConfig:
    """structlog for our lines and for stdlib loggers (SAQ, uvicorn) at `log_level` (a level
    name, as `Settings.log_level`): JSON lines if `as_json`, else text for a terminal. `mask`
    shows a job's arguments and result in SAQ's lines (the REDACT_KEYS masking)."""
    level = logging.getLevelNamesMapping()[log_level]
    renderer: structlog.typing.Processor = (
        # The standard library's lines (uvicorn, SAQ) are text: the same msgspec JSON, decoded.
        structlog.processors.JSONRenderer(serializer=lambda e, **_: _json_line(e).decode())
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    # uvicorn's loggers write through the root handler (their own handlers are removed).
    uvicorn = {"level": log_level, "handlers": [], "propagate": True}
    return _StructAndStdlibLogging(
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
        disable_stack_trace={400, 401, 403, 404, 405, 409, 413, 422, 503},
        standard_lib_logging_config=LoggingConfig(
            root={"level": log_level, "handlers": ["queue_listener"]},
            # Litestar's name for the root handler, here a plain stream handler: on stdout like
            # structlog's own lines (one stream, in order), and no queue thread per app.
            handlers={
                "queue_listener": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "standard",
                    "filters": ["quiet_health_checks", "mask_job_arguments"],
                }
            },
            filters={
                "quiet_health_checks": {"()": _QuietHealthChecks},
                "mask_job_arguments": {"()": _MaskJobArguments, "mask": mask},
            },
            formatters={
                "standard": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "pass_foreign_args": True,
                    "foreign_pre_chain": [
                        _IsoTimeStamper(),
                        structlog.stdlib.add_log_level,
                        structlog.stdlib.add_logger_name,
                        structlog.stdlib.ExtraAdder(),
                        _uvicorn_fields,
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
            loggers={
                "saq": {"level": max(level, logging.WARNING), "propagate": True},
                "uvicorn": uvicorn,
                "uvicorn.error": uvicorn,
                "uvicorn.access": uvicorn,
            },
        ),
    )
