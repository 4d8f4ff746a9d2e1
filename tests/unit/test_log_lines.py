"""`write_lines`: a batch of structlog lines, as `log.info(...)` one by one would write them.

Catches: a batch line that differs from the line structlog writes (a field, the level, the
order), lines below the logger's level written anyway, a batch written with more than one
write, and lines lost when structlog is configured otherwise (tests' `capture_logs`).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import structlog
from structlog.testing import capture_logs

from app.jobs.record.log_lines import Line, write_lines

LINES: list[Line] = [
    ("info", "job started", {"job_id": "a", "task": "t", "attempt": 1, "worker_id": "w"}),
    ("warning", "job event ignored", {"job_id": "b", "task": "t", "attempt": 1}),
    ("info", "job finished", {"job_id": "a", "task": "t", "status": "complete"}),
]


class CountingFile(io.BytesIO):
    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def json_logger(out: io.BytesIO, level: int = logging.INFO) -> Any:
    return structlog.wrap_logger(
        structlog.BytesLogger(out),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(serializer=lambda e, **_: json.dumps(e).encode()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )


def test_a_batch_is_the_lines_structlog_writes_in_one_write() -> None:
    one_by_one, batched = io.BytesIO(), CountingFile()
    for method, event, fields in LINES:
        getattr(json_logger(one_by_one), method)(event, **fields)
    write_lines(json_logger(batched), LINES)
    assert batched.getvalue() == one_by_one.getvalue()
    assert batched.writes == 1
    first = json.loads(batched.getvalue().splitlines()[0])
    assert first == {"event": "job started", "level": "info", **LINES[0][2]}


def test_lines_below_the_level_are_left_out() -> None:
    out = io.BytesIO()
    write_lines(json_logger(out, logging.WARNING), LINES)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        "job event ignored"
    ]


def test_a_text_logger_gets_its_lines_too() -> None:
    out = io.StringIO()
    log = structlog.wrap_logger(
        structlog.WriteLogger(out),
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    write_lines(log, LINES)
    assert [line.split(" ")[0] for line in out.getvalue().splitlines()] == [
        "event='job", "event='job", "event='job"
    ]  # fmt: skip


def test_captured_logs_see_every_line() -> None:
    with capture_logs() as captured:
        write_lines(structlog.get_logger("test"), LINES)
    assert [(entry["log_level"], entry["event"]) for entry in captured] == [
        ("info", "job started"),
        ("warning", "job event ignored"),
        ("info", "job finished"),
    ]
