"""The `drain` baseline: a plain SAQ worker, no hooks, no tracking, in a process of its own.

    python -m bench.plain_worker   (REDIS_URL, SAQ_QUEUE_NAME, WORKER_CONCURRENCY)

It runs the project's `trigger_test` function, so both sides of the ratio run the same code
per job and differ only in the tracking. It stops on SIGTERM, like `litestar workers run`.
"""

from __future__ import annotations

import asyncio
import os

from saq.queue.redis import RedisQueue
from saq.worker import Worker

from app.worker.tasks import trigger_test


async def main() -> None:
    queue = RedisQueue.from_url(os.environ["REDIS_URL"], name=os.environ["SAQ_QUEUE_NAME"])
    worker = Worker(  # type: ignore[type-var]  # the task's ctx is a plain dict, not SAQ's
        queue,
        [trigger_test],
        concurrency=int(os.environ["WORKER_CONCURRENCY"]),
        shutdown_grace_period_s=0,
    )
    print("plain worker started", flush=True)
    try:
        await worker.start()  # returns once SIGTERM sets its stop event
    finally:
        await queue.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
