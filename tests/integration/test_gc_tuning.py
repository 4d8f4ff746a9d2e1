"""The garbage-collector tuning (`app.runtime.tune_garbage_collector`), seen in fresh processes.

The collector's state is global to a process: in the test process an earlier test's app has
already tuned it, so a check there passes whether or not start-up tunes it. Here each check
runs in a new process: the API's (its state read before and after the app's start-up) and a
real worker's (read by a task it runs). Would catch: the call dropped from the API's
start-up or from the worker's `startup` hook, or made before start-up built what it freezes.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from app.asgi import create_app as create_product_app
from app.config import Settings
from app.jobs.outbox.enqueuer import Enqueuer
from app.jobs.registry import TaskRegistry, tracked_task
from app.runtime import YOUNG_GENERATION_THRESHOLD
from app.worker.settings import TASKS
from tests.support import ROOT, VENV_BIN, Running, app_env, wait_for_row

# Run by a fresh interpreter: the collector as the API process has it before and after its
# start-up (the lifespan that `uvicorn` runs, here run by the test client).
API_START_UP = """
import asyncio, gc, json
from litestar.testing import AsyncTestClient
from app.asgi import create_app

async def main():
    app = create_app()
    before = [gc.get_freeze_count(), gc.get_threshold()[0]]
    async with AsyncTestClient(app=app) as client:
        health = (await client.get("/health")).status_code
        after = [gc.get_freeze_count(), gc.get_threshold()[0]]
    print("GC-STATE " + json.dumps({"before": before, "after": after, "health": health}))

asyncio.run(main())
"""


@tracked_task(timeout=10, attempts=1)
async def garbage_collector_state(ctx: dict[str, Any]) -> list[int]:
    """The collector as the worker process running this task has it."""
    return [gc.get_freeze_count(), gc.get_threshold()[0]]


REGISTRY = TaskRegistry([*TASKS, garbage_collector_state])


def create_app() -> Litestar:
    """The product's app with the task above: `litestar --app <this module>:create_app`."""
    return create_product_app(registry=REGISTRY)


def test_the_api_start_up_freezes_the_collector_and_raises_its_threshold(
    settings: Settings,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", API_START_UP],
        env=app_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    line = next(line for line in ran.stdout.splitlines() if line.startswith("GC-STATE "))
    state = json.loads(line.removeprefix("GC-STATE "))
    assert state["health"] == 200
    # Untouched before start-up, so the check below can only pass if start-up tuned it.
    frozen, threshold = state["before"]
    assert frozen == 0
    assert threshold < YOUNG_GENERATION_THRESHOLD
    frozen, threshold = state["after"]
    assert frozen > 0
    assert threshold == YOUNG_GENERATION_THRESHOLD


async def test_a_worker_runs_its_jobs_with_the_collector_tuned(
    settings: Settings,
    engine: AsyncEngine,
    make_enqueuer: Callable[..., Enqueuer],
) -> None:
    worker = Running(
        [str(VENV_BIN / "litestar"), "--app", f"{__name__}:create_app", "workers", "run"],
        app_env(settings),
        "worker",
    )
    try:
        row = await make_enqueuer(REGISTRY).enqueue(garbage_collector_state, {})
        done = await wait_for_row(
            engine, row.job_id, lambda r: r.status == "complete", within=60, logs=worker.tail
        )
    finally:
        worker.kill()
    assert isinstance(done.result, list), done.result
    frozen, threshold = done.result
    assert frozen > 0, worker.tail()
    assert threshold == YOUNG_GENERATION_THRESHOLD
