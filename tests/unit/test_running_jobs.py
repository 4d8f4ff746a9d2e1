"""What a worker lists as running, read back as a `Listing`; adopting a plain producer's job."""

from __future__ import annotations

from uuid import UUID, uuid1, uuid4

from saq.job import Job

from app.jobs.lifecycle import FROM_OUTBOX, ROW_ID, row_id_of
from app.jobs.queue.running import JOBS, LISTED_AT, Listing, RunningJobs, adopt


def outbox_job() -> Job:
    return Job(function="t", key=str(uuid4()), meta={FROM_OUTBOX: True})


def test_a_job_is_listed_from_its_start_until_its_own_copy_ends() -> None:
    running = RunningJobs()
    job = outbox_job()
    running.started(job)
    assert [entry["key"] for entry in running.listing()[JOBS]] == [job.key]
    running.ended(Job(function="t", key=job.key))  # a copy read from Redis (a sweep's)
    assert [entry["row_id"] for entry in running.listing()[JOBS]] == [job.key]
    running.ended(job)
    assert running.listing()[JOBS] == []


def test_a_listing_reads_back_and_tells_only_about_runs_begun_before_it() -> None:
    running = RunningJobs()
    job = outbox_job()
    running.started(job)
    listed = Listing.of({"stats": {}, **running.listing()})
    assert listed is not None
    at = listed.at_ms
    assert listed.lists(job.key, since_ms=at - 1) is True
    assert listed.lists(str(uuid4()), since_ms=at - 1) is False
    assert listed.lists(job.key, since_ms=at) is None  # not made after the run began


def test_a_plain_saq_worker_record_lists_nothing() -> None:
    assert Listing.of({"stats": {}, "queue_key": "q", "metadata": None}) is None
    assert Listing.of({LISTED_AT: 1, JOBS: "not a list"}) is None


def test_a_plain_producers_job_gets_a_row_id_as_it_starts_an_outbox_job_does_not() -> None:
    plain = Job(function="t")  # SAQ's own key: a uuid1
    adopt(plain)
    assert plain.meta[ROW_ID] == plain.key
    named = Job(function="t", key="report:2026-12")
    adopt(named)
    assert UUID(named.meta[ROW_ID]) == row_id_of(named)
    ours = outbox_job()
    adopt(ours)
    assert ROW_ID not in ours.meta
    stamped = Job(function="t", key=str(uuid1()), meta={ROW_ID: "given"})
    adopt(stamped)
    assert stamped.meta == {ROW_ID: "given"}
