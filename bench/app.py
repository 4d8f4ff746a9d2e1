"""The API as shipped plus one bare route, the baseline of the `trigger` scenario.

    uvicorn --factory bench.app:create_bench_app

Only the benchmark mounts this: the bare route answers a constant body through the same
server, middleware, logging and plugins as the trigger, so their ratio is the cost of the
trigger's own work (one INSERT + COMMIT, one enqueue to Redis).
"""

from __future__ import annotations

from litestar import Litestar, post

from app.asgi import create_app
from app.config import Settings

BARE_PATH = "/bench/bare"


@post(BARE_PATH, status_code=202)
async def bare() -> dict[str, str]:
    return {"message": "bench", "job_id": "00000000-0000-0000-0000-000000000000"}


def create_bench_app() -> Litestar:
    app = create_app(Settings.from_env())
    app.register(bare)
    return app
