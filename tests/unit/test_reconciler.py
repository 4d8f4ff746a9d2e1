"""The reconciler's decisions without I/O: an unfinished row and its job in Redis (or none),
and the live workers with what each lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from saq.job import Job, Status

from app.db.models import BackgroundJob
from app.jobs.queue.running import Listing
from app.jobs.reconciler import Action, Fleet, decide

NOW_MS = 1_714_564_800_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, tz=UTC)
LOST_AFTER_MS = 30_000
TIMEOUT_MS = 60_000
LIVE: Fleet = {"live-worker": None}  # a worker that lists nothing (a plain SAQ worker)


def row(
    status: str,
    *,
    attempts: int = 1,
    worker_id: str | None = None,
    changed_ms_ago: int = 15_000,
    started_ms_ago: int | None = 20_000,
) -> BackgroundJob:
    return BackgroundJob(
        job_id=uuid4(), task_name="t", queue="q", status=status, attempts=attempts,
        worker_id=worker_id, updated_at=NOW - timedelta(milliseconds=changed_ms_ago),
        started_at=None if started_ms_ago is None
        else NOW - timedelta(milliseconds=started_ms_ago),
    )  # fmt: skip


def job(
    status: Status,
    *,
    attempts: int = 1,
    retries: int = 1,
    worker_id: str | None = "live-worker",
    silent_ms: int = 0,
    started_ms_ago: int = 20_000,
) -> Job:
    saq_job = Job(function="t", status=status, attempts=attempts, retries=retries)
    saq_job.worker_id = worker_id
    saq_job.touched = NOW_MS - silent_ms
    saq_job.started = NOW_MS - started_ms_ago
    return saq_job


def decision(of_row: BackgroundJob, of_job: Job | None, fleet: Fleet = LIVE) -> Action:
    if of_job is not None and not of_job.meta:  # the row's own job, found by its key
        of_job.key = str(of_row.job_id)
    return decide(
        of_row,
        of_job,
        fleet,
        now_ms=NOW_MS,
        worker_lost_after_ms=LOST_AFTER_MS,
        timeout_ms=TIMEOUT_MS,
    )


def listing(*rows: BackgroundJob, ms_ago: int = 1_000) -> Listing:
    """What `live-worker` said `ms_ago`: it runs the jobs of `rows`."""
    return Listing(NOW_MS - ms_ago, frozenset(str(r.job_id) for r in rows))


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_missing_from_redis_is_enqueued_again(status: str) -> None:
    assert decision(row(status, worker_id="gone-worker"), None) is Action.ENQUEUE_AGAIN


def test_a_running_row_whose_worker_still_lives_is_left_even_if_redis_lost_its_job() -> None:
    assert decision(row("running", worker_id="live-worker"), None) is Action.LEAVE


def test_a_job_running_on_a_live_worker_is_left() -> None:
    running = job(Status.ACTIVE, silent_ms=10 * LOST_AFTER_MS)  # a long job, no heartbeat
    assert decision(row("running", worker_id="live-worker"), running) is Action.LEAVE


def test_a_lost_workers_job_is_retried_while_attempts_remain() -> None:
    lost = job(Status.ACTIVE, retries=2, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("running", worker_id="killed"), lost) is Action.RETRY


def test_a_lost_workers_job_on_its_last_attempt_is_failed() -> None:
    lost = job(Status.ACTIVE, retries=1, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("running", worker_id="killed"), lost) is Action.FAIL


def test_a_silent_worker_within_the_allowed_time_is_left() -> None:
    quiet = job(Status.ACTIVE, retries=2, worker_id="restarting", silent_ms=LOST_AFTER_MS - 1)
    assert decision(row("running", worker_id="restarting"), quiet) is Action.LEAVE


@pytest.mark.parametrize(
    ("row_status", "row_attempts", "job_status", "job_attempts"),
    [
        ("running", 1, Status.COMPLETE, 1),  # the end was lost with a killed process
        ("queued", 0, Status.ACTIVE, 1),  # the start was lost
        ("queued", 1, Status.QUEUED, 2),  # a retry's new attempt count was lost
    ],
)
def test_a_row_behind_its_job_in_redis_is_repaired(
    row_status: str, row_attempts: int, job_status: Status, job_attempts: int
) -> None:
    behind = row(row_status, attempts=row_attempts, worker_id="live-worker")
    assert decision(behind, job(job_status, attempts=job_attempts)) is Action.REPAIR


def test_a_row_that_agrees_with_redis_is_left() -> None:
    assert decision(row("queued", attempts=0), job(Status.QUEUED, attempts=0)) is Action.LEAVE


# -- a running row whose job Redis lost, on a live worker: left only while its worker runs it --


def test_a_lost_job_its_worker_lists_is_left() -> None:
    running = row("running", worker_id="live-worker")
    assert decision(running, None, {"live-worker": listing(running)}) is Action.LEAVE


def test_a_lost_job_its_worker_no_longer_lists_is_enqueued_again() -> None:
    """Issue 17: the worker's finish failed; it will never report. Its listing says so."""
    running = row("running", worker_id="live-worker")
    other = row("running", worker_id="live-worker")
    fleet: Fleet = {"live-worker": listing(other)}
    assert decision(running, None, fleet) is Action.ENQUEUE_AGAIN


