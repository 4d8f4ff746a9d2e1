"""Plain SAQ and this project's tracked worker: `make bench`'s drain, one run each.

`bench.drain.drain_once` fills the queue, starts the worker (`python -m bench.plain_worker` or
`litestar workers run`), reads the rate from the jobs' own timestamps and the CPU from /proc;
this module adds the question a user asks later: what happened to job X?
"""

from __future__ import annotations

from typing import Any

from saq.queue.redis import RedisQueue

from bench.common import Bench
from bench.drain import drain_once

HOUR = 3600


async def run_plain(bench: Bench) -> dict[str, Any]:
    result = await drain_once(bench, "plain")
    return {**result, "jobs_done": result["jobs"], "job_x": await _plain_job_x(bench)}


async def run_tracked(bench: Bench) -> dict[str, Any]:
    result = await drain_once(bench, "tracked")
    return {**result, "jobs_done": result["jobs"], "job_x": await _tracked_job_x(bench)}


async def _saq_record(bench: Bench, key: str) -> tuple[str | None, float]:
    """The job's status in Redis and the seconds until Redis forgets it (-1: never)."""
    queue = RedisQueue.from_url(bench.redis_url, name=bench.queue_name)
    try:
        job = await queue.job(key)
        ttl_ms = await bench.redis.pttl(queue.job_id(key))
    finally:
        await queue.disconnect()
    return (job.status.value if job else None), (ttl_ms / 1000 if ttl_ms >= 0 else -1)


async def _plain_job_x(bench: Bench) -> dict[str, Any]:
    status, ttl = await _saq_record(bench, "plain-0")
    return {
        "answers_after_an_hour": ttl < 0 or ttl >= HOUR,
        "fact": f"`{status}` right after the run, but its Redis key expires {ttl:.0f} s after "
        "the job ended (the job's ttl); nothing else keeps it",
        "checked": "SAQ's queue.job(key) right after the run, and the PTTL of its Redis key",
        "status_now": status,
        "forgotten_in_s": round(ttl),
    }


async def _tracked_job_x(bench: Bench) -> dict[str, Any]:
    row = await bench.db.fetchrow(
        "SELECT job_id, status FROM background_jobs ORDER BY created_at, job_id LIMIT 1"
    )
    if row is None:
        raise RuntimeError("no tracked row after the run")
    _, ttl = await _saq_record(bench, str(row["job_id"]))
    return {
        "answers_after_an_hour": row["status"] == "complete",
        "fact": f"`{row['status']}` in its background_jobs row, kept JOB_RETENTION_DAYS (30 by "
        f"default); SAQ's Redis copy expires in {ttl:.0f} s",
        "checked": "the job's background_jobs row after the run, and the PTTL of its Redis key",
        "status_now": row["status"],
        "redis_copy_forgotten_in_s": round(ttl),
    }
