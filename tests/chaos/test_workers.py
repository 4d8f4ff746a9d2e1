"""Workers that die, stop, freeze or are told to abort: no job is lost or left stuck, each is
recovered by the mechanism docs/reliability.md names, within its bound.

Every scenario is one line of the table the chaos suite prints, and asserts that line.
The chaos tasks time out only after 600 s, so SAQ's sweep of an over-time job cannot stand
in for the mechanism a scenario is about (except where the sweep is the point).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.db.models import BackgroundJob
from app.jobs.lifecycle import SAQ_REASONS
from app.jobs.registry import TaskFunction
from tests.support.app import chaos_overrun, chaos_sleep, chaos_sleep_once
from tests.support.cluster import MARGIN, Cluster
from tests.support.rows import describe_row, eventually

JOB_SECONDS = 5.0  # long enough that the jobs are still running when their worker dies


def error_entries(row: BackgroundJob, prefix: str) -> list[dict[str, str]]:
    """The entries of the row's error history (one per failed attempt) starting `prefix`."""
    return [e for e in row.errors if str(e.get("error", "")).startswith(prefix)]


def at(entry: dict[str, str]) -> datetime:
    return datetime.fromisoformat(entry["at"])


@dataclass
class Kill:
    """The jobs of a kill -9 scenario, and when the worker died and another was up."""

    job_ids: list[str]
    running: dict[str, str]  # job id -> its worker's id, for the jobs running at the kill
    killed: datetime
    replaced: datetime


async def kill_9_a_busy_worker(cluster: Cluster, task: TaskFunction) -> Kill:
    """20 jobs; the worker running the first ten is killed, a second worker starts."""
    worker = cluster.start_worker()
    job_ids = await cluster.submit(20, task, seconds=JOB_SECONDS)
    concurrency = cluster.settings.worker_concurrency
    await cluster.wait_until_status(job_ids, {"running"}, concurrency)
    rows = await cluster.rows(job_ids)
    running = {i: str(r.worker_id) for i, r in rows.items() if r.status == "running"}
    worker.kill()
    killed = datetime.now(UTC)
    assert len(running) == concurrency, {i: describe_row(r) for i, r in rows.items()}
    cluster.start_worker("worker 2")
    return Kill(job_ids, running, killed, datetime.now(UTC))


def assert_lost_worker_path(cluster: Cluster, rows: dict[str, BackgroundJob], kill: Kill) -> str:
    """Exactly the jobs running at the kill say `worker lost`, none `swept`, within the bound.

    The bound (docs/reliability.md): WORKER_LOST_AFTER after the job last changed (at the
    latest, the kill), its worker's record gone, plus one RECONCILE_INTERVAL; and not before
    a worker runs the reconciler again.
    """
    settings = cluster.settings
    found_by = max(kill.killed + timedelta(seconds=settings.worker_lost_after), kill.replaced)
    bound = timedelta(seconds=settings.reconcile_interval + MARGIN)
    slowest = timedelta(0)
    for job_id, row in rows.items():
        lost = error_entries(row, "worker lost")
        assert not error_entries(row, "swept"), (job_id, describe_row(row))
        if job_id not in kill.running:
            assert lost == [], (job_id, describe_row(row))
            continue
        assert [e["error"] for e in lost] == [
            f"worker lost: {kill.running[job_id]} stopped reporting while running the job"
        ], (job_id, describe_row(row))
        assert at(lost[0]) - found_by <= bound, (job_id, lost, found_by, bound)
        slowest = max(slowest, at(lost[0]) - kill.killed)
    return (
        f"{len(kill.running)} x `worker lost`, the last {slowest.total_seconds():.1f} s after "
        f"the kill (worker 2 up after {(kill.replaced - kill.killed).total_seconds():.1f} s)"
    )


async def test_kill_9_a_worker_with_jobs_in_flight_and_retries_left(cluster: Cluster) -> None:
    """Catches: the reconciler's worker-lost retry removed (the jobs would wait for SAQ's sweep
    after their 600 s timeout, far past the window), or a retried job that never runs again."""
    kill = await kill_9_a_busy_worker(cluster, chaos_sleep)
    job_ids, running = kill.job_ids, kill.running

    settled = await cluster.settle(
        "kill -9 worker, retries left", job_ids,
        recovered_by="reconciler: worker lost, retried", within=2 * JOB_SECONDS + 20,
    )  # fmt: skip
    settled.expect(completed=20)
    settled.saw(assert_lost_worker_path(cluster, settled.rows, kill))
    runs = await cluster.executions()
    assert {i: runs.get(i) for i in job_ids} == {i: 2 if i in running else 1 for i in job_ids}, (
        "each job of the dead worker ran again, once; the others ran once"
    )


