"""Plain SAQ, the tracked worker, Procrastinate and Celery side by side; writes
bench/results/peers.json and bench/results/peers.md, and prints the table.

    make bench-peers          # installs the `peers` dependency group into .local/peers-venv

The same N no-op jobs per run (BENCH_DRAIN_JOBS, 10,000), queued before the worker starts, at
concurrency BENCH_CONCURRENCY (10; Celery: prefork 2 and threads 10), on one throwaway
PostgreSQL with its durable defaults and one Redis. The systems take turns (A, B, C, D, A, ...)
for BENCH_PAIRS rounds (3) and each figure is the median. A run still going after
BENCH_PEERS_MAX_SECONDS (30) is stopped and rated on the jobs it finished, so the slow systems
cannot stretch the whole to an hour. BENCH_PEERS_ONLY=plain_saq,celery_threads picks systems;
BENCH_OUT names the JSON (the Markdown goes beside it, .md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.__main__ import background_load, revision
from bench.common import ROOT, Bench, Config, as_json_ready, bench_context, describe_failure
from bench.peers.celery_side import POOLS, create_tables, run_celery
from bench.peers.measure import make_durable, redis_settings, reset_all
from bench.peers.procrastinate_side import apply_schema, run_procrastinate
from bench.peers.report import LABELS, markdown, summarise
from bench.peers.saq_side import run_plain, run_tracked

Runner = Callable[[Bench], Awaitable[dict[str, Any]]]
PACKAGES = ("saq", "procrastinate", "psycopg", "celery", "kombu", "redis", "sqlalchemy")


def runners(max_seconds: float) -> dict[str, Runner]:
    return {
        "plain_saq": run_plain,
        "tracked": run_tracked,
        "procrastinate": partial(run_procrastinate, max_seconds=max_seconds),
        **{name: partial(run_celery, system=name, max_seconds=max_seconds) for name in POOLS},
    }


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), "unknown CPU")  # fmt: skip
    return f"{model}, {os.cpu_count()} cores"


def output_paths(partial_run: bool) -> tuple[Path, Path]:
    """The JSON and the Markdown beside it; a partial run's go to files git ignores (*.tmp)."""
    default = "bench/results/peers-smoke.tmp" if partial_run else "bench/results/peers.json"
    json_path = ROOT / os.environ.get("BENCH_OUT", default)
    if json_path.suffix == ".tmp":
        return json_path, json_path.with_name(json_path.stem + ".md.tmp")
    return json_path, json_path.with_suffix(".md")


async def measure(bench: Bench, systems: list[str], every: dict[str, Runner]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for round_number in range(1, bench.config.pairs + 1):
        for name in systems:
            await reset_all(bench)
            started = time.monotonic()
            result = await every[name](bench)
            result["run_seconds"] = round(time.monotonic() - started, 1)  # filling included
            runs[name].append(result)
            print(f"  round {round_number}: {LABELS[name]}: {result['jobs_s']} jobs/s, "
                  f"worker {result['worker_cpu_ms_per_job']} ms/job, "
                  f"{result['jobs_done']} jobs done", flush=True)  # fmt: skip
    return {name: summarise(runs[name]) for name in systems}


async def main() -> int:
    config = Config.from_env()
    max_seconds = float(os.environ.get("BENCH_PEERS_MAX_SECONDS") or 30)
    every = runners(max_seconds)
    only = [s for s in os.environ.get("BENCH_PEERS_ONLY", "").split(",") if s]
    if set(only) - set(every):
        print(f"BENCH_PEERS_ONLY: no system {sorted(set(only) - set(every))}; there are "
              f"{list(every)}")  # fmt: skip
        return 2
    systems = [name for name in every if not only or name in only]
    json_path, md_path = output_paths(config.quick or bool(only))
    begun = time.monotonic()
    results: dict[str, Any] = {
        "command": "make bench-peers" if os.environ.get("MAKELEVEL") else "python -m bench.peers",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "jobs": config.drain_jobs,
        "concurrency": config.concurrency,
        "rounds": config.pairs,
        "max_seconds": max_seconds,
        "machine": machine(),
        "packages": {name: version(name) for name in PACKAGES},
        "code": revision(),
        # The benchmark shares the machine's cores: what else kept them busy as it began.
        "background_before_start": await background_load(),
    }
    async with bench_context(replace(config, output=json_path)) as bench:
        results["postgres_settings"] = await make_durable(bench)
        results["redis_settings"] = await redis_settings(bench)
        await apply_schema(bench)
        await create_tables(bench)
        print(f"bench-peers: {', '.join(systems)}; {config.drain_jobs} jobs, "
              f"{config.pairs} rounds; {results['machine']}", flush=True)  # fmt: skip
        try:
            results["systems"] = await measure(bench, systems, every)
        except Exception:
            print(describe_failure(bench), file=sys.stderr)
            raise
        # Read back at the end too: nothing in the run may have turned durability off.
        if await make_durable(bench) != results["postgres_settings"]:
            raise RuntimeError("PostgreSQL's settings changed during the run")
    results["duration_s"] = round(time.monotonic() - begun, 1)
    # The tracked worker runs the working tree's src/: say so if it changed under the run.
    code = results["code"]
    code["changed_during_run"] = revision()["src_sha256"] != code["src_sha256"]
    busy = results["background_before_start"]["busy_pct"]
    if busy > 10 or code["changed_during_run"]:
        print(f"warning: the machine was {busy} % busy before the start; src/ changed during "
              f"the run: {code['changed_during_run']}", file=sys.stderr)  # fmt: skip
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(as_json_ready(results), indent=2) + "\n")
    table = markdown(results)
    md_path.write_text(table)
    print()
    print(table)
    print(f"wrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)} "
          f"in {results['duration_s']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
