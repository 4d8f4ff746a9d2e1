"""The one list of intended differences between SAQ's Redis and the project's.

Any other difference fails the differential suite. docs/saq-compatibility.md lists exactly
these entries, each with its why (`test_allowed.py` checks the two agree); each entry here
explains one precise difference, and every entry is needed by some scenario (also checked).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from app.jobs.queue.floor import SAQ_VERIFIED
from tests.differential.compare import Allowance, JobView
from tests.differential.keyspace import TIME, Key, Near

# The SAQ these allowances were verified with, the one the workers accept: a test fails on any
# other (an upgrade is a deliberate step, docs/saq-compatibility.md "Upgrading SAQ").
VERIFIED_WITH_SAQ = SAQ_VERIFIED
ROW_ID = "job_id"  # app.jobs.lifecycle.ROW_ID, spelled out: a rename must show up here


def _without_row_id(record: dict[str, Any]) -> dict[str, Any]:
    meta = record.get("meta")
    if not isinstance(meta, dict) or ROW_ID not in meta:
        return record
    UUID(str(meta[ROW_ID]))  # a row id, nothing else
    rest = {k: v for k, v in meta.items() if k != ROW_ID}
    return {k: v for k, v in {**record, "meta": rest}.items() if k != "meta" or rest}


def _project_key(name: str, saq: Key | None, tracked: Key | None) -> bool:
    if saq is not None or tracked is None:
        return False
    _, _queue, *rest = name.split(":")
    saq_hash = name.startswith("saq:") and tracked.type == "hash"
    return (
        (saq_hash and rest == ["metrics"])
        or (saq_hash and len(rest) == 2 and rest[0] == "moves")  # the moves' guard
        or (name.startswith("tracked-jobs:") and rest[:1] == ["events"])
    )


def _open_gate(name: str, saq: Key | None, tracked: Key | None) -> bool:
    """The queue's gate, open (app.jobs.queue.gate): written by the first take."""
    if saq is not None or tracked is None or not name.startswith("saq:"):
        return False
    return name.split(":")[2:] == ["gate"] and tracked == Key("string", None, "open")


# What a tracked worker adds to SAQ's worker record: the jobs it runs (app.jobs.queue.running).
LISTING = ("listed_at", "jobs")


def _worker_listing(name: str, saq: Key | None, tracked: Key | None) -> bool:
    """The same worker record, plus when it was written and the list of the jobs running."""
    if saq is None or tracked is None or ":worker_info:" not in name:
        return False
    if not isinstance(saq.value, dict) or not isinstance(tracked.value, dict):
        return False
    listed = tracked.value
    rest = {k: v for k, v in listed.items() if k not in LISTING}
    return (
        (saq.type, saq.ttl, saq.value) == (tracked.type, tracked.ttl, rest)
        and isinstance(listed.get("listed_at"), int)
        and isinstance(listed.get("jobs"), list)
    )


def _waiting_job_aborted(_job_id: str, saq: JobView, tracked: JobView) -> bool:
    """SAQ leaves it `aborting` (its abort key until it expires); ours finishes it `aborted`."""
    if saq.status != "aborting" or saq.record is None or saq.abort is None:
        return False
    if (saq.queued, saq.active, saq.incomplete) != (0, 0, None):
        return False  # it was waiting: on neither list, and out of the incomplete set
    finished = {**saq.record.value, "status": "aborted", "completed": TIME}
    ttl = finished.get("ttl", 600)  # SAQ's record leaves out a field at its default
    if ttl < 0:  # SAQ's finish deletes such a job
        ended_as_saq_would = tracked.record is None
    else:
        kept_for = Near(ttl) if ttl > 0 else None
        ended_as_saq_would = tracked.record == Key("string", kept_for, finished)
    return (
        ended_as_saq_would
        and tracked.abort is None
        and tracked.messages == (*saq.messages, "aborted")
        and (tracked.queued, tracked.active, tracked.incomplete) == (0, 0, None)
    )


def _started_during_second_look(_job_id: str, saq: JobView, tracked: JobView) -> bool:
    """SAQ swept it (aborting, then back on the queue: its attempt was not counted yet) and its
    worker then marked it active; ours left it to its worker, on the active list."""
    if (tracked.status, tracked.active, tracked.queued, tracked.abort) != ("active", 1, 0, None):
        return False
    return (
        saq.record == tracked.record  # the worker's mark, last on both
        and saq.abort is not None
        and saq.abort.value == "swept"
        and saq.messages == ("aborting", "queued", *tracked.messages)
        and (saq.queued, saq.active, saq.incomplete) == (1, 0, tracked.incomplete)
    )


ROW_ID_IN_META = Allowance(
    "row id in meta",
    "a job enqueued through `_enqueue` (cron, scheduled, own key, plain enqueue) carries its "
    "row's id in `meta['job_id']`",
    record=_without_row_id,
)
PROJECT_KEYS = Allowance(
    "project keys",
    "the project's own keys beside SAQ's: the job counters `saq:<queue>:metrics`, the "
    "moves' guard `saq:<queue>:moves:<id>` and the events stream `tracked-jobs:<queue>:events`",
    key=_project_key,
)
OPEN_QUEUE_GATE = Allowance(
    "open queue gate",
    "the key `saq:<queue>:gate` holds `open` (no pause): the take reads it in the same script "
    "as it moves jobs, and an absent gate means unknown",
    key=_open_gate,
)
WORKER_LISTS_ITS_JOBS = Allowance(
    "worker lists its jobs",
    "a tracked worker's record `saq:<queue>:worker_info:<id>` also holds `listed_at` and "
    "`jobs`, the jobs it runs",
    key=_worker_listing,
)
ABORT_ENDS_WAITING_JOB = Allowance(
    "abort of a waiting job ends it",
    "a job waiting for its time (scheduled, or a retry's delay) that is aborted ends "
    "`aborted`; SAQ leaves it `aborting` for ever",
    job=_waiting_job_aborted,
)
SWEEP_SECOND_LOOK = Allowance(
    "sweep takes a second look",
    "the sweep leaves a job that was not yet active when it looked if a worker marked it "
    "active since (SAQ #277: SAQ aborts it while its worker runs it)",
    job=_started_during_second_look,
)

# Allowed in every scenario; the others only in the scenarios that declare them.
ALWAYS = [ROW_ID_IN_META, PROJECT_KEYS, OPEN_QUEUE_GATE, WORKER_LISTS_ITS_JOBS]
ALLOWED = [*ALWAYS, ABORT_ENDS_WAITING_JOB, SWEEP_SECOND_LOOK]