async def test_kill_9_a_worker_with_jobs_in_flight_and_no_retries(cluster: Cluster) -> None:
    """Catches: the reconciler's worker-lost failure removed, or a failed job run again."""
    kill = await kill_9_a_busy_worker(cluster, chaos_sleep_once)
    job_ids, running = kill.job_ids, kill.running

    settled = await cluster.settle(
        "kill -9 worker, no retries", job_ids,
        recovered_by="reconciler: worker lost, failed", within=JOB_SECONDS + 20,
    )  # fmt: skip
    settled.expect(completed=20 - len(running), failed_with_reason=len(running))
    assert {i for i, r in settled.rows.items() if r.status == "failed"} == set(running)
    settled.saw(assert_lost_worker_path(cluster, settled.rows, kill))
    assert set((await cluster.executions()).values()) == {1}


async def test_kill_9_a_worker_holding_unwritten_lifecycle_writes(cluster: Cluster) -> None:
    """Catches: the reconciler's repair from Redis removed (no process would ever write the
    outcome of these jobs: their worker died holding it)."""
    # Writes wait 5 s before a flush: the jobs finish in Redis, the rows do not know yet.
    worker = cluster.start_worker(LIFECYCLE_FLUSH_INTERVAL_MS="5000")
    job_ids = await cluster.submit(10, chaos_sleep_once, seconds=0.05)
    queue = await cluster.queue()

    async def finished_in_redis() -> bool:
        jobs = await queue.jobs(job_ids)
        return all(job is not None and job.status == "complete" for job in jobs)

    await eventually(finished_in_redis, what="jobs complete in redis")
    worker.kill()
    rows = await cluster.rows(job_ids)
    assert not any(r.status == "complete" for r in rows.values()), "writes were still buffered"
    cluster.start_worker("worker 2")

    settings = cluster.settings
    settled = await cluster.settle(
        "kill -9 worker holding unwritten row updates", job_ids,
        recovered_by="reconciler: row repaired from redis",
        within=settings.reconcile_grace + settings.reconcile_interval + MARGIN,
    )  # fmt: skip
    settled.expect(completed=10)
    repaired = sum(e["repaired"] for e in cluster.events("reconciled background_jobs with redis"))
    assert repaired == 10, settled.explain()
    settled.saw(f"{repaired} rows repaired")
    assert set((await cluster.executions()).values()) == {1}, "repaired, not run again"


async def test_sigterm_to_a_worker_mid_job(cluster: Cluster) -> None:
    """Catches: the shutdown re-queue not reaching the row (the queue's `retry` report or the
    flush before exit removed): the rows would stay `running` with no reason."""
    worker = cluster.start_worker()
    job_ids = await cluster.submit(5, chaos_sleep_once, seconds=JOB_SECONDS)
    await cluster.wait_until_status(job_ids, {"running"}, 5)
    worker.stop(signal.SIGTERM)  # grace period 1 s: the jobs cannot finish in time
    rows = await cluster.rows(job_ids)
    seen = {i: describe_row(r) for i, r in rows.items()}
    assert {r.status for r in rows.values()} == {"queued"}, seen
    assert all(r.error == SAQ_REASONS["cancelled"] for r in rows.values()), seen
    cluster.start_worker("worker 2")

    settled = await cluster.settle(
        "SIGTERM to a worker mid-job", job_ids,
        recovered_by="shutdown: re-queued, ran again", within=JOB_SECONDS + MARGIN,
    )  # fmt: skip
    settled.expect(completed=5)
    for row in settled.rows.values():
        assert [e["error"] for e in row.errors] == [SAQ_REASONS["cancelled"]], row
    settled.saw("5 x `re-queued: the worker shut down`, each run twice")
    assert set((await cluster.executions()).values()) == {2}


