"""A pytest plugin for the run of SAQ's own suite (`-p saq_plugin`): proof it used our moves.

It counts the calls of the project's Redis moves (`JobMoves`: take, mark, finish, retry) and
the queues made by class, and writes both to `SAQ_SUITE_REPORT` when the run ends, so the
caller can tell a run that went through the moves from one that never reached them.
`SAQ_SUITE_BREAK` breaks one move on purpose (the self-test: the suite must then fail):

- `finish-publish`: finish stores the job as SAQ does but drops its PUBLISH;
- `take-lost`: take moves a job to the active list and hands it to no one.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

# SAQ's test-only packages, after the venv's own (tests/saq_suite/sdist.py).
sys.path.append(os.environ["SAQ_SUITE_DEPS"])

from saq.queue.redis import RedisQueue

from app.jobs.pipeline import Script
from app.jobs.queue import moves, scripts
from app.jobs.queue.moves import JobMoves

CALLS: Counter[str] = Counter()
QUEUES: Counter[str] = Counter()
BREAKS = ("finish-publish", "take-lost")


def _counted(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def counted(self: JobMoves, *args: Any, **kwargs: Any) -> Any:
        CALLS[name] += 1
        result = await method(self, *args, **kwargs)
        if name == "take" and result is not moves.EMPTY:
            CALLS["take handed a job"] += 1
        return result

    return counted


def _break(mode: str) -> None:
    if mode == "finish-publish":
        publish = "redis.call('PUBLISH', KEYS[3], ARGV[5])"
        assert publish in scripts.FINISH.text, "the finish script changed: update this break"
        moves.FINISH = Script(scripts.FINISH.text.replace(publish, ""))  # what finish() sends
    elif mode == "take-lost":
        take = JobMoves.take

        async def take_and_lose(self: JobMoves) -> Any:
            taken = await take(self)
            return moves.EMPTY if taken is moves.EMPTY else None

        JobMoves.take = take_and_lose  # type: ignore[method-assign]
    else:
        raise ValueError(f"SAQ_SUITE_BREAK must be one of {BREAKS}, got {mode!r}")


def _count_queues() -> None:
    init = RedisQueue.__init__

    def counted_init(self: RedisQueue, *args: Any, **kwargs: Any) -> None:
        QUEUES[type(self).__name__] += 1
        init(self, *args, **kwargs)

    RedisQueue.__init__ = counted_init  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    mode = os.environ.get("SAQ_SUITE_BREAK")
    if mode:
        _break(mode)
    for name in ("take", "mark", "finish", "retry"):
        setattr(JobMoves, name, _counted(name, getattr(JobMoves, name)))
    _count_queues()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = os.environ.get("SAQ_SUITE_REPORT")
    if report:
        Path(report).write_text(json.dumps({"calls": CALLS, "queues": QUEUES}))
