"""`make bench-growth`: what each read costs at 1M and at 10M rows of history.

    make bench-growth          # or: uv run --locked python -m bench.growth
    BENCH_GROWTH_SIZES=100000,1000000 BENCH_GROWTH_SECONDS=2 ...   # a quicker run

For each size the table is built anew (bench/growth_data.py: 30 days, a partition a day),
then every read runs through the real API process (`bench.app`) with one client (no queue
in front of it: what a read costs, not what waiting costs), BENCH_GROWTH_RUNS (3) runs of
BENCH_GROWTH_SECONDS (4) each, the median kept: GET one job, a list page for every filter
the API offers, the monitor's jobs page, the stats for every window; then, in this
process, the reconciler's scan of unfinished rows and a retention pass that drops the
oldest days. For each: p95 and PostgreSQL CPU per request; then the ratios of the largest
size to the smallest (issue 19's target: at most 1.2). Writes bench/results/growth.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from app.db.connection import autocommit_sessions
from app.jobs.reads.service import BackgroundJobService
from app.ops.partitions import Partitions
from app.ops.retention import Retention
from bench.__main__ import background_load, machine, revision
from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, median, rounded
from bench.growth_data import DAYS, QUEUES, build
from bench.growth_reads import read_requests
from bench.load import measured
from bench.settings import postgres_settings

SIZES = tuple(
    int(s) for s in (os.environ.get("BENCH_GROWTH_SIZES") or "1000000,10000000").split(",")
)
SECONDS = float(os.environ.get("BENCH_GROWTH_SECONDS") or 4)
RUNS = int(os.environ.get("BENCH_GROWTH_RUNS") or 3)
TARGET_RATIO = 1.2


async def _api_reads(bench: Bench) -> dict[str, dict[str, float]]:
    api, port = await bench.start_api("api-growth", factory="bench.app:create_bench_app")
    try:
        reads = await read_requests(bench, port)
        found: dict[str, dict[str, float]] = {}
        for name, requests in reads.items():
            await measured(bench, api, requests, connections=1, seconds=1)  # warm-up
            runs = [
                await measured(bench, api, requests, connections=1, seconds=SECONDS)
                for _ in range(RUNS)
            ]
            found[name] = {
                "p50_ms": rounded(median([r.p50_ms for r, _ in runs])),
                "p95_ms": rounded(median([r.p95_ms for r, _ in runs])),
                "req_s": rounded(median([r.rps for r, _ in runs]), 1),
                "postgres_cpu_ms_per_req": rounded(
                    median([cpu["postgres_cpu_ms_per_req"] for _, cpu in runs]), 3
                ),
                "api_cpu_ms_per_req": rounded(
                    median(
                        [
                            cpu["api_cpu_user_ms_per_req"] + cpu["api_cpu_sys_ms_per_req"]
                            for _, cpu in runs
                        ]
                    ),
                    3,
                ),
            }
            print(f"    {name}: p95 {found[name]['p95_ms']} ms", flush=True)
    finally:
        await bench.retire(api, "api")
    return found


async def _timed(bench: Bench, step: Any, times: int) -> dict[str, float]:
    """p95 of `times` calls of `step` and PostgreSQL's CPU per call, in this process."""
    took = []
    before = bench.server_cpu_seconds()["postgres"]
    for _ in range(times):
        started = time.perf_counter()
        await step()
        took.append((time.perf_counter() - started) * 1000)
    cpu = bench.server_cpu_seconds()["postgres"] - before
    took.sort()
    return {
        "p50_ms": rounded(took[len(took) // 2]),
        "p95_ms": rounded(took[min(len(took) - 1, int(len(took) * 0.95))]),
        "postgres_cpu_ms_per_req": rounded(cpu * 1000 / times, 3),
    }


async def _maintenance(bench: Bench) -> dict[str, Any]:
    """The reconcilers' scans (every unfinished row, each queue's, 500 a page) and one
    retention pass."""
    settings = Settings.from_env({"DATABASE_URL": bench.database_url})
    engine = create_async_engine(settings.database_url, **settings.engine_options())
    sessions = autocommit_sessions(lambda: engine)
    try:

        async def reconciler_pass() -> None:
            for queue in QUEUES:  # each queue's reconciler reads its own rows
                after = None
                while True:
                    page = await BackgroundJobService(sessions()).unfinished(
                        queue=queue, older_than=datetime.now(UTC), after=after, limit=500
                    )
                    if len(page) < 500:
                        break
                    after = (page[-1].updated_at, page[-1].job_id)

        found: dict[str, Any] = {"reconciler_pass": await _timed(bench, reconciler_pass, 30)}
        partitions = Partitions(lambda: engine, width=timedelta(days=1), ahead=3)
        retention = Retention(
            sessions, partitions, bench.redis, bench.queue_name,
            job_days=DAYS - 2, audit_days=0, interval=3600,
        )  # fmt: skip
        before = bench.server_cpu_seconds()["postgres"]
        started = time.perf_counter()
        pruned = await retention.prune_jobs(DAYS - 2)
        seconds = time.perf_counter() - started
        found["retention_pass"] = {
            "partitions_dropped": len(pruned.partitions),
            "rows_dropped": pruned.deleted,
            "seconds": rounded(seconds, 3),
            "rows_per_s": rounded(pruned.deleted / seconds, 1),
            "postgres_cpu_s": rounded(bench.server_cpu_seconds()["postgres"] - before, 3),
        }
        print(f"    retention: {found['retention_pass']}", flush=True)
        return found
    finally:
        await engine.dispose()


async def run_size(bench: Bench, rows: int) -> dict[str, Any]:
    print(f"  {rows:,} rows: building ...", flush=True)
    built = await build(bench, rows)
    print(f"  built in {built['build_seconds']} s ({built['bytes_per_row']} bytes a row)")
    return {"table": built, **await _api_reads(bench), **await _maintenance(bench)}


def ratios(sizes: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Largest size over smallest, per read: p95 and PostgreSQL CPU per request."""
    small, large = sizes[str(min(SIZES))], sizes[str(max(SIZES))]
    found = {}
    for name, figures in small.items():
        if "p95_ms" not in figures:
            continue
        found[name] = {
            key: rounded(large[name][key] / figures[key], 2) if figures[key] else None
            for key in ("p95_ms", "postgres_cpu_ms_per_req")
        }
    return found


async def main() -> int:
    config = Config.from_env()
    started = datetime.now(UTC)
    background = await background_load()
    results: dict[str, Any] = {
        "command": "make bench-growth",
        "overrides": config.overrides(),
        "started_at": started.isoformat(timespec="seconds"),
        "code": revision(),
    }
    async with bench_context(config) as bench:
        results["machine"] = {**await machine(bench), "background_before_start": background}
        results["postgres_settings"] = await postgres_settings(bench.db)
        sizes = {str(rows): await run_size(bench, rows) for rows in SIZES}
    results["sizes"] = sizes
    results["ratios"] = ratios(sizes)
    results["target_ratio"] = TARGET_RATIO
    results["over_target"] = {
        name: figures
        for name, figures in results["ratios"].items()
        if any(value is not None and value > TARGET_RATIO for value in figures.values())
    }
    results["background_after"] = await background_load()
    results["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    out = ROOT / "bench" / "results" / os.environ.get("BENCH_GROWTH_OUT", "growth.json")
    out.write_text(json.dumps(as_json_ready(results), indent=2) + "\n")
    for name, figures in results["ratios"].items():
        cpu = figures["postgres_cpu_ms_per_req"]
        print(f"{name:<32} p95 x{figures['p95_ms']}  postgres CPU x{cpu}")
    print(f"wrote {out.relative_to(ROOT)} in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
