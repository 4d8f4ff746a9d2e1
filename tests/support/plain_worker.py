"""A plain SAQ worker on a chaos cluster's queue: SAQ's own `RedisQueue` and `Worker`, none of
the project's (a worker of the previous release during a rolling upgrade, another service's).

Started as `python -m saq tests.support.plain_worker.settings -v` with the cluster's
environment; `PLAIN_WORKER_ID` names it, so a scenario can tell its jobs in Redis.
"""

from __future__ import annotations

import os
from typing import Any

from saq.queue.redis import RedisQueue

from tests.support.app import REGISTRY

STARTED = "plain worker started"


async def _started(ctx: dict[str, Any]) -> None:
    print(STARTED, flush=True)


def settings() -> dict[str, Any]:
    return {
        "queue": RedisQueue.from_url(os.environ["REDIS_URL"], name=os.environ["SAQ_QUEUE_NAME"]),
        "functions": list(REGISTRY.functions),
        "concurrency": int(os.environ.get("WORKER_CONCURRENCY", "10")),
        "id": os.environ.get("PLAIN_WORKER_ID"),
        "startup": _started,
    }
