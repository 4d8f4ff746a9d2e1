"""`pause`: what a paused queue costs the other queues: the tracked drain of one queue (as in
`drain`, at BENCH_CONCURRENCY), alone and with another queue paused beside it on the same Redis
and PostgreSQL, in alternated pairs.

The paused queue holds BENCH_DRAIN_JOBS / 10 jobs and has a worker process of its own, which
takes none of them (its gate says `paused`, its row is in `queue_pauses`): that worker waits
for a resume, looking again every QUEUE_PAUSE_RECHECK_SECONDS (the default). After each run
its jobs must all still be queued, or the run fails.

    ratio = drain jobs/s with the other queue paused / drain jobs/s alone (median of the pairs)
"""

from __future__ import annotations

from typing import Any

from saq.queue.redis import RedisQueue

from app.jobs.queue.gate import PAUSED, gate_key
from bench.common import Bench, Child, median, rounded
from bench.drain import _enqueue_all, drain_once


async def _paused_queue(bench: Bench, name: str, jobs: int) -> list[Child]:
    """Queue `name` paused (its record and its gate), `jobs` waiting in it, and its worker."""
    await bench.db.execute(
        "INSERT INTO queue_pauses (queue, paused_by, paused_at) VALUES ($1, 'bench', now())"
        " ON CONFLICT DO NOTHING",
        name,
    )
    await bench.redis.set(gate_key(name), PAUSED)
    queue = RedisQueue.from_url(bench.redis_url, name=name)
    try:
        await _enqueue_all(queue, [f"paused-{i}" for i in range(jobs)])
    finally:
        await queue.disconnect()
    # Its reconciler would take the drained queue's rows for its own (the reconciler reads
    # every queue's rows: one queue per database is what the project runs).
    worker = await bench.start_worker(
        f"paused-{name}", SAQ_QUEUE_NAME=name, RECONCILE_GRACE="86400"
    )
    await worker.wait_for_output('"worker started"')
    return [worker]


async def run_pause(bench: Bench) -> dict[str, Any]:
    level, n = bench.config.concurrency, bench.config.drain_jobs
    paused_name, waiting = f"{bench.queue_name}-paused", max(n // 10, 1)
    pairs: list[dict[str, Any]] = []
    for i in range(bench.config.pairs):
        alone = await drain_once(bench, "tracked", concurrency=level)

        async def beside() -> list[Child]:
            return await _paused_queue(bench, paused_name, waiting)

        with_paused = await drain_once(bench, "tracked", concurrency=level, alongside=beside)
        held = await bench.redis.llen(f"saq:{paused_name}:queued")  # type: ignore[misc]
        taken = await bench.redis.llen(f"saq:{paused_name}:active")  # type: ignore[misc]
        if (held, taken) != (waiting, 0):
            raise RuntimeError(f"the paused queue's jobs were taken: {held} queued, {taken} active")
        ratio = with_paused["jobs_s"] / alone["jobs_s"]
        pairs.append({"alone": alone, "paused_beside": with_paused, "ratio": rounded(ratio, 3)})
        print(f"  pause pair {i + 1}: alone {alone['jobs_s']} jobs/s, with a paused queue "
              f"beside {with_paused['jobs_s']} jobs/s, ratio {ratio:.3f}", flush=True)  # fmt: skip
    await bench.db.execute("DELETE FROM queue_pauses WHERE queue = $1", paused_name)
    return {
        "ratio": rounded(median([p["ratio"] for p in pairs]), 3),
        "alone_jobs_s": rounded(median([p["alone"]["jobs_s"] for p in pairs]), 1),
        "paused_beside_jobs_s": rounded(median([p["paused_beside"]["jobs_s"] for p in pairs]), 1),
        "paused_queue_jobs": waiting,
        "concurrency": level,
        "jobs": n,
        "pairs": pairs,
    }
