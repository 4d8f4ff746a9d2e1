"""The arithmetic of docs/scaling.md's capacity model (bench.capacity_model), without I/O."""

from __future__ import annotations

import pytest
from bench.capacity_load import other_cores
from bench.capacity_model import (
    Cost,
    Deployment,
    ceilings,
    first_to_saturate,
    nearest_limit,
    rate_at_full_use,
    redis_ops_ceiling,
    shared_host_prediction,
    utilisation,
)

TRIGGER = Cost(api_cpu_ms=0.4, postgres_cpu_ms=0.05, redis_cpu_ms=0.03, redis_commands=3,
               wal_bytes=600, commits=1, wal_flushes=0.25)  # fmt: skip
RUN = Cost(worker_cpu_ms=0.6, postgres_cpu_ms=0.08, redis_cpu_ms=0.12, redis_commands=8,
           wal_bytes=400, commits=0.1, wal_flushes=0.05)  # fmt: skip


def test_a_job_costs_its_trigger_and_its_run() -> None:
    job = TRIGGER + RUN
    assert job.api_cpu_ms == pytest.approx(0.4)
    assert job.worker_cpu_ms == pytest.approx(0.6)
    assert job.redis_cpu_ms == pytest.approx(0.15)
    assert job.redis_commands == pytest.approx(11)
    assert job.wal_bytes == pytest.approx(1000)
    assert job.wal_flushes == pytest.approx(0.3)


def test_a_part_a_job_does_not_load_has_no_ceiling() -> None:
    assert rate_at_full_use(1000.0, 0.5) == pytest.approx(2000)
    assert rate_at_full_use(1000.0, 0.0) is None
    bounds = ceilings(RUN, Deployment(1, 1, 1, 1))
    assert "api" not in bounds
    assert "wal_flush" not in bounds  # no flush time given


def test_ceilings_grow_with_the_parts_that_scale_out_and_not_with_redis() -> None:
    job = TRIGGER + RUN
    small = ceilings(job, Deployment(1, 1, 2, 2), fsync_ms=1.0)
    large = ceilings(job, Deployment(4, 3, 4, 8), fsync_ms=1.0)
    assert large["api"] == pytest.approx(4 * small["api"])
    assert large["workers"] == pytest.approx(6 * small["workers"])
    assert large["postgres_cpu"] == pytest.approx(4 * small["postgres_cpu"])
    assert large["redis_cpu"] == small["redis_cpu"] == pytest.approx(1000 / 0.15)
    # One flush a millisecond, 0.3 flushes a job.
    assert large["wal_flush"] == pytest.approx(1000 / 0.3)
    assert first_to_saturate(large) == ("wal_flush", pytest.approx(1000 / 0.3))


def test_the_redis_ops_ceiling_adds_the_time_of_each_command_at_its_own_rate() -> None:
    calls = {"evalsha": 2.0, "get": 1.0, "exotic": 1.0}
    rates = {"evalsha": 10_000.0, "get": 20_000.0, "set": 40_000.0}
    stands_for = {"evalsha": "evalsha", "get": "get"}
    # The unknown command counts at the middle rate (20,000/s).
    seconds = 2 / 10_000 + 1 / 20_000 + 1 / 20_000
    assert redis_ops_ceiling(calls, rates, stands_for) == pytest.approx(1 / seconds)
    assert redis_ops_ceiling(calls, {}, stands_for) is None


def test_on_one_host_the_shared_cores_cap_what_more_workers_add() -> None:
    # Alone a worker drains 1,000 jobs/s; a job costs 0.8 ms of CPU in all (2.5 jobs/ms on 2).
    assert shared_host_prediction(1, 1000.0, RUN, cores_free=2.0) == (
        "worker_processes", pytest.approx(1000)
    )  # fmt: skip
    assert shared_host_prediction(4, 1000.0, RUN, cores_free=2.0) == (
        "shared_cores", pytest.approx(2500)
    )  # fmt: skip
    lonely_redis = Cost(worker_cpu_ms=0.01, redis_cpu_ms=0.5)
    assert shared_host_prediction(4, 5000.0, lonely_redis, cores_free=8.0)[0] == "redis_cpu"


def test_the_nearest_limit_is_the_fullest_resource() -> None:
    busy = utilisation(RUN, jobs_s=1000.0, workers=2)
    assert busy["worker_process_cores"] == pytest.approx(0.3)
    assert busy["workers_cores"] == pytest.approx(0.6)
    assert nearest_limit(busy, cores=2, background=1.0) == ("machine_cores", pytest.approx(0.9))
    # Alone on the machine, one process doing all the worker's share is the fullest.
    alone = utilisation(RUN, jobs_s=1000.0, workers=1)
    assert nearest_limit(alone, cores=2, background=0.0) == ("worker_process", pytest.approx(0.6))


def test_other_processes_get_what_the_machine_did_beyond_ours() -> None:
    workers = frozenset({10})
    samples = [
        (0.0, 100.0, {1: 5.0, 10: 1.0}, frozenset()),  # a worker starting: not counted
        (1.0, 101.5, {1: 5.5, 10: 1.5}, workers),
        (2.0, 103.5, {1: 6.0, 10: 2.5}, workers),  # 2 s busy, ours 1.5 s: others 0.5 core
        (3.0, 105.0, {1: 6.5, 10: 3.0}, workers),  # 1.5 s busy, ours 1 s: others 0.5 core
        (4.0, 105.0, {1: 6.5}, frozenset()),  # the worker gone: not counted
    ]
    assert other_cores(samples) == pytest.approx(0.5)
    assert other_cores(samples[:2]) is None
