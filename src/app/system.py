"""Health of the API and what it depends on, for load balancers and compose health checks."""

from __future__ import annotations

import gc
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from litestar_saq import TaskQueues
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@get("/health", tags=["system"])
async def health(
    db_session: NamedDependency[AsyncSession], task_queues: NamedDependency[TaskQueues]
) -> Response[dict[str, Any]]:
    """`200` when PostgreSQL and Redis both answer, else `503` naming what is down."""
    checks: dict[str, str] = {}
    try:
        await db_session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        for queue in task_queues.queues.values():
            await queue.count("queued")
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return Response(
        {"status": "ok" if healthy else "degraded", **checks},
        status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE,
    )


def tune_garbage_collector() -> None:
    """Keep the garbage collector's pauses short and rare; called once start-up is done.

    The application built at start-up (Litestar, its OpenAPI model, SQLAlchemy's mappers)
    is most of a process's objects and lives as long as it does: frozen, a full collection
    no longer walks all of it again while every request in flight waits (docs/benchmarks.md
    measured pauses of up to 76 ms under load). The default young-generation threshold (700 objects
    allocated and not yet freed) is crossed every few milliseconds by the requests in flight
    alone; at 10,000 the collector runs when garbage cycles pile up, not on every turn.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(10_000, older, oldest)
