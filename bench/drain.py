"""`drain` and `scale`: how fast workers empty a queue of N no-op jobs, plain SAQ vs tracked.

Both sides run the project's `trigger_test` with `sleep_seconds=0` (its body is one
`asyncio.sleep(0)`), at the same concurrency, each worker in a fresh process. The queue is
filled before the workers start, and the rate is read from the jobs' own timestamps
afterwards, so process start-up and our polling never enter it:

    jobs/s = jobs finished in the window / window
    window = from the moment the last worker to start took its first job
             to the moment the last job was done

"Done" for plain SAQ is the job's `completed` time in Redis; for the tracked worker it is the
`updated_at` PostgreSQL gave the UPDATE that made the row terminal, i.e. a tracked job only
counts once its row says so. Every job must end `complete`, or the run fails.

The pairs run at BENCH_CONCURRENCY (the headline) and at BENCH_HIGH_CONCURRENCY (`c50`).
Redis's own command counters (INFO commandstats, reset once the queue is filled) give the
commands each job costs; they count the commands a script runs as well as the script's call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from saq.job import Job
from saq.queue.redis import RedisQueue

from app.asgi import build_parts
from app.config import Settings
from app.worker.settings import REGISTRY
from bench.common import TERMINAL, VENV_BIN, Bench, Child, median, rounded
from bench.job_ids import job_id_sql
from bench.profile import Profiler
from bench.redis_ceiling import per_job, redis_calls

TASK = "trigger_test"
ARGUMENTS = {"message": "bench", "sleep_seconds": 0, "fail": False}
ENQUEUE_CHUNK = 500


def _job(key: str) -> Job:
    policy = REGISTRY.policy(TASK).job_settings(default_timeout=60)
    return Job(function=TASK, kwargs=dict(ARGUMENTS), key=key, **policy)


async def _enqueue_all(queue: RedisQueue, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), ENQUEUE_CHUNK):
        chunk = keys[start : start + ENQUEUE_CHUNK]
        enqueued = await asyncio.gather(*(queue.enqueue(_job(key)) for key in chunk))
        if not all(enqueued):
            raise RuntimeError("a bench job was not enqueued")


async def fill_plain(bench: Bench, n: int) -> list[str]:
    queue = RedisQueue.from_url(bench.redis_url, name=bench.queue_name)
    keys = [f"plain-{i}" for i in range(n)]
    try:
        await _enqueue_all(queue, keys)
    finally:
        await queue.disconnect()
    return keys


async def fill_tracked(bench: Bench, n: int) -> list[str]:
    """The rows first (status queued, as the API writes them), then their jobs, keyed by job_id."""
    rows = await bench.db.fetch(
        f"""
        INSERT INTO background_jobs
            (id, job_id, task_name, queue, status, arguments, attempts, max_attempts,
             created_at, updated_at)
        SELECT gen_random_uuid(), {job_id_sql("now()", "g")}, $1, $2, 'queued', $3::jsonb, 0, 1,
               now(), now()
        FROM generate_series(1, $4) AS g
        RETURNING job_id
        """,  # noqa: S608 - constants only
        TASK,
        bench.queue_name,
        json.dumps(ARGUMENTS),
        n,
    )
    keys = [str(row["job_id"]) for row in rows]
    # What autovacuum does to a table that grew this much: the planner sees the rows (a
    # lookup by job id then probes its index, not a scan of the batch's time range).
    await bench.db.execute("ANALYZE background_jobs")
    # The queue the API enqueues with (its serializer), by the outbox's path (`enqueue_many`:
    # the rows exist); never connected: its recorder never writes.
    queue = build_parts(Settings.from_env(bench.env()), REGISTRY).queue
    try:
        for start in range(0, len(keys), ENQUEUE_CHUNK):
            chunk = keys[start : start + ENQUEUE_CHUNK]
            if not all(await queue.enqueue_many([_job(key) for key in chunk])):
                raise RuntimeError("a bench job was not enqueued")
    finally:
        await queue.disconnect()
    return keys


def window_rate(done: Iterable[tuple[str | None, float, float]]) -> tuple[int, float]:
    """(jobs, seconds) while every worker was running; items are (worker, started, done)."""
    records = list(done)
    first_start: dict[str | None, float] = {}
    for worker, started, _ in records:
        first_start[worker] = min(started, first_start.get(worker, started))
    window_start = max(first_start.values())
    window_end = max(finished for _, _, finished in records)
    jobs = sum(1 for _, _, finished in records if finished >= window_start)
    return jobs, window_end - window_start


async def _until(probe: Any, children: Sequence[Child], what: str, within: float) -> None:
    """Poll a cheap count: subscribing to every job's status would steal the workers' CPU."""
    deadline = time.monotonic() + within
    while not await probe():
        for child in children:
            if child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited while draining:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {within:.0f}s")
        await asyncio.sleep(0.2)


async def _plain_done(
    bench: Bench, keys: list[str], children: Sequence[Child]
) -> tuple[list[Any], dict[str, int]]:
    """(worker, started, done) of every job, and the Redis calls until the queue was empty."""
    queue = RedisQueue.from_url(bench.redis_url, name=bench.queue_name)
    try:

        async def drained() -> bool:
            return await queue.count("incomplete") == 0

        await _until(drained, children, "the plain queue to drain", 60 + len(keys) / 50)
        calls = await redis_calls(bench)  # before our own reads of the jobs
        jobs: list[Job | None] = []
        for start in range(0, len(keys), 1000):
            jobs.extend(await queue.jobs(keys[start : start + 1000]))
    finally:
        await queue.disconnect()
    if any(job is None or job.status != "complete" for job in jobs):
        statuses = {str(job.status) if job else None for job in jobs}
        raise RuntimeError(f"a plain job did not complete: {statuses}")
    return [(job.worker_id, job.started / 1000, job.completed / 1000) for job in jobs if job], calls


async def _tracked_done(bench: Bench, n: int, children: Sequence[Child]) -> list[Any]:
    async def terminal() -> bool:
        count = await bench.db.fetchval(
            "SELECT count(*) FROM background_jobs WHERE status = ANY($1)", list(TERMINAL)
        )
        return bool(count == n)

    await _until(terminal, children, f"{n} terminal rows", 60 + n / 50)
    rows = await bench.db.fetch(
        """
        SELECT worker_id, status, extract(epoch FROM started_at) AS started,
               extract(epoch FROM updated_at) AS done
        FROM background_jobs
        """
    )
    if any(row["status"] != "complete" for row in rows):
        raise RuntimeError("a tracked job did not complete")
    return [(row["worker_id"], float(row["started"]), float(row["done"])) for row in rows]


async def _terminal_flushes(bench: Bench) -> int:
    """Rows made terminal by one UPDATE share its now(): distinct updated_at = flushes."""
    return int(await bench.db.fetchval("SELECT count(DISTINCT updated_at) FROM background_jobs"))


# The line each kind of worker prints once it is ready to take jobs.
STARTED = {"plain": "plain worker started", "tracked": '"worker started"'}


def _cpu_used(bench: Bench, children: Sequence[Child]) -> dict[str, float]:
    """CPU seconds used so far by the workers (together), PostgreSQL and Redis."""
    return {"worker": sum(sum(child.cpu_seconds()) for child in children)} | (
        bench.server_cpu_seconds()
    )


async def drain_once(
    bench: Bench,
    mode: str,
    workers: int = 1,
    profile: Profiler | None = None,
    concurrency: int | None = None,
    alongside: Callable[[], Awaitable[list[Child]]] | None = None,
) -> dict[str, Any]:
    """Fill, start `workers` fresh processes, wait until every job is done, read the rate.
    `alongside`: what else runs meanwhile (its processes, started before the workers)."""
    n = bench.config.drain_jobs
    await bench.reset()
    keys = await (fill_plain(bench, n) if mode == "plain" else fill_tracked(bench, n))
    extra_env = {"WORKER_CONCURRENCY": str(concurrency)} if concurrency else {}
    if mode == "plain":
        # Plain SAQ's first sweep aborts jobs a starting worker has dequeued but not yet marked
        # active (SAQ #277); holding its lock lets it finish every job. TrackedQueue's own
        # sweep avoids the race, so the tracked side sweeps as in production.
        await bench.redis.set(f"saq:{bench.queue_name}:sweep", 1, ex=600)
    children: list[Child] = []
    children_alongside: list[Child] = []
    await bench.redis.config_resetstat()  # from here on: the workers' commands (and our polls)
    try:
        if alongside is not None:
            children_alongside = await alongside()
        for i in range(workers):
            if mode == "plain":
                command = [str(VENV_BIN / "python"), "-m", "bench.plain_worker"]
                children.append(await bench.spawn(f"plain-worker-{i}", command, **extra_env))
            else:
                children.append(await bench.start_worker(f"worker-{i}", **extra_env))
        # CPU is counted from here: the worker's start-up (imports) is not what we look at.
        for child in children:
            await child.wait_for_output(STARTED[mode])
        before = _cpu_used(bench, children)
        if profile is not None:
            await profile.attach(children[0].pid)
        if mode == "plain":
            done, calls = await _plain_done(bench, keys, children)
        else:
            done = await _tracked_done(bench, n, children)  # polls PostgreSQL only
            calls = await redis_calls(bench)
        reads = (await bench.redis.info("stats"))["total_reads_processed"]
        used = {
            f"{name}_cpu_ms_per_job": rounded((seconds - before[name]) * 1000 / n, 3)
            for name, seconds in _cpu_used(bench, children).items()
        }
    finally:
        for child in [*children, *children_alongside]:
            await bench.retire(child, "plain_worker" if mode == "plain" else "worker")
        if profile is not None:
            await profile.finish()
    jobs, seconds = window_rate(done)
    result = {
        "jobs": jobs,
        "seconds": rounded(seconds, 3),
        "jobs_s": rounded(jobs / seconds, 1),
        **used,
        "redis_commands_per_job": rounded(sum(calls.values()) / n, 2),
        "redis_calls_per_job": per_job(calls, n),
        # Reads Redis made on its sockets: the writes that woke it (ours included, a few).
        "redis_reads_per_job": rounded(reads / n, 2),
    }
    if mode == "tracked":
        result["rows_per_terminal_flush"] = rounded(n / await _terminal_flushes(bench), 2)
    return result


def _summary(pairs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Medians over the pairs of one concurrency; ratio = median of the pairs' ratios."""
    sides = ("plain", "tracked")
    cpu = [
        p["tracked"]["worker_cpu_ms_per_job"] / p["plain"]["worker_cpu_ms_per_job"] for p in pairs
    ]
    return {
        "ratio": rounded(median([p["ratio"] for p in pairs]), 3),
        "worker_cpu_ratio": rounded(median(cpu), 3),  # tracked / plain worker CPU per job
        "plain_jobs_s": rounded(median([p["plain"]["jobs_s"] for p in pairs]), 1),
        "tracked_jobs_s": rounded(median([p["tracked"]["jobs_s"] for p in pairs]), 1),
        "rows_per_terminal_flush": median([p["tracked"]["rows_per_terminal_flush"] for p in pairs]),
        **{
            f"{side}_{name}_cpu_ms_per_job": median(
                [p[side][f"{name}_cpu_ms_per_job"] for p in pairs]
            )
            for side in sides
            for name in ("worker", "postgres", "redis")
        },
        "redis_commands_per_job": {
            side: median([p[side]["redis_commands_per_job"] for p in pairs]) for side in sides
        },
        "redis_calls_per_job": {
            side: {
                name: median([p[side]["redis_calls_per_job"].get(name, 0.0) for p in pairs])
                for name in sorted({n for p in pairs for n in p[side]["redis_calls_per_job"]})
            }
            for side in sides
        },
        "concurrency": concurrency,
        "pairs": pairs,
    }


