"""The capacity model of docs/scaling.md as arithmetic: per-job costs in, job rates out.

A tracked job costs each part some CPU (and Redis commands, WAL bytes, WAL flushes) twice:
once when the API takes the trigger, once when a worker runs it. Each part can spend at
most so much per second, which gives each part its own ceiling in jobs/s; the smallest
ceiling is the part that saturates first. Nothing here measures: `bench.capacity` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Cost:
    """What one unit of work (a trigger request, or one job run by a worker) costs."""

    api_cpu_ms: float = 0.0
    worker_cpu_ms: float = 0.0
    postgres_cpu_ms: float = 0.0
    redis_cpu_ms: float = 0.0
    redis_commands: float = 0.0
    wal_bytes: float = 0.0
    commits: float = 0.0
    wal_flushes: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


@dataclass(frozen=True)
class Deployment:
    """N API processes behind a load balancer, worker hosts, one Redis and one PostgreSQL."""

    api_processes: int
    worker_hosts: int
    worker_cores_per_host: int
    postgres_cores: int


def rate_at_full_use(capacity_ms_per_s: float, cost_ms: float) -> float | None:
    """Jobs/s at which a part spending `cost_ms` per job is busy all the time; None: free."""
    return capacity_ms_per_s / cost_ms if cost_ms > 0 else None


def redis_ops_ceiling(calls_per_job: Mapping[str, float], ops_s: Mapping[str, float],
                      stands_for: Mapping[str, str]) -> float | None:  # fmt: skip
    """Jobs/s if Redis did nothing but one job's commands, each at its own measured rate
    (redis-benchmark, pipelining off). A script's inner commands count as commands of their
    own in INFO commandstats, so this errs low."""
    if not ops_s:
        return None
    rates = sorted(ops_s.values())
    fallback = rates[len(rates) // 2]
    seconds = sum(
        count / ops_s.get(stands_for.get(name, ""), fallback)
        for name, count in calls_per_job.items()
    )
    return 1 / seconds if seconds > 0 else None


def ceilings(
    job: Cost,
    deployment: Deployment,
    *,
    fsync_ms: float | None = None,
    redis_ops_jobs_s: float | None = None,
) -> dict[str, float]:
    """Jobs/s at which each part is saturated (parts a job does not load are left out).

    An API process and Redis each run on one core (one event loop, one thread); a worker
    host gets one process per core; PostgreSQL spreads over its cores. The WAL bound
    assumes flushes are serialized and each covers as many commits as it did when
    measured: group commit batches more under load, so that bound errs low.
    """
    bounds = {
        "api": rate_at_full_use(1000.0 * deployment.api_processes, job.api_cpu_ms),
        "workers": rate_at_full_use(
            1000.0 * deployment.worker_hosts * deployment.worker_cores_per_host, job.worker_cpu_ms
        ),
        "redis_cpu": rate_at_full_use(1000.0, job.redis_cpu_ms),
        "redis_ops": redis_ops_jobs_s,
        "postgres_cpu": rate_at_full_use(1000.0 * deployment.postgres_cores, job.postgres_cpu_ms),
        "wal_flush": (rate_at_full_use(1000.0 / fsync_ms, job.wal_flushes) if fsync_ms else None),
    }
    return {name: bound for name, bound in bounds.items() if bound is not None}


def first_to_saturate(bounds: Mapping[str, float]) -> tuple[str, float]:
    """The part with the lowest ceiling, and that ceiling."""
    name = min(bounds, key=lambda part: bounds[part])
    return name, bounds[name]


def shared_host_prediction(
    workers: int, one_worker_jobs_s: float, run: Cost, cores_free: float
) -> tuple[str, float]:
    """(what binds, jobs/s) for `workers` worker processes draining a queue on one host that
    also runs Redis and PostgreSQL: each process at most its measured one-process rate,
    Redis at most one core, and everything together at most the cores nobody else uses."""
    bounds = {
        "worker_processes": workers * one_worker_jobs_s,
        "shared_cores": rate_at_full_use(
            1000.0 * cores_free, run.worker_cpu_ms + run.postgres_cpu_ms + run.redis_cpu_ms
        ),
        "redis_cpu": rate_at_full_use(1000.0, run.redis_cpu_ms),
    }
    return first_to_saturate({k: v for k, v in bounds.items() if v is not None})


def utilisation(run: Cost, jobs_s: float, workers: int) -> dict[str, float]:
    """Cores each part was busy at `jobs_s` (a worker process and Redis can use one each)."""
    return {
        "worker_process_cores": run.worker_cpu_ms * jobs_s / 1000 / workers,
        "workers_cores": run.worker_cpu_ms * jobs_s / 1000,
        "postgres_cores": run.postgres_cpu_ms * jobs_s / 1000,
        "redis_cores": run.redis_cpu_ms * jobs_s / 1000,
    }


def nearest_limit(busy: Mapping[str, float], cores: float, background: float) -> tuple[str, float]:
    """The resource closest to its limit, and how full it was (1.0: saturated): one worker
    process (one core), Redis (one core), or the machine's cores with the other load."""
    fill = {
        "worker_process": busy["worker_process_cores"],
        "redis": busy["redis_cores"],
        "machine_cores": (
            busy["workers_cores"] + busy["postgres_cores"] + busy["redis_cores"] + background
        )
        / cores,
    }
    name = max(fill, key=lambda part: fill[part])
    return name, fill[name]
