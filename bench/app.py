"""The API as shipped plus what only the benchmark mounts.

    uvicorn --factory bench.app:create_bench_app

- `POST /bench/bare` answers a constant body through the same server, middleware, logging
  and plugins as the trigger, so their ratio is the cost of the trigger's own work.
- `GET /bench/gc` lists the garbage collector's pauses in this process (generation, ms),
  recorded by a `gc.callbacks` hook: the tail latencies follow them.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from litestar import Litestar, get, post

from app.asgi import create_app
from app.auth.guard import PUBLIC, role
from app.auth.roles import Role
from app.config import Settings

BARE_PATH = "/bench/bare"
GC_PATH = "/bench/gc"

_pauses: list[tuple[int, float]] = []
_started = [0.0]


def _time_collections(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses.append((info["generation"], (time.perf_counter() - _started[0]) * 1000))


@post(BARE_PATH, status_code=202, opt=role(Role.OPERATOR))  # the trigger's own access check
async def bare() -> dict[str, str]:
    return {"message": "bench", "job_id": "00000000-0000-0000-0000-000000000000"}


@get(GC_PATH, opt=PUBLIC)  # the benchmark's own probe
async def gc_pauses() -> list[tuple[int, float]]:
    return _pauses


def create_bench_app() -> Litestar:
    app = create_app(Settings.from_env())
    app.register(bare)
    app.register(gc_pauses)
    gc.callbacks.append(_time_collections)
    return app