async def run_drain(bench: Bench) -> dict[str, Any]:
    """Plain vs tracked, one worker each, alternated pairs, at BENCH_CONCURRENCY (the headline)
    and at BENCH_HIGH_CONCURRENCY (under `c<n>`)."""
    headline, high = bench.config.concurrency, bench.config.high_concurrency
    levels = [headline, *([high] if high and high != headline else [])]
    pairs: dict[int, list[dict[str, Any]]] = {level: [] for level in levels}
    for i in range(bench.config.pairs):
        for level in levels:
            plain = await drain_once(bench, "plain", concurrency=level)
            tracked = await drain_once(bench, "tracked", concurrency=level)
            ratio = tracked["jobs_s"] / plain["jobs_s"]
            pairs[level].append({"plain": plain, "tracked": tracked, "ratio": rounded(ratio, 3)})
            print(f"  drain pair {i + 1} at concurrency {level}: plain {plain['jobs_s']} jobs/s, "
                  f"tracked {tracked['jobs_s']} jobs/s, ratio {ratio:.3f}", flush=True)  # fmt: skip
    result: dict[str, Any] = {
        **_summary(pairs[headline], headline),
        "jobs": bench.config.drain_jobs,
        **{f"c{level}": _summary(pairs[level], level) for level in levels[1:]},
    }
    if bench.config.profile:
        profiler = Profiler(bench, "drain-tracked-worker")
        await drain_once(bench, "tracked", profile=profiler)
        result["profile"] = profiler.summary_path
    return result
