"""`trigger`: HTTP load on the trigger endpoint vs a bare POST on the same server.

One uvicorn process (the Dockerfile's flags) serves `bench.app:create_bench_app`: the API as
shipped plus a bare route that answers a constant body. Runs alternate bare, trigger, ...;
no worker runs, so jobs pile up in Redis, and Redis and the table are emptied between runs.
"""

from __future__ import annotations

import json
from typing import Any

from bench.app import BARE_PATH
from bench.common import Bench, Child, median, rounded
from bench.load import CPU_KEYS, LoadResult, Request, measured
from bench.profile import Profiler

BODY = json.dumps({"message": "bench", "sleep_seconds": 0}).encode()
TRIGGER = Request("POST", "/api/v1/tasks/trigger-test", BODY)
BARE = Request("POST", BARE_PATH, BODY)


async def _load(
    bench: Bench, api: Child, port: int, request: Request, seconds: float
) -> tuple[LoadResult, dict[str, float]]:
    await bench.reset()
    connections = bench.config.trigger_connections
    return await measured(bench, api, [request], connections=connections, seconds=seconds)


async def run_trigger(bench: Bench) -> dict[str, Any]:
    api, port = await bench.start_api("api-trigger", factory="bench.app:create_bench_app")
    try:
        # Warm-up: fills the connection pools and the interpreter's caches; not counted.
        for request in (BARE, TRIGGER):
            await _load(bench, api, port, request, min(2.0, bench.config.trigger_seconds))
        pairs: list[dict[str, Any]] = []
        for i in range(bench.config.pairs):
            bare, bare_cpu = await _load(bench, api, port, BARE, bench.config.trigger_seconds)
            trigger, cpu = await _load(bench, api, port, TRIGGER, bench.config.trigger_seconds)
            rows = await bench.db.fetchval("SELECT count(*) FROM background_jobs")
            if rows < trigger.requests:  # more is fine: wrk stops counting with requests in flight
                raise RuntimeError(f"{trigger.requests} triggers answered but {rows} rows")
            ratio = trigger.rps / bare.rps
            pairs.append(
                {
                    "bare": {**bare.as_dict(), **bare_cpu},
                    "trigger": {**trigger.as_dict(), **cpu},
                    "ratio": rounded(ratio, 3),
                }
            )
            print(f"  trigger pair {i + 1}: bare {bare.rps:.0f} req/s p99 {bare.p99_ms:.1f} ms, "
                  f"trigger {trigger.rps:.0f} req/s p99 {trigger.p99_ms:.1f} ms, "
                  f"ratio {ratio:.3f}", flush=True)  # fmt: skip
        result: dict[str, Any] = {
            "ratio": rounded(median([p["ratio"] for p in pairs]), 3),
            "req_s": rounded(median([p["trigger"]["req_s"] for p in pairs]), 1),
            "p50_ms": rounded(median([p["trigger"]["p50_ms"] for p in pairs])),
            "p99_ms": rounded(median([p["trigger"]["p99_ms"] for p in pairs])),
            "bare_req_s": rounded(median([p["bare"]["req_s"] for p in pairs]), 1),
            "bare_p50_ms": rounded(median([p["bare"]["p50_ms"] for p in pairs])),
            "bare_p99_ms": rounded(median([p["bare"]["p99_ms"] for p in pairs])),
            **{
                f"{side}_{key}": rounded(median([p[side][key] for p in pairs]), 3)
                for side in ("trigger", "bare")
                for key in CPU_KEYS
            },
            "connections": bench.config.trigger_connections,
            "seconds_per_run": bench.config.trigger_seconds,
            "loadgen": bench.config.loadgen,
            "pairs": pairs,
        }
        if bench.config.profile:
            profiler = Profiler(bench, "trigger-api")
            await profiler.attach(api.pid)
            try:
                await _load(bench, api, port, TRIGGER, bench.config.trigger_seconds)
            finally:
                await profiler.finish()
            result["profile"] = profiler.summary_path
        return result
    finally:
        await bench.retire(api, "api")
