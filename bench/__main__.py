"""Run every scenario on throwaway servers, print the table, write bench/results/latest.json.

    make bench                      # or: uv run python -m bench
    BENCH_QUICK=1 make bench        # a smoke run: small sizes, short runs, not the committed file

Sizes and durations: BENCH_PAIRS, BENCH_DRAIN_JOBS, BENCH_CONCURRENCY, BENCH_TRIGGER_SECONDS,
BENCH_TRIGGER_CONNECTIONS, BENCH_E2E_RATE, BENCH_E2E_SECONDS, BENCH_QUERY_ROWS,
BENCH_QUERY_SECONDS, BENCH_QUERY_CONNECTIONS; BENCH_LOADGEN=python forces the Python load
generator; BENCH_ONLY=drain,trigger runs a subset; BENCH_PROFILE=1 adds py-spy summaries;
BENCH_OUT names the results file.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, describe_failure
from bench.drain import run_drain, run_scale
from bench.e2e import run_e2e
from bench.query import run_query
from bench.trigger import run_trigger

SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "drain": run_drain,
    "scale": run_scale,
    "trigger": run_trigger,
    "e2e": run_e2e,
    "query": run_query,
}

# (figure, how it is compared, target): reported against, never asserted.
TARGETS: list[tuple[str, str, float]] = [
    ("drain.ratio", ">=", 0.90),
    ("trigger.ratio", ">=", 0.50),
    ("trigger.p99_ms", "<=", 50),
    ("e2e.p50_ms", "<=", 15),
    ("e2e.p99_ms", "<=", 50),
    ("query.p99_ms", "<=", 20),
    ("rss_mb.worker", "<=", 150),
]
OTHER_FIGURES = [
    "drain.plain_jobs_s",
    "drain.tracked_jobs_s",
    "trigger.req_s",
    "trigger.bare_req_s",
    "trigger.p50_ms",
    "query.get_p99_ms",
    "query.list_p99_ms",
    "scale.ratio_2_to_1",
    "rss_mb.api",
]


def lookup(results: dict[str, Any], dotted: str) -> Any:
    value: Any = results
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def met(value: float, op: str, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


def table(results: dict[str, Any]) -> str:
    lines = [f"{'figure':<22} {'value':>10}  {'target':<9} {'':<6}", "-" * 50]
    for key, op, target in TARGETS:
        value = lookup(results, key)
        if value is not None:
            verdict = "met" if met(value, op, target) else "MISSED"
            lines.append(f"{key:<22} {value:>10}  {op} {target:<6} {verdict}")
    for key in OTHER_FIGURES:
        value = lookup(results, key)
        if value is not None:
            lines.append(f"{key:<22} {value:>10}")
    return "\n".join(lines)


def _first_line(command: list[str]) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (output.stdout or output.stderr).strip().splitlines()[0]


def _host() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())  # fmt: skip
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


async def machine(bench: Bench) -> dict[str, Any]:
    redis_info = await bench.redis.info("server")
    return {
        **_host(),
        "postgres": await bench.db.fetchval("SHOW server_version"),
        "postgres_settings": "throwaway server of scripts/local_servers.py: fsync=off, "
        "synchronous_commit=off, full_page_writes=off",
        "redis": redis_info["redis_version"],
        "loadgen": _first_line(["wrk", "-v"]) if bench.config.loadgen == "wrk" else "python",
    }


def command(config: Config) -> str:
    base = "make bench" if os.environ.get("MAKELEVEL") else "uv run python -m bench"
    overrides = " ".join(f"{k}={v}" for k, v in config.overrides().items())
    return f"{overrides} {base}".strip()


async def main() -> int:
    config = Config.from_env()
    selected = [name for name in SCENARIOS if not config.only or name in config.only]
    begun = time.monotonic()
    results: dict[str, Any] = {
        "command": command(config),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": config.quick,
    }
    async with bench_context(config) as bench:
        results["machine"] = await machine(bench)
        host = results["machine"]
        print(f"bench: {', '.join(selected)} on {host['cpu']}, {host['cores']} cores; "
              f"load: {config.loadgen}", flush=True)  # fmt: skip
        try:
            for name in selected:
                print(f"{name} ...", flush=True)
                started = time.monotonic()
                results[name] = await SCENARIOS[name](bench)
                results[name]["scenario_seconds"] = round(time.monotonic() - started, 1)
        except Exception:
            print(describe_failure(bench), file=sys.stderr)
            raise
        results["rss_mb"] = {
            role: round(max(values), 1) for role, values in sorted(bench.peak_rss.items())
        }
    results["duration_s"] = round(time.monotonic() - begun, 1)
    results["targets"] = {
        key: {"target": f"{op} {target}", "met": met(value, op, target)}
        for key, op, target in TARGETS
        if (value := lookup(results, key)) is not None
    }
    config.output.parent.mkdir(parents=True, exist_ok=True)
    partial = config.output.with_name(config.output.name + ".tmp")
    partial.write_text(json.dumps(as_json_ready(results), indent=2) + "\n")
    partial.replace(config.output)
    print()
    print(table(results))
    print(f"\nwrote {config.output.relative_to(ROOT)} in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
