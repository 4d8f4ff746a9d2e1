"""The soak: an hour of triggers at half the measured drain rate, retention every minute with
a 10-minute window, on one PostgreSQL that keeps no more than the window (issue 19).

    BENCH_SOAK=1 uv run --locked python -m bench.soak      # not in CI, not in make bench
    BENCH_SOAK=1 BENCH_SOAK_MINUTES=10 BENCH_SOAK_WINDOW_MINUTES=2 BENCH_SOAK_SLICE_MINUTES=2 ...

A real API process and a real worker process, as `make bench` starts them; the worker runs
with `JOB_PARTITION_MINUTES=1`, `RETENTION_INTERVAL=60` and `JOB_RETENTION_DAYS` set to the
window, so its own retention loop makes and drops the partitions. Triggers go out at a fixed
rate (open loop: a slow answer never delays the next request; latency counts from the
moment a request was due), BENCH_SOAK_RATE or half of `drain.tracked_jobs_s` in
bench/results/latest.json. Every 10 s: the table's size (every partition, with its indexes),
its live and dead tuples (`pg_stat_user_tables`), the partitions, the jobs not yet ended.
Per slice (BENCH_SOAK_SLICE_MINUTES, 10): trigger p50/p99, the rate achieved, the largest
table and dead tuple count. Writes bench/results/soak.json (BENCH_SOAK_OUT).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.ops.partitions import Partitions
from bench.__main__ import background_load, machine, revision
from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, percentile, rounded
from bench.load import HttpConnection
from bench.trigger import TRIGGER

MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES") or 60)
WINDOW = float(os.environ.get("BENCH_SOAK_WINDOW_MINUTES") or 10)
SLICE = float(os.environ.get("BENCH_SOAK_SLICE_MINUTES") or 10)
SAMPLE_EVERY = 10.0  # seconds
CONNECTIONS = 32

_TABLE = """
SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) AS bytes,
       coalesce(sum(s.n_live_tup), 0) AS live, coalesce(sum(s.n_dead_tup), 0) AS dead,
       count(*) AS partitions, coalesce(sum(s.autovacuum_count), 0) AS autovacuums
