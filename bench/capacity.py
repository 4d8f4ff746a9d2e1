"""`uv run --locked python -m bench.capacity`: the figures docs/scaling.md's model is built from,
and one measured point that checks it. Throwaway PostgreSQL (default durability) and Redis,
as `make bench` starts them; writes bench/results/capacity.json (BENCH_OUT) and prints a table.

- Trigger: one API process (bench.app, as the trigger scenario) under the closed-loop load;
  per request: the API's, PostgreSQL's and Redis's CPU, Redis commands, WAL bytes, commits
  and WAL flushes.
- Run: `drain` of BENCH_DRAIN_JOBS no-op jobs by 1, 2 and 4 tracked worker processes at
  BENCH_CONCURRENCY, over loopback and (root, `ip netns`) from network namespaces of their
  own over veth; BENCH_CAPACITY_ROUNDS rounds. Per job: the same figures as the trigger's.
  WAL is read from PostgreSQL (`pg_current_wal_lsn()`, `pg_stat_wal` with
  track_wal_io_timing on for the flush time) around the whole drain, less what filling the
  queue wrote (measured on its own: the rows are inserted in bulk, not by the API).
- Redis's own ceiling: `redis-benchmark` for the commands a job uses (bench.redis_ceiling).

The model (bench.capacity_model) then predicts each check point from the one-worker figures
and the cores other processes left free just before it (this machine is shared).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import capacity_netns as netns
from bench.capacity_load import OtherLoad
from bench.capacity_model import utilisation
from bench.capacity_report import model, run_cost, table
from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, median, rounded
from bench.drain import drain_once, fill_tracked
from bench.load import measured
from bench.redis_ceiling import redis_calls, run_redis_ceiling
from bench.settings import durability, postgres_settings, redis_settings
from bench.trigger import TRIGGER

WORKER_COUNTS = (1, 2, 4)
# Other backends report their statistics at most once a second.
STATS_DELAY_S = 1.2


async def pg_counters(db: asyncpg.Pool) -> dict[str, float]:
    row = await db.fetchrow(
        """
        SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal_bytes,
               w.wal_records::float8 AS wal_records, w.wal_fpi::float8 AS wal_fpi,
               w.wal_sync::float8 AS wal_flushes, w.wal_sync_time AS wal_flush_ms,
               d.xact_commit::float8 AS commits
        FROM pg_stat_wal AS w, pg_stat_database AS d
        WHERE d.datname = current_database()
        """
    )
    return dict(row)


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def git_code() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = git("status", "--short", "src")
    return {"head": git("rev-parse", "HEAD"), "src_clean": not dirty, "src_status": dirty}


async def trigger_costs(bench: Bench) -> dict[str, Any]:
    connections, seconds = bench.config.trigger_connections, bench.config.trigger_seconds
    api, _ = await bench.start_api("api-capacity", factory="bench.app:create_bench_app")
    try:
        await measured(bench, api, [TRIGGER], connections=connections, seconds=2.0)  # warm-up
        await bench.reset()
        await bench.redis.config_resetstat()
        before = await pg_counters(bench.db)
        load, cpu = await measured(bench, api, [TRIGGER], connections=connections, seconds=seconds)
        await asyncio.sleep(STATS_DELAY_S)
        written = difference(await pg_counters(bench.db), before)
        calls = await redis_calls(bench)
    finally:
        await bench.retire(api, "api")
    n = load.requests
    return {
        **load.as_dict(),
        **cpu,
        "redis_commands_per_req": rounded(sum(calls.values()) / n, 3),
        "redis_calls_per_req": {k: rounded(v / n, 3) for k, v in sorted(calls.items()) if v},
        **{f"{name}_per_req": rounded(value / n, 3) for name, value in written.items()},
        "connections": connections,
    }


async def fill_costs(bench: Bench) -> dict[str, float]:
    """What drain_once's reset and fill write on their own, to take off each drain's WAL."""
    before = await pg_counters(bench.db)
    await bench.reset()
    await fill_tracked(bench, bench.config.drain_jobs)
    await asyncio.sleep(STATS_DELAY_S)
    return difference(await pg_counters(bench.db), before)


async def one_drain(
    bench: Bench, workers: int, path: str, fill: dict[str, float]
) -> dict[str, Any]:
    n = bench.config.drain_jobs
    before = await pg_counters(bench.db)
    async with OtherLoad(bench) as others:
        result = await drain_once(bench, "tracked", workers=workers)
    background = others.cores() or 0.0
    await asyncio.sleep(STATS_DELAY_S)
    written = difference(difference(await pg_counters(bench.db), before), fill)
    result.update({f"{name}_per_job": rounded(value / n, 3) for name, value in written.items()})
    result.update(workers=workers, path=path, other_cores=rounded(background, 2))
    run = run_cost(result)
    busy = utilisation(run, result["jobs_s"], workers)
    result["cores_busy"] = {name: rounded(value, 2) for name, value in busy.items()}
    print(f"  {path} {workers} worker(s): {result['jobs_s']} jobs/s, worker "
          f"{result['worker_cpu_ms_per_job']} ms/job, others took {background:.2f} cores",
          flush=True)  # fmt: skip
    return result


async def check_points(bench: Bench, names: list[str] | None) -> list[dict[str, Any]]:
    rounds = int(os.environ.get("BENCH_CAPACITY_ROUNDS") or 2)
    paths: list[tuple[str, Bench]] = [("loopback", bench)]
    if names:
        paths.append(("netns", netns.NamespacedBench.around(bench, names)))
    fill = await fill_costs(bench)
    runs = []
    for i in range(rounds):
        print(f"check points, round {i + 1} of {rounds}", flush=True)
        for path, where in paths:
            where.spawned = max(b.spawned for _, b in paths)  # one log per process
            for workers in WORKER_COUNTS:
                runs.append(await one_drain(where, workers, path, fill))
    bench.spawned = max(b.spawned for _, b in paths)
    return runs


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per path and worker count: the median of each figure over the rounds."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted({r["path"] for r in runs}):
        for workers in WORKER_COUNTS:
            same = [r for r in runs if r["path"] == path and r["workers"] == workers]
            figures = [k for k, v in same[0].items() if isinstance(v, int | float)]
            out[f"{path}_{workers}"] = {
                **{k: rounded(median([r[k] for r in same]), 3) for k in figures},
                **{
                    group: {
                        k: rounded(median([r[group].get(k, 0.0) for r in same]), 3)
                        for k in sorted(set().union(*(r[group] for r in same)))
                    }
                    for group, values in same[0].items()
                    if isinstance(values, dict)
                },
                "path": path,
                "rounds": len(same),
            }
    return out


async def main() -> int:
    base = Config.from_env()
    output = ROOT / os.environ.get("BENCH_OUT", "bench/results/capacity.json")
    config = replace(base, output=output, quick=False)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "uv run --locked python -m bench.capacity",
        "overrides": config.overrides(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_at_start": git_code(),
        "cores": os.cpu_count(),
        "jobs_per_drain": config.drain_jobs,
        "concurrency": config.concurrency,
    }
    why_not = netns.unavailable()
    results["netns"] = {"used": why_not is None, "why_not": why_not}
    async with bench_context(config) as bench:
        # Timing of WAL flushes only: durability stays as PostgreSQL ships it.
        await bench.db.execute("ALTER SYSTEM SET track_wal_io_timing = on")
        await bench.db.execute("SELECT pg_reload_conf()")
        with netns.namespaces(max(WORKER_COUNTS) if why_not is None else 0) as names:
            if names:
                await netns.open_servers(bench)
            results["postgres_settings"] = await postgres_settings(bench.db)
            results["durability"] = durability(results["postgres_settings"])
            results["redis_settings"] = await redis_settings(bench.redis)
            print("trigger ...", flush=True)
            results["trigger"] = await trigger_costs(bench)
            runs = await check_points(bench, names)
        print("redis ceiling ...", flush=True)
        results["redis_ceiling"] = await run_redis_ceiling(bench)
    results["runs"] = runs
    results["check_points"] = summarise(runs)
    results["model"] = model(results)
    results["code_at_end"] = git_code()
    results["duration_s"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(as_json_ready(results), indent=2) + "\n")
    print()
    print(table(results))
    shown = output.relative_to(ROOT) if output.is_relative_to(ROOT) else output
    print(f"\nwrote {shown} in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
