"""SAQ's `tests/helpers.py`, ours: every Redis queue SAQ's own tests make is a `TrackedQueue`.

SAQ's sdist ships its test modules but not the `tests/helpers.py` they import (upstream it
builds `Queue.from_url("redis://localhost:6379")`). This file takes its place in the run
folder `test_saq_suite.py` makes, so each queue is the project's, built as
`app.asgi.build_parts` builds it (its recorder on a migrated PostgreSQL database, its
metrics), on the throwaway Redis server the run was given. It is run by a subprocess pytest,
never imported by the project's own tests.
"""

from __future__ import annotations

import os
import typing as t

from saq.queue import Queue

from app.asgi import Parts, build_parts
from app.config import Settings
from app.jobs.queue.tracked import TrackedQueue
from app.worker.settings import REGISTRY

REDIS_URL = os.environ["SAQ_SUITE_REDIS_URL"]
DATABASE_URL = os.environ["SAQ_SUITE_DATABASE_URL"]

_parts: dict[int, Parts] = {}  # by id(queue): what `cleanup_queue` closes


def _settings(name: str, redis_url: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": redis_url,
            "SAQ_QUEUE_NAME": name,
            "LOG_JSON": "true",
            "DB_POOL_SIZE": "2",
        }
    )


async def create_redis_queue(url: str = REDIS_URL, **kwargs: t.Any) -> TrackedQueue:
    """SAQ's helper: a connected queue on an empty Redis; here the project's queue."""
    if not url.startswith("redis"):
        Queue.from_url(url)  # SAQ's own error for a bad URL (TestQueueError expects it)
    name = kwargs.pop("name", "default")
    if kwargs:
        raise TypeError(f"SAQ's suite asked for queue options this helper does not pass: {kwargs}")
    parts = build_parts(_settings(name, url), REGISTRY)
    queue = parts.queue
    _parts[id(queue)] = parts
    await queue.connect()
    await queue.redis.flushdb()
    return queue


async def cleanup_queue(queue: Queue) -> None:
    parts = _parts.pop(id(queue), None)
    if isinstance(queue, TrackedQueue):
        await queue.redis.flushdb()
    if parts is not None:
        await parts.close()  # the queue's disconnect, then the engine
    else:
        await queue.disconnect()


async def _not_in_this_suite(*_args: t.Any, **_kwargs: t.Any) -> t.Any:
    raise RuntimeError("SAQ's PostgreSQL queue tests are not part of this suite (Redis only)")


create_postgres_queue = setup_postgres = teardown_postgres = _not_in_this_suite
