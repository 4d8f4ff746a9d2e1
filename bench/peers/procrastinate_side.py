"""Procrastinate 3.x: a row per job in PostgreSQL, the queue itself is the table."""

from __future__ import annotations

from typing import Any

from bench.common import VENV_BIN, Bench, rounded
from bench.peers.measure import drive
from bench.peers.procrastinate_worker import make_app


async def apply_schema(bench: Bench) -> str:
    """Procrastinate's own schema, beside `background_jobs` in the same database."""
    app = make_app(bench.database_url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    import procrastinate

    return str(procrastinate.__version__)


async def run_procrastinate(bench: Bench, max_seconds: float) -> dict[str, Any]:
    n = bench.config.drain_jobs
    app = make_app(bench.database_url)
    async with app.open_async():
        # One multi-row INSERT: Procrastinate's bulk path.
        ids = await app.tasks["noop"].batch_defer_async(*({} for _ in range(n)))
    if len(ids) != n:
        raise RuntimeError(f"deferred {len(ids)} of {n} Procrastinate jobs")

    async def succeeded() -> int:
        return int(
            await bench.db.fetchval(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
        )

    command = [str(VENV_BIN / "python"), "-m", "bench.peers.procrastinate_worker"]
    child = await bench.spawn("procrastinate-worker", command)
    used = await drive(bench, child, "procrastinate worker started", succeeded, n, max_seconds)
    # Its own event log: a job's `started` and `succeeded` transitions, at commit time.
    window = await bench.db.fetchrow(
        """
        SELECT count(*) FILTER (WHERE type = 'succeeded') AS jobs,
               extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                                 - min(at) FILTER (WHERE type = 'started')) AS seconds
        FROM procrastinate_events
        """
    )
    jobs, seconds = int(window["jobs"]), float(window["seconds"])
    return {
        "jobs": jobs,
        "seconds": rounded(seconds, 3),
        "jobs_s": rounded(jobs / seconds, 1),
        **used,
        "job_x": await _job_x(bench, ids[0]),
    }


async def _job_x(bench: Bench, job_id: int) -> dict[str, Any]:
    status = await bench.db.fetchval("SELECT status FROM procrastinate_jobs WHERE id = $1", job_id)
    return {
        "answers_after_an_hour": status == "succeeded",
        "fact": f"`{status}` in its procrastinate_jobs row, kept (the worker's delete_jobs is "
        "'never' by default), with its events",
        "checked": "the job's procrastinate_jobs row after the run",
        "status_now": status,
    }
