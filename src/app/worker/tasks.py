"""Task functions the worker runs. Each declares its policy with `@tracked_task`.

Tasks run at least once: a retry, or a job redelivered after a worker died, runs the
function again, so a task must be safe to repeat (idempotent).

To add a task: write an `async def name(ctx, **arguments)` here, decorate it with
`@tracked_task(...)`, and add it to `TASKS` in `worker/settings.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.jobs.registry import tracked_task


class TestTaskFailure(RuntimeError):
    """Raised on purpose by `trigger_test` when asked to, so failure tracking can be seen."""


@tracked_task(timeout=330, attempts=1)
async def trigger_test(
    ctx: dict[str, Any], *, message: str, sleep_seconds: float = 0.1, fail: bool = False
) -> dict[str, Any]:
    """The seed's test task: wait a little, then echo the message (or fail on request)."""
    await asyncio.sleep(sleep_seconds)
    if fail:
        raise TestTaskFailure(f"test task failed on request: {message}")
    return {"message": message, "slept_seconds": sleep_seconds}
