"""Run every scenario on throwaway servers, print the table, write bench/results/latest.json.

    make bench                      # or: uv run python -m bench
    BENCH_QUICK=1 make bench        # a smoke run: small sizes, short runs, not the committed file
    BENCH_RELAXED=1 make bench      # PostgreSQL with fsync etc. off: labelled, never the headline

Sizes and durations: BENCH_PAIRS, BENCH_DRAIN_JOBS, BENCH_CONCURRENCY (the drain's headline,
default 10), BENCH_HIGH_CONCURRENCY (the drain's second pair, default 50; 0: none),
BENCH_TRIGGER_SECONDS, BENCH_TRIGGER_CONNECTIONS, BENCH_E2E_RATE, BENCH_E2E_SECONDS,
BENCH_QUERY_ROWS, BENCH_QUERY_SECONDS, BENCH_QUERY_CONNECTIONS (also `cost`'s);
BENCH_LOADGEN=python forces the Python load generator; BENCH_ONLY=drain,trigger runs a subset
(the SCENARIOS below); BENCH_PROFILE=1 adds py-spy summaries; BENCH_OUT names the results
file. PostgreSQL runs with its default durability, read back into `postgres_settings`.
"""

from __future__ import annotations

import asyncio
import hashlib
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

from bench.chain import run_chain
from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, describe_failure
from bench.cost import COST_FIGURES, COST_TARGETS, run_cost
from bench.drain import run_drain
from bench.e2e import run_e2e
from bench.pause import run_pause
from bench.query import run_query
from bench.redis_ceiling import implied, run_redis_ceiling
from bench.scale import run_scale
from bench.settings import durability, postgres_settings, redis_settings
from bench.trigger import run_trigger

SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "drain": run_drain,
    "scale": run_scale,
    "trigger": run_trigger,
    "e2e": run_e2e,
    "query": run_query,
    "cost": run_cost,
    "redis_ceiling": run_redis_ceiling,
    "chain": run_chain,
    "pause": run_pause,
}

