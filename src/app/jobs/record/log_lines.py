"""Several structlog lines rendered by the configured processors and written at once.

A worker logs two lines per job; rendered one by one, each pays structlog's call and a
write and flush of its own. Here a batch's lines go through the very same processor chain
(the same fields, level and format as `log.info(...)` gives), and when the configured logger
writes to a stream (structlog's own `BytesLogger`, `WriteLogger`, `PrintLogger`), they are
written with one call. Any other logger gets them one by one, as structlog would hand them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import structlog
from structlog.exceptions import DropEvent

# One line: the logger's method name ("info", "warning"), the event, its fields.
Line = tuple[str, str, dict[str, Any]]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_STREAM_LOGGERS = (structlog.BytesLogger, structlog.WriteLogger, structlog.PrintLogger)


def write_lines(log: Any, lines: Sequence[Line]) -> None:
    """Log `lines` through `log` (a structlog logger), in their order."""
    if not lines:
        return
    bound = log.bind()  # the configured bound logger, with its processors and output
    enabled = getattr(bound, "is_enabled_for", None)
    process = getattr(bound, "_process_event", None)
    output = getattr(bound, "_logger", None)
    if enabled is None or process is None or output is None:  # not a structlog BoundLogger
        for method, event, fields in lines:
            getattr(log, method)(event, **fields)
        return
    rendered: list[Any] = []
    for method, event, fields in lines:
        if not enabled(_LEVELS[method]):
            continue
        try:
            args, kwargs = process(method, event, fields)
        except DropEvent:
            continue
        if isinstance(output, _STREAM_LOGGERS) and not kwargs and len(args) == 1:
            rendered.append(args[0])
        else:
            getattr(output, method)(*args, **kwargs)
    if not rendered:
        return
    joined: Any = None
    if all(isinstance(line, bytes) for line in rendered):
        joined = b"\n".join(rendered)
    elif all(isinstance(line, str) for line in rendered):
        joined = "\n".join(rendered)
    for line in rendered if joined is None else [joined]:
        output.msg(line)
