"""The real app with the tasks the chaos and e2e scenarios need, each counting its runs.

Started as `litestar --app tests.support.app:create_app workers run` and
`uvicorn --factory tests.support.app:create_app`, exactly like the product's own processes.
The chaos tasks' timeout is longer than any scenario's window, so SAQ's sweep of a job over
its timeout cannot be what recovers them: only the mechanism a scenario names can.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar_saq import CronJob

from app.asgi import create_app as create_product_app
from app.jobs.registry import TaskRegistry, tracked_task
from app.worker.tasks import trigger_test
from tests.support.executions import counted
from tests.support.gate import wait_at_gate

TEST_APP = "tests.support.app:create_app"
TEST_CRON_APP = "tests.support.app:create_cron_app"  # the same, with SCHEDULES
BEYOND_ANY_WINDOW = 600  # seconds; a scenario settles in well under this


@counted
@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=3, retry_delay=0.2, max_retry_delay=1)
async def chaos_sleep(
    ctx: dict[str, Any], *, seconds: float, payload: str = ""
) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@counted
@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=1)
async def chaos_sleep_once(ctx: dict[str, Any], *, seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@counted
@tracked_task(timeout=2, attempts=1)
async def chaos_overrun(ctx: dict[str, Any], *, seconds: float) -> dict[str, float]:
    """Runs past its two-second timeout: what a sweep is for when its worker cannot react."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


class ChaosFailure(RuntimeError):
    """Raised on purpose by a chaos task's first attempt."""


# The gated tasks count their runs at the gate (a folder): Redis may restart empty meanwhile.
@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=1)
async def chaos_gated(ctx: dict[str, Any], *, gate: str) -> dict[str, int]:
    """Succeeds once the test opens its gate."""
    await wait_at_gate(gate, ctx["job"])
    return {"attempt": ctx["job"].attempts}


@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=2, retry_delay=0.2, max_retry_delay=0.2)
async def chaos_gated_failing_once(ctx: dict[str, Any], *, gate: str) -> dict[str, int]:
    """Its first attempt fails once the test opens its gate; the second succeeds."""
    await wait_at_gate(gate, ctx["job"])
    if ctx["job"].attempts == 1:
        raise ChaosFailure("the first attempt fails on purpose")
    return {"attempt": ctx["job"].attempts}


@counted
@tracked_task(timeout=2, attempts=2)
async def chaos_heartbeat_overrun(ctx: dict[str, Any], *, every: float) -> dict[str, int]:
    """Its first attempt heartbeats until its 2 s timeout; the second returns at once."""
    job = ctx["job"]
    while job.attempts == 1:
        await job.update()  # a heartbeat: SAQ's SET of the job, and its PUBLISH
        await asyncio.sleep(every)
    return {"attempt": job.attempts}


@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=2, retry_delay=0.1)
async def refuse_credentials(
    ctx: dict[str, Any], *, password: str, db_password: str, note: str
) -> None:
    """Fails every attempt, as a call refused by a remote service would: its arguments hold
    secrets, its error message does not (tests/integration/test_auth_logs.py)."""
    raise PermissionError("the remote service refused the credentials")


REGISTRY = TaskRegistry(
    [
        counted(trigger_test),
        chaos_sleep,
        chaos_sleep_once,
        chaos_overrun,
        chaos_gated,
        chaos_gated_failing_once,
        chaos_heartbeat_overrun,
        refuse_credentials,
    ]
)


def create_app() -> Litestar:
    return create_product_app(registry=REGISTRY)


@counted
@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=1)
async def every_second(ctx: dict[str, Any]) -> dict[str, str]:
    """A schedule's run, each second (tests of the cron page and of pausing a schedule)."""
    return {"ran": str(ctx["job"].scheduled)}


@tracked_task(timeout=BEYOND_ANY_WINDOW, attempts=1)
async def nightly_cleanup(ctx: dict[str, Any]) -> None:
    """A schedule whose next run waits in Redis for hours (what a pause withdraws)."""


CRON_REGISTRY = TaskRegistry([*REGISTRY.functions, every_second, nightly_cleanup])
SCHEDULES = (
    CronJob(every_second, cron="* * * * * *"),
    CronJob(nightly_cleanup, cron="0 3 * * *"),
)


def create_cron_app() -> Litestar:
    return create_product_app(registry=CRON_REGISTRY, cron=SCHEDULES)
