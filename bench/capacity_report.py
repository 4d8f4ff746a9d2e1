"""bench.capacity's results read through the model (bench.capacity_model), and its table."""

from __future__ import annotations

import math
from typing import Any

from bench.capacity_model import (
    Cost,
    Deployment,
    ceilings,
    first_to_saturate,
    nearest_limit,
    redis_ops_ceiling,
    shared_host_prediction,
)
from bench.common import rounded
from bench.redis_ceiling import STANDS_FOR

# PostgreSQL hosts the model is sized for: this machine's, and two larger ones.
POSTGRES_CORES = (2, 4, 8)
# The parts every job shares whose ceiling is a hard one. Not the WAL flush bound (group
# commit batches more commits per flush as the load grows: beyond it commits wait longer)
# nor redis-benchmark's (its client shares the cores it measures): both are reported.
SHARED_PARTS = ("redis_cpu", "postgres_cpu")


def trigger_cost(trigger: dict[str, Any]) -> Cost:
    return Cost(
        api_cpu_ms=trigger["api_cpu_user_ms_per_req"] + trigger["api_cpu_sys_ms_per_req"],
        postgres_cpu_ms=trigger["postgres_cpu_ms_per_req"],
        redis_cpu_ms=trigger["redis_cpu_ms_per_req"],
        redis_commands=trigger["redis_commands_per_req"],
        wal_bytes=trigger["wal_bytes_per_req"],
        commits=trigger["commits_per_req"],
        wal_flushes=trigger["wal_flushes_per_req"],
    )


def run_cost(point: dict[str, Any]) -> Cost:
    return Cost(
        worker_cpu_ms=point["worker_cpu_ms_per_job"],
        postgres_cpu_ms=point["postgres_cpu_ms_per_job"],
        redis_cpu_ms=point["redis_cpu_ms_per_job"],
        redis_commands=point["redis_commands_per_job"],
        wal_bytes=point["wal_bytes_per_job"],
        commits=point["commits_per_job"],
        wal_flushes=point["wal_flushes_per_job"],
    )


def _merged(*calls: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for one in calls:
        for name, count in one.items():
            out[name] = out.get(name, 0.0) + count
    return out


def _predictions(results: dict[str, Any]) -> dict[str, Any]:
    points, cores = results["check_points"], results["cores"]
    out = {}
    for key, point in points.items():
        one = points[f"{point['path']}_1"]
        free = max(cores - point["other_cores"], 0.1)
        binds, predicted = shared_host_prediction(
            int(point["workers"]), one["jobs_s"], run_cost(one), free
        )
        limit, full = nearest_limit(point["cores_busy"], cores, point["other_cores"])
        out[key] = {
            "measured_jobs_s": point["jobs_s"],
            "predicted_jobs_s": rounded(predicted, 1),
            "predicted_binds": binds,
            "difference_pct": rounded(100 * (point["jobs_s"] - predicted) / predicted, 1),
            "nearest_limit": limit,
            "nearest_limit_full": rounded(full, 2),
        }
    return out


def model(results: dict[str, Any]) -> dict[str, Any]:
    """Per-job costs, each part's ceiling, and the check points against their prediction."""
    trigger = trigger_cost(results["trigger"])
    one_worker = results["check_points"]["loopback_1"]
    run = run_cost(one_worker)
    job = trigger + run
    flush_ms = results["trigger"]["wal_flush_ms_per_req"] + one_worker["wal_flush_ms_per_job"]
    fsync_ms = flush_ms / job.wal_flushes if job.wal_flushes else None
    ceiling = results.get("redis_ceiling") or {}
    redis_ops = redis_ops_ceiling(
        _merged(results["trigger"]["redis_calls_per_req"], one_worker["redis_calls_per_job"]),
        ceiling.get("best_ops_s") or {},
        STANDS_FOR,
    )
    per_unit = ceilings(job, Deployment(1, 1, 1, 1), fsync_ms=fsync_ms, redis_ops_jobs_s=redis_ops)
    sized = {}
    for pg_cores in POSTGRES_CORES:
        bounds = ceilings(job, Deployment(1, 1, 1, pg_cores), fsync_ms=fsync_ms,
                          redis_ops_jobs_s=redis_ops)  # fmt: skip
        part, rate = first_to_saturate({k: v for k, v in bounds.items() if k in SHARED_PARTS})
        sized[f"postgres_{pg_cores}_cores"] = {
            "first_to_saturate": part,
            "jobs_s": rounded(rate, 0),
            "api_processes_needed": math.ceil(rate / per_unit["api"]),
            "worker_cores_needed": math.ceil(rate / per_unit["workers"]),
            "wal_mb_s": rounded(rate * job.wal_bytes / 1e6, 1),
            "wal_flushes_s_at_measured_batching": rounded(rate * job.wal_flushes, 0),
            "wal_flushes_s_possible": rounded(1000 / fsync_ms, 0) if fsync_ms else None,
        }
    return {
        "per_job": {
            name: {k: rounded(v, 4) for k, v in vars(cost).items()}
            for name, cost in (("trigger", trigger), ("run", run), ("job", job))
        },
        "wal_flush_ms": rounded(fsync_ms, 3) if fsync_ms else None,
        "ceilings_per_unit_jobs_s": {k: rounded(v, 0) for k, v in per_unit.items()},
        "sized": sized,
        "check": _predictions(results),
    }


def table(results: dict[str, Any]) -> str:
    m = results["model"]
    cols = ("api_cpu_ms", "worker_cpu_ms", "postgres_cpu_ms", "redis_cpu_ms", "redis_commands",
            "wal_bytes", "commits", "wal_flushes")  # fmt: skip
    header = "".join(f"{c.removesuffix('_ms'):>16}" for c in cols)
    lines = [
        f"durability: {results['durability']}, {results['cores']} cores, netns: {results['netns']}",
        "",
        f"{'per job':<10}{header}",
    ]
    for name, cost in m["per_job"].items():
        lines.append(f"{name:<10}" + "".join(f"{cost[c]:>16}" for c in cols))
    per_unit = ", ".join(f"{k} {v:g}" for k, v in m["ceilings_per_unit_jobs_s"].items())
    lines += [
        "",
        f"WAL flush (mean): {m['wal_flush_ms']} ms",
        f"ceilings, jobs/s (an API process, a worker core, Redis, a PostgreSQL core): {per_unit}",
    ]
    for name, sized in m["sized"].items():
        lines.append(f"  {name}: {sized}")
    lines += [
        "",
        f"{'check point':<12}{'measured':>10}{'predicted':>11}{'diff %':>8}  "
        f"{'binds (model)':<18}{'nearest limit (measured)':<28}{'others took':>10}",
    ]
    for key, check in m["check"].items():
        point = results["check_points"][key]
        lines.append(
            f"{key:<12}{check['measured_jobs_s']:>10}{check['predicted_jobs_s']:>11}"
            f"{check['difference_pct']:>8}  {check['predicted_binds']:<18}"
            f"{check['nearest_limit'] + ' ' + str(check['nearest_limit_full']):<28}"
            f"{point['other_cores']:>10}"
        )
    code = results["code_at_end"]
    lines.append(f"\ncode: {code['head'][:12]}, src clean: {code['src_clean']}")
    return "\n".join(lines)
