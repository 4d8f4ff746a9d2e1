"""The real app, with two extra tasks the chaos scenarios need (slow, with and without retries).

Started as `litestar --app tests.chaos.app:create_app workers run` and
`uvicorn --factory tests.chaos.app:create_app`, exactly like the product's own processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar

from app.asgi import create_app as create_product_app
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.settings import TASKS


@tracked_task(timeout=60, attempts=3, retry_delay=0.2, max_retry_delay=1)
async def chaos_sleep(ctx: dict[str, Any], *, seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@tracked_task(timeout=60, attempts=1)
async def chaos_sleep_once(ctx: dict[str, Any], *, seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


REGISTRY = TaskRegistry([*TASKS, chaos_sleep, chaos_sleep_once])


def create_app() -> Litestar:
    return create_product_app(registry=REGISTRY)