# (figure, how it is compared, target): reported against, never asserted (issue 13's).
TARGETS: list[tuple[str, str, float]] = [
    ("drain.ratio", ">=", 1.5),  # issue 17: at concurrency 10 and 50, durable PostgreSQL
    ("drain.c50.ratio", ">=", 1.5),
    ("drain.worker_cpu_ratio", "<=", 1.0),
    ("drain.c50.worker_cpu_ratio", "<=", 1.0),
    ("trigger.ratio", ">=", 0.60),
    ("trigger.p99_ms", "<=", 25),
    ("e2e.p50_ms", "<=", 10),
    ("e2e.p99_ms", "<=", 25),
    ("query.p99_ms", "<=", 15),
    ("query.monitor_p95_ms", "<=", 100),  # issue 12: the jobs page at 1M rows
    ("scale.ratio_2_to_1", ">=", 1.6),
    ("pause.ratio", ">=", 0.9),  # issue 20: a paused queue costs the others nothing measurable
    *COST_TARGETS,  # issue 19
    ("rss_mb.worker", "<=", 120),
    ("chain.jobs_s", ">=", 500),  # issue 20: 1,000 jobs, each after the previous
]
OTHER_FIGURES = [
    *(f"postgres_settings.{k}" for k in ("fsync", "synchronous_commit", "full_page_writes")),
    "drain.plain_jobs_s",
    "drain.tracked_jobs_s",
    "drain.plain_worker_cpu_ms_per_job",
    "drain.tracked_worker_cpu_ms_per_job",
    "drain.tracked_postgres_cpu_ms_per_job",
    "drain.redis_commands_per_job.plain",
    "drain.redis_commands_per_job.tracked",
    "drain.c50.plain_jobs_s",
    "drain.c50.tracked_jobs_s",
    "drain.c50.plain_worker_cpu_ms_per_job",
    "drain.c50.tracked_worker_cpu_ms_per_job",
    "drain.c50.tracked_postgres_cpu_ms_per_job",
    "scale.one_worker_jobs_s",
    "scale.two_workers_jobs_s",
    "scale.four_workers_jobs_s",
    "scale.ratio_4_to_1",
    "scale.api_1_process_req_s",
    "scale.api_2_process_req_s",
    "scale.api_ratio_2_to_1",
    "redis_ceiling.best_ops_s.evalsha",
    "redis_ceiling.implied_jobs_s.plain",
    "redis_ceiling.implied_jobs_s.tracked",
    "redis_ceiling.implied_jobs_s_by_redis_cpu.tracked",
    "redis_ceiling.tracked_share_of_ceiling",
    "trigger.req_s",
    "trigger.bare_req_s",
    "trigger.p50_ms",
    "query.get_p99_ms",
    "query.list_p99_ms",
    "query.get_1_connection_p99_ms",
    "query.list_1_connection_p99_ms",
    "query.monitor_p99_ms",
    "query.monitor_1_connection_p95_ms",
    "query.monitor_api_cpu_user_ms_per_req",
    *COST_FIGURES,
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
    lines = []
    if results.get("durability") != "default":
        settings = results.get("postgres_settings", {})
        switches = ", ".join(f"{k}={settings.get(k)}" for k in ("fsync", "synchronous_commit"))
        lines.append(f"RELAXED DURABILITY ({switches}, ...): not the headline")
    lines += [f"{'figure':<48} {'value':>10}  {'target':<9}", "-" * 76]
    for key, op, target in TARGETS:
        value = lookup(results, key)
        if value is not None:
            verdict = "met" if met(value, op, target) else "MISSED"
            lines.append(f"{key:<48} {value:>10}  {op} {target:<6} {verdict}")
    for key in OTHER_FIGURES:
        value = lookup(results, key)
        if value is not None:
            lines.append(f"{key:<48} {value:>10}")
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


def _cpu_ticks() -> tuple[int, int, dict[int, tuple[int, str]]]:
    """(busy, total) ticks of the machine, and each process's (ticks, command line)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    processes: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # the process ended meanwhile
        processes[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), cmdline[:160])
    return sum(values) - idle, sum(values), processes


async def background_load(seconds: float = 2.0) -> dict[str, Any]:
    """What else keeps this machine busy before we start: a benchmark shares its 2 cores."""
    busy_before, total_before, before = _cpu_ticks()
    await asyncio.sleep(seconds)  # the measuring interval itself
    busy_after, total_after, after = _cpu_ticks()
    ticks_per_s = os.sysconf("SC_CLK_TCK") * seconds
    busy = [
        {"pid": pid, "cpu_pct": round(100 * (ticks - before[pid][0]) / ticks_per_s), "cmd": cmd}
        for pid, (ticks, cmd) in after.items()
        if pid in before and (ticks - before[pid][0]) / ticks_per_s > 0.05
    ]
    return {
        "busy_pct": round(100 * (busy_after - busy_before) / max(total_after - total_before, 1)),
        "busy_processes": sorted(busy, key=lambda p: -p["cpu_pct"]),
        "nice": os.nice(0),
    }


async def machine(bench: Bench) -> dict[str, Any]:
    redis_info = await bench.redis.info("server")
    return {
        **_host(),
        "postgres": await bench.db.fetchval("SHOW server_version"),
        "redis": redis_info["redis_version"],
        "loadgen": _first_line(["wrk", "-v"]) if bench.config.loadgen == "wrk" else "python",
    }


def command(config: Config) -> str:
    base = "make bench" if os.environ.get("MAKELEVEL") else "uv run python -m bench"
    overrides = " ".join(f"{k}={v}" for k, v in config.overrides().items())
    niceness = os.nice(0)
    nice = f"nice -n {niceness}" if niceness else ""
    return " ".join(part for part in (nice, overrides, base) if part)


def revision() -> dict[str, Any]:
    """The code measured: the commit, and a digest of src/ as it is on disk right now (the
    digest decides whether two scenarios ran the same code; a commit elsewhere does not)."""
    head = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "commit": head,
        "src_uncommitted_changes": bool(status.stdout.strip()),
        "src_sha256": digest.hexdigest()[:16],
    }


async def main() -> int:
    config = Config.from_env()
    unknown = set(config.only) - set(SCENARIOS)
    if unknown:
        print(f"BENCH_ONLY: no scenario {sorted(unknown)}; there are {list(SCENARIOS)}")
        return 2
    selected = [name for name in SCENARIOS if not config.only or name in config.only]
    begun = time.monotonic()
    results: dict[str, Any] = {
        "command": command(config),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": config.quick,
    }
    background = await background_load()
    if background["busy_pct"] > 10:
        print(f"warning: the machine is {background['busy_pct']} % busy before the benchmark "
              f"starts: {background['busy_processes']}", file=sys.stderr)  # fmt: skip
    async with bench_context(config) as bench:
        results["machine"] = {**await machine(bench), "background_before_start": background}
        results["postgres_settings"] = await postgres_settings(bench.db)
        results["durability"] = durability(results["postgres_settings"])
        results["redis_settings"] = await redis_settings(bench.redis)
        host = results["machine"]
        print(f"bench: {', '.join(selected)} on {host['cpu']}, {host['cores']} cores; "
              f"load: {config.loadgen}", flush=True)  # fmt: skip
        try:
            for name in selected:
                print(f"{name} ...", flush=True)
                started, code = time.monotonic(), revision()
                results[name] = await SCENARIOS[name](bench)
                results[name]["scenario_seconds"] = round(time.monotonic() - started, 1)
                # Each scenario starts fresh processes: this is the code they ran.
                if revision()["src_sha256"] != code["src_sha256"]:
                    print(f"warning: src/ changed while {name} ran", file=sys.stderr)
                    code["changed_during_scenario"] = True
                results[name]["code"] = code
        except Exception:
            print(describe_failure(bench), file=sys.stderr)
            raise
        results["rss_mb"] = {
            role: round(max(values), 1) for role, values in sorted(bench.peak_rss.items())
        }
    results["duration_s"] = round(time.monotonic() - begun, 1)
    if (limit := implied(results)) is not None:
        results["redis_ceiling"].update(limit)
    digests = {results[name]["code"]["src_sha256"] for name in selected}
    changed = any(results[name]["code"].get("changed_during_scenario") for name in selected)
    results["code"] = {
        **results[selected[0]]["code"],
        "same_for_every_scenario": len(digests) == 1 and not changed,
    }
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
    shown = config.output.relative_to(ROOT) if config.output.is_relative_to(ROOT) else config.output
    print(f"\nwrote {shown} in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