async def test_a_frozen_worker_s_overdue_jobs_are_swept_by_another(cluster: Cluster) -> None:
    """A worker paused (SIGSTOP) while its jobs run past their 2 s timeout cannot time them out
    itself; another worker's sweep must. The reconciler is pushed out of the window (no lost
    worker before 600 s, one pass per start), so the sweep is the only way out.

    Catches: `TrackedQueue.sweep` skipping stuck jobs, or its `finish` not reaching the row.
    """
    pushed_out = {"WORKER_LOST_AFTER": "600", "RECONCILE_INTERVAL": "100000"}
    frozen = cluster.start_worker(**pushed_out)
    job_ids = await cluster.submit(3, chaos_overrun, seconds=30)
    await cluster.wait_until_status(job_ids, {"running"}, 3)
    frozen.send(signal.SIGSTOP)
    try:
        cluster.start_worker("worker 2", **pushed_out)
        ready = datetime.now(UTC)
        settings = cluster.settings
        # SAQ waits up to 5 s for the frozen worker to acknowledge the abort, then sweeps.
        bound = settings.sweep_interval + 5 + MARGIN
        settled = await cluster.settle(
            "worker frozen (SIGSTOP) past its jobs' timeout", job_ids,
            recovered_by="sweep of another worker", within=2 + bound,
        )  # fmt: skip
    finally:
        frozen.kill()
    settled.expect(failed_with_reason=3)
    for job_id, row in settled.rows.items():
        assert (row.status, row.error) == ("aborted", SAQ_REASONS["swept"]), (job_id, row)
        assert not error_entries(row, "worker lost"), row
        [swept] = error_entries(row, "swept")
        overdue = max(row.started_at + timedelta(seconds=2), ready) if row.started_at else ready
        assert at(swept) - overdue <= timedelta(seconds=bound), (job_id, swept, bound)
    assert {e["job_id"] for e in cluster.events("sweeping job")} == set(job_ids)
    settled.saw("3 x `swept`, none `worker lost`")
    assert set((await cluster.executions()).values()) == {1}


async def test_abort_from_the_saq_ui_and_from_the_api(cluster: Cluster) -> None:
    """The reconciler is pushed out of the window (one pass per start), so that its repair from
    Redis cannot stand in for the abort's own report.

    Catches: an abort that does not reach the row (the queue's `finish` report removed):
    the rows would stay `running` although their jobs are gone.
    """
    cluster.start_api()
    cluster.start_worker(RECONCILE_INTERVAL="100000")
    job_ids = await cluster.submit(6, chaos_sleep, seconds=30)
    await cluster.wait_until_status(job_ids, {"running"}, 6)
    queue = cluster.settings.queue_name
    for job_id in job_ids[:3]:
        status, body = cluster.http("POST", f"/saq/api/queues/{queue}/jobs/{job_id}/abort")
        assert status in (200, 201, 202), body
    for job_id in job_ids[3:]:
        status, body = cluster.http("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 202, body

    settled = await cluster.settle(
        "abort from /saq and from the API", job_ids,
        recovered_by="abort: /saq and the API", within=MARGIN,
    )  # fmt: skip
    settled.expect(failed_with_reason=6)
    reasons = [(settled.rows[i].status, settled.rows[i].error) for i in job_ids]
    from_ui, from_api = ("aborted", "aborted from ui"), ("aborted", "cancelled by API request")
    assert reasons == [from_ui] * 3 + [from_api] * 3, settled.explain()
    settled.saw("3 x `aborted from ui`, 3 x `cancelled by API request`")
    assert set((await cluster.executions()).values()) == {1}, "an aborted job is not retried"


async def test_abort_of_jobs_whose_worker_was_killed(cluster: Cluster) -> None:
    """Three running jobs are cancelled through the API just after their worker died (kill -9):
    SAQ marks them `aborting` and waits for that worker to end them, which it never will.
    On 424c7d6 they stayed `aborting` in Redis and `running` in their rows, for good.

    Catches: the reconciler's end of an abort its lost worker will never carry out removed.
    """
    cluster.start_api()
    worker = cluster.start_worker()
    job_ids = await cluster.submit(3, chaos_sleep, seconds=30)
    await cluster.wait_until_status(job_ids, {"running"}, 3)
    worker.kill()
    for job_id in job_ids:
        status, body = cluster.http("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 202, body
    cluster.start_worker("worker 2")

    settings = cluster.settings
    settled = await cluster.settle(
        "abort of a killed worker's jobs", job_ids,
        recovered_by="reconciler: worker lost, abort ended",
        within=settings.worker_lost_after + settings.reconcile_interval + 5 + MARGIN,
    )  # fmt: skip
    settled.expect(failed_with_reason=3)
    for job_id, row in settled.rows.items():
        assert (row.status, row.error) == ("aborted", "cancelled by API request"), (job_id, row)
    in_redis = await (await cluster.queue()).jobs(job_ids)
    assert [job.status for job in in_redis if job] == ["aborted"] * 3
    assert set((await cluster.executions()).values()) == {1}, "an aborted job is not run again"
    settled.saw("3 x `aborted` with the API's reason, none left `aborting`")
