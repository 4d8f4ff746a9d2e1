"""`scale`: more processes on the same 2 cores, the same PostgreSQL and the same Redis.

- Workers: 1, 2 and 4 tracked worker processes (each `litestar workers run`, concurrency
  BENCH_CONCURRENCY) drain the same N jobs, alternated; the rate is read as in `drain`.
- API: the trigger endpoint under the trigger scenario's closed-loop load, served by one
  uvicorn process and by `uvicorn --workers 2` (what API_PROCESSES=2 runs), alternated;
  the API's CPU is that of the whole process tree.

Each ratio is the median of the ratios of its alternated runs.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from bench.common import Bench, median, rounded
from bench.drain import drain_once
from bench.load import closed_loop
from bench.trigger import TRIGGER

WORKER_COUNTS = (1, 2, 4)
NAMES = {1: "one_worker", 2: "two_workers", 4: "four_workers"}
API_COUNTS = (1, 2)


async def _workers(bench: Bench) -> dict[str, Any]:
    runs: list[dict[int, dict[str, Any]]] = []
    for i in range(bench.config.pairs):
        run = {count: await drain_once(bench, "tracked", workers=count) for count in WORKER_COUNTS}
        runs.append(run)
        print(f"  scale run {i + 1}: " + ", ".join(
            f"{count} worker(s) {run[count]['jobs_s']} jobs/s" for count in WORKER_COUNTS
        ), flush=True)  # fmt: skip
    result: dict[str, Any] = {}
    for count in WORKER_COUNTS:
        label = NAMES[count]
        result[f"{label}_jobs_s"] = rounded(median([run[count]["jobs_s"] for run in runs]), 1)
        result[f"{label}_cpu_ms_per_job"] = median(
            [run[count]["worker_cpu_ms_per_job"] for run in runs]
        )
        if count > 1:
            ratios = [run[count]["jobs_s"] / run[1]["jobs_s"] for run in runs]
            result[f"ratio_{count}_to_1"] = rounded(median(ratios), 3)
    result["runs"] = [{str(count): run[count] for count in WORKER_COUNTS} for run in runs]
    return result


async def _trigger_load(bench: Bench, processes: int, seconds: float) -> dict[str, Any]:
    await bench.reset()
    api, port = await bench.start_api(f"api-scale-{processes}", processes=processes)
    try:
        load = partial(
            closed_loop, bench.config.loadgen, port, [TRIGGER], workdir=bench.workdir,
            connections=bench.config.trigger_connections,
        )  # fmt: skip
        await load(seconds=min(2.0, seconds))  # warm-up: every process's pools; not counted
        await bench.reset()
        before = api.tree_cpu_seconds()
        result = await load(seconds=seconds)
        used = api.tree_cpu_seconds() - before
        if result.errors:
            raise RuntimeError(f"{result.errors} failed triggers with {processes} API processes")
    finally:
        await bench.retire(api, "api" if processes == 1 else None)
    return {**result.as_dict(), "api_cpu_ms_per_req": rounded(used * 1000 / result.requests, 3)}


async def _api(bench: Bench) -> dict[str, Any]:
    seconds = bench.config.trigger_seconds
    runs: list[dict[int, dict[str, Any]]] = []
    for i in range(bench.config.pairs):
        run = {count: await _trigger_load(bench, count, seconds) for count in API_COUNTS}
        runs.append(run)
        print(f"  scale API run {i + 1}: " + ", ".join(
            f"{count} process(es) {run[count]['req_s']} req/s p99 {run[count]['p99_ms']} ms"
            for count in API_COUNTS
        ), flush=True)  # fmt: skip
    return {
        "api_ratio_2_to_1": rounded(median([run[2]["req_s"] / run[1]["req_s"] for run in runs]), 3),
        **{
            f"api_{count}_process_req_s": rounded(median([run[count]["req_s"] for run in runs]), 1)
            for count in API_COUNTS
        },
        **{
            f"api_{count}_process_p99_ms": rounded(median([run[count]["p99_ms"] for run in runs]))
            for count in API_COUNTS
        },
        "api_connections": bench.config.trigger_connections,
        "api_runs": [{str(count): run[count] for count in API_COUNTS} for run in runs],
    }


async def run_scale(bench: Bench) -> dict[str, Any]:
    return {**await _workers(bench), **await _api(bench), "jobs": bench.config.drain_jobs}
