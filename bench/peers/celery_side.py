"""Celery 5.x: a Redis broker, and the SQLAlchemy database result backend on PostgreSQL
(psycopg 3) with `task_track_started`, so each task writes a STARTED row, then its SUCCESS."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from bench.common import VENV_BIN, Bench, rounded
from bench.peers.measure import drive

QUEUE = "bench"
TASK = "bench.noop"
# (pool, processes or threads): the two ways a user runs no-op work at this scale.
POOLS = {"celery_prefork": ("prefork", 2), "celery_threads": ("threads", 10)}


def noop() -> None:
    """Nothing: the same no-op the other systems run."""


def make_app(database_url: str, redis_url: str) -> Celery:
    backend = "db+" + database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    app = Celery("bench_peers", broker=redis_url, backend=backend)
    app.conf.update(
        task_track_started=True,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK)(noop)
    return app


@functools.cache
def _app_for(database_url: str, redis_url: str) -> Celery:
    return make_app(database_url, redis_url)


def _harness_app(bench: Bench) -> Celery:
    """One app per harness: Celery warns when a second app registers the same task name."""
    return _app_for(bench.database_url, bench.redis_url)


async def create_tables(bench: Bench) -> str:
    """The result backend creates `celery_taskmeta` on its first session: not inside a run."""
    import celery

    app = _harness_app(bench)
    await asyncio.to_thread(lambda: app.backend.ResultSession().close())
    return str(celery.__version__)


def _send_all(app: Celery, n: int) -> list[str]:
    task = app.tasks[TASK]
    with app.producer_or_acquire() as producer:
        return [str(task.apply_async(producer=producer).id) for _ in range(n)]


async def run_celery(bench: Bench, system: str, max_seconds: float) -> dict[str, Any]:
    pool, size = POOLS[system]
    n = bench.config.drain_jobs
    app = _harness_app(bench)
    ids = await asyncio.to_thread(_send_all, app, n)

    async def succeeded() -> int:
        return int(
            await bench.db.fetchval("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
        )

    command = [
        str(VENV_BIN / "celery"), "-A", "bench.peers.celery_worker", "worker",
        "--pool", pool, "--concurrency", str(size), "--queues", QUEUE,
        "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--hostname", f"{system}@bench",
    ]  # fmt: skip
    child = await bench.spawn(system, command)
    used = await drive(bench, child, "celery worker started", succeeded, n, max_seconds)
    # The backend keeps one time per task, its last write (SUCCESS overwrites STARTED): the
    # rate counts the intervals between the first and the last job to finish.
    window = await bench.db.fetchrow(
        """
        SELECT count(*) AS jobs, extract(epoch FROM max(date_done) - min(date_done)) AS seconds
        FROM celery_taskmeta WHERE status = 'SUCCESS'
        """
    )
    jobs, seconds = int(window["jobs"]), float(window["seconds"])
    return {
        "jobs": jobs,
        "seconds": rounded(seconds, 3),
        "jobs_s": rounded((jobs - 1) / seconds, 1),
        "pool": f"{pool} {size}",
        **used,
        "job_x": await asyncio.to_thread(_job_x, app, ids[0]),
    }


def _job_x(app: Celery, task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=app)
    kept_hours = round(app.conf.result_expires.total_seconds() / 3600)
    return {
        "answers_after_an_hour": result.state == "SUCCESS",
        "fact": f"`{result.state}` from AsyncResult(id): its celery_taskmeta row, kept "
        f"{kept_hours} h (result_expires; deleted then only if celery beat runs)",
        "checked": "AsyncResult(id).state from the database result backend after the run",
        "status_now": result.state,
    }
