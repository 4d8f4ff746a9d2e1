"""Without I/O: a schedule's next run and name, refusing two schedules of one task, a job told
to be a schedule's run, and what a SAQ worker record says about its worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from saq.job import CronJob, Job

from app.auth.audit import AuditLog
from app.jobs.control.schedules import Schedules, next_run
from app.jobs.lifecycle import CRON
from app.jobs.queue.identity import Identity, ListedJob, listed_jobs
from app.jobs.queue.pauses import SchedulePauses, schedule_of


async def nightly(ctx: dict[str, Any]) -> None:
    pass


def no_database() -> Any:
    raise AssertionError("no statement expected")


def test_the_next_run_is_the_cron_expression_s_next_time_in_utc() -> None:
    noon = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert next_run("0 3 * * *", noon) == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    assert next_run("* * * * * *", noon) == datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC)


def test_two_schedules_of_one_task_are_refused() -> None:
    """Their pauses and SAQ's key of their runs (`cron:<task>`) would be one."""
    jobs = [CronJob(nightly, cron="0 3 * * *"), CronJob(nightly, cron="0 4 * * *")]
    with pytest.raises(ValueError, match="two schedules of task nightly"):
        Schedules(jobs, "q", no_database, AuditLog(no_database))
    one = Schedules(jobs[:1], "q", no_database, AuditLog(no_database))
    assert one.names == ["nightly"]


async def test_only_a_run_with_a_schedule_in_its_meta_is_a_schedule_s_run() -> None:
    run = Job("nightly", key="cron:nightly", meta={CRON: "0 3 * * *"})
    assert schedule_of(run) == "nightly"
    assert schedule_of(Job("nightly", key="cron:nightly")) is None
    pauses = SchedulePauses(no_database, "q")
    assert await pauses.refuses(None, Job("nightly")) is False  # type: ignore[arg-type]


def test_a_tracked_worker_s_record_says_who_it_is_and_when_it_last_reported() -> None:
    record = {
        "stats": {"complete": 1, "uptime": 2500},
        "metadata": {"host": "h", "pid": 12, "queue": "q", "concurrency": 10, "started": 1000},
    }
    who = Identity.of(record)
    assert (who.host, who.pid, who.concurrency) == ("h", 12, 10)
    assert who.started_at == datetime.fromtimestamp(1, UTC)
    assert who.reported_at == datetime.fromtimestamp(3.5, UTC)  # started + uptime
    listed = Identity.of({**record, "listed_at": 4000})
    assert listed.reported_at == datetime.fromtimestamp(4, UTC)


def test_a_plain_saq_worker_s_record_says_nothing_of_it() -> None:
    who = Identity.of({"stats": {"uptime": 5}, "metadata": None})
    assert who == Identity(None, None, None, None, None)
    odd = Identity.of({"metadata": {"host": 3, "pid": True, "started": "x"}})
    assert odd == Identity(None, None, None, None, None)


def test_the_jobs_a_worker_lists() -> None:
    assert listed_jobs({"jobs": []}) is None, "a listing has its time"
    assert listed_jobs({}) is None
    record = {
        "listed_at": 5000,
        "jobs": [
            {"key": "k1", "row_id": "r1", "started": 2000},
            {"key": "k2", "row_id": None, "started": 0},
            "garbage",
        ],
    }
    assert listed_jobs(record) == [
        ListedJob("k1", "r1", datetime.fromtimestamp(2, UTC)),
        ListedJob("k2", None, None),
    ]