FROM pg_inherits AS i JOIN pg_stat_user_tables AS s ON s.relid = i.inhrelid
WHERE i.inhparent = 'background_jobs'::regclass
"""
_STATS_TABLE = "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'job_stats'"
_UNFINISHED = "SELECT count(*) FROM background_jobs WHERE status IN ('queued', 'running')"


def soak_rate() -> float:
    if os.environ.get("BENCH_SOAK_RATE"):
        return float(os.environ["BENCH_SOAK_RATE"])
    latest = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    return float(latest["drain"]["tracked_jobs_s"]) / 2


async def _send(
    port: int, rate: float, seconds: float, latencies: list[tuple[float, float]]
) -> int:
    """Triggers at `rate` for `seconds`; (due time, latency ms) of each. Returns the errors."""
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(HttpConnection(port))
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        connection = await pool.get()
        try:
            status, _ = await connection.request(TRIGGER)
            errors += status != 202
        except Exception:
            errors += 1
            await connection.close()  # the next request on it opens a new one
        finally:
            pool.put_nowait(connection)
        latencies.append((due, (time.monotonic() - due) * 1000))

    begun = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while (due := begun + sent / rate) < begun + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return errors


async def _sample(
    bench: Bench, begun: float, samples: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        async with bench.db.acquire() as connection:
            table = dict(await connection.fetchrow(_TABLE))
            stats = await connection.fetchrow(_STATS_TABLE)
            unfinished = await connection.fetchval(_UNFINISHED)
        samples.append(
            {
                "at_s": rounded(time.monotonic() - begun, 1),
                **{k: int(v) for k, v in table.items()},
                "job_stats_live": int(stats["n_live_tup"]) if stats else 0,
                "job_stats_dead": int(stats["n_dead_tup"]) if stats else 0,
                "unfinished": int(unfinished),
            }
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


def slices(
    latencies: list[tuple[float, float]], samples: list[dict[str, Any]], begun: float
) -> list[dict[str, Any]]:
    found = []
    width = SLICE * 60
    for k in range(int(MINUTES * 60 // width)):
        low, high = begun + k * width, begun + (k + 1) * width
        taken = [ms for due, ms in latencies if low <= due < high]
        inside = [s for s in samples if k * width <= s["at_s"] < (k + 1) * width]
        found.append(
            {
                "from_minute": rounded(k * SLICE, 1),
                "triggers": len(taken),
                "rate_s": rounded(len(taken) / width, 1),
                "trigger_p50_ms": rounded(percentile(taken, 50)) if taken else None,
                "trigger_p99_ms": rounded(percentile(taken, 99)) if taken else None,
                "table_mb_at_end": rounded(inside[-1]["bytes"] / 2**20, 1) if inside else None,
                "table_mb_max": rounded(max(s["bytes"] for s in inside) / 2**20, 1)
                if inside
                else None,
                "dead_tuples_max": max((s["dead"] for s in inside), default=None),
                "unfinished_max": max((s["unfinished"] for s in inside), default=None),
                "partitions_max": max((s["partitions"] for s in inside), default=None),
            }
        )
    return found


async def minute_partitions(bench: Bench) -> None:
    """The migration's partitions (a day wide) replaced by a minute's, from now: a day one
    would hold the whole run and never fall past the window."""
    engine = create_async_engine(
        Settings.from_env({"DATABASE_URL": bench.database_url}).database_url
    )
    partitions = Partitions(lambda: engine, width=timedelta(minutes=1), ahead=3)
    try:
        await bench.db.execute("TRUNCATE background_jobs, job_stats, job_stats_pending")
        for partition in await partitions.current():
            await bench.db.execute(f"DROP TABLE {partition.name}")
        await partitions.ensure()
    finally:
        await engine.dispose()


async def soak(bench: Bench, rate: float) -> dict[str, Any]:
    retention_days = WINDOW / 1440
    extra = {
        "JOB_PARTITION_MINUTES": "1",
        "JOB_PARTITIONS_AHEAD": "3",
        "RETENTION_INTERVAL": "60",
        "JOB_RETENTION_DAYS": repr(retention_days),
    }
    os.environ.update(extra)  # the API process makes no partition; the worker's loop does
    await minute_partitions(bench)
    api, port = await bench.start_api("api-soak", factory="bench.app:create_bench_app")
    worker = await bench.start_worker("worker-soak", **extra)
    try:
        await worker.wait_for_output('"worker started"')
        latencies: list[tuple[float, float]] = []
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()
        begun = time.monotonic()
        sampler = asyncio.create_task(_sample(bench, begun, samples, stop))
        errors = await _send(port, rate, MINUTES * 60, latencies)
        stop.set()
        await sampler
    finally:
        await bench.retire(worker, "worker")
        await bench.retire(api, "api")
    cut = slices(latencies, samples, begun)
    after_window = [s for s in cut if s["from_minute"] >= WINDOW and s["table_mb_max"]]
    return {
        "rate_asked_s": rounded(rate, 1),
        "minutes": MINUTES,
        "window_minutes": WINDOW,
        "slice_minutes": SLICE,
        "worker_settings": extra,
        "errors": errors,
        "slices": cut,
        "trigger_p99_last_over_first": rounded(
            cut[-1]["trigger_p99_ms"] / cut[0]["trigger_p99_ms"], 2
        )
        if cut and cut[0]["trigger_p99_ms"]
        else None,
        "table_mb_after_window": [s["table_mb_max"] for s in after_window],
        "samples": samples,
    }


async def main() -> int:
    if os.environ.get("BENCH_SOAK", "") in ("", "0"):
        print("BENCH_SOAK=1 runs the soak (an hour by default); it is not part of make bench")
        return 2
    config = Config.from_env()
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "command": "BENCH_SOAK=1 python -m bench.soak",
        "overrides": config.overrides(),
        "started_at": started.isoformat(timespec="seconds"),
        "code": revision(),
        "background_before_start": await background_load(),
    }
    async with bench_context(config) as bench:
        results["machine"] = await machine(bench)
        results["soak"] = await soak(bench, soak_rate())
    results["background_after"] = await background_load()
    out = ROOT / "bench" / "results" / os.environ.get("BENCH_SOAK_OUT", "soak.json")
    out.write_text(json.dumps(as_json_ready(results), indent=2) + "\n")
    for row in results["soak"]["slices"]:
        print(row)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