def test_a_listing_older_than_the_run_cannot_tell_and_the_row_is_left() -> None:
    running = row("running", worker_id="live-worker", started_ms_ago=500)
    fleet: Fleet = {"live-worker": listing(ms_ago=1_000)}  # made before the run started
    assert decision(running, None, fleet) is Action.LEAVE


@pytest.mark.parametrize("fleet", [{"live-worker": None}, "lists it"])
def test_past_the_timeout_plus_worker_lost_after_a_lost_job_is_enqueued_again_anyway(
    fleet: Fleet | str,
) -> None:
    """A worker that lists nothing (plain SAQ), or still lists the job past its timeout (a
    worker wedged in its end), is not waited for beyond the bound; just within it, it is."""
    limit = TIMEOUT_MS + LOST_AFTER_MS
    past = row("running", worker_id="live-worker", changed_ms_ago=limit + 1)
    within = row("running", worker_id="live-worker", changed_ms_ago=limit - 1)
    if fleet == "lists it":
        fleet = {"live-worker": listing(past, within)}
    assert isinstance(fleet, dict)
    assert decision(past, None, fleet) is Action.ENQUEUE_AGAIN
    assert decision(within, None, fleet) is Action.LEAVE


def test_a_replaced_run_is_left_while_its_worker_lists_it_else_given_up() -> None:
    running = row("running", worker_id="live-worker")
    later_run = job(Status.QUEUED)
    later_run.meta = {"job_id": str(uuid4())}  # another row's run under the same key
    assert decision(running, later_run, {"live-worker": listing(running)}) is Action.LEAVE
    assert decision(running, later_run, {"live-worker": listing()}) is Action.GIVE_UP


# -- a job Redis holds as running on a live worker that no longer runs it --------------------


@pytest.mark.parametrize(("retries", "action"), [(2, Action.RETRY), (1, Action.FAIL)])
def test_an_active_job_its_live_worker_no_longer_lists_is_retried_else_failed(
    retries: int, action: Action
) -> None:
    running = row("running", worker_id="live-worker")
    dropped = job(Status.ACTIVE, retries=retries)
    assert decision(running, dropped, {"live-worker": listing()}) is action


def test_an_active_job_is_left_while_its_worker_lists_it_or_has_not_listed_since_it_began() -> None:
    running = row("running", worker_id="live-worker")
    assert decision(running, job(Status.ACTIVE), {"live-worker": listing(running)}) is Action.LEAVE
    just_started = job(Status.ACTIVE, started_ms_ago=500)
    fleet: Fleet = {"live-worker": listing(ms_ago=1_000)}
    assert decision(running, just_started, fleet) is Action.LEAVE


# -- a job being aborted whose worker will never carry the abort out -------------------------


def test_an_aborting_job_of_a_lost_worker_ends_aborted() -> None:
    aborting = job(Status.ABORTING, retries=3, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("running", worker_id="killed"), aborting) is Action.END_ABORT


def test_an_aborting_job_its_live_worker_no_longer_lists_ends_aborted() -> None:
    running = row("running", worker_id="live-worker")
    aborting = job(Status.ABORTING, retries=3)
    assert decision(running, aborting, {"live-worker": listing()}) is Action.END_ABORT
    assert decision(running, aborting, {"live-worker": listing(running)}) is Action.LEAVE
    assert (
        decision(running, aborting, {"live-worker": None}) is Action.LEAVE
    )  # its worker aborts it


# -- just after Redis restarted, the workers' records may not be back yet --------------------


def test_until_the_fleet_is_complete_a_missing_worker_is_not_taken_for_lost() -> None:
    """Would catch: a restart (data kept, records expired) making every worker look lost, so
    that their running jobs are retried or enqueued again while they still run them."""
    running = row("running", worker_id="restarting")
    quiet = job(Status.ACTIVE, retries=2, worker_id="restarting", silent_ms=LOST_AFTER_MS + 1)
    for of_job, then in ((quiet, Action.RETRY), (None, Action.ENQUEUE_AGAIN)):
        if of_job is not None:
            of_job.key = str(running.job_id)
        assert decision(running, of_job) is then
        early = decide(
            running,
            of_job,
            LIVE,
            now_ms=NOW_MS,
            worker_lost_after_ms=LOST_AFTER_MS,
            timeout_ms=TIMEOUT_MS,
            fleet_complete=False,
        )
        assert early is Action.LEAVE


def test_an_abort_under_way_or_of_a_job_never_started_is_left_to_whoever_aborted_it() -> None:
    """A sweep aborts a stranded job (never started: no worker) before it retries it, and a
    worker has its abort key's few seconds to end a job: neither is ended here."""
    running = row("running", worker_id="killed")
    lost = job(Status.ABORTING, retries=3, worker_id="killed", silent_ms=LOST_AFTER_MS + 1)
    lost.key = str(running.job_id)
    pending = decide(
        running,
        lost,
        LIVE,
        now_ms=NOW_MS,
        worker_lost_after_ms=LOST_AFTER_MS,
        timeout_ms=TIMEOUT_MS,
        abort_pending=True,
    )
    assert pending is Action.LEAVE
    swept = job(Status.ABORTING, retries=3, worker_id=None, silent_ms=LOST_AFTER_MS + 1)
    assert decision(row("queued", attempts=0), swept) is not Action.END_ABORT
