"""What a worker runs now, as it tells the others: the jobs it has started and not yet ended.

A worker process keeps the jobs it has marked active and not yet finished or retried, and
adds them to SAQ's worker record (`TrackedQueue.write_worker_info`, refreshed every
`worker_info` interval) with the time of the listing on its own clock. The reconciler leaves
a running job to its live worker only while the worker lists it (`Listing`); a plain SAQ
worker lists nothing, so only the reconciler's upper bound applies to its jobs.

It also gives a job a plain SAQ producer made (no row id, not from the outbox) a row id of
its own when a tracked worker starts it (`adopt`), so that its row is created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from saq.job import Job
from saq.utils import now

from app.jobs.lifecycle import FROM_OUTBOX, ROW_ID, row_id_of

# The fields a worker adds to its SAQ worker record.
LISTED_AT = "listed_at"  # epoch ms, the worker's clock
JOBS = "jobs"  # [{"key": ..., "row_id": ..., "started": epoch ms}]


class RunningJobs:
    """The jobs this process has marked active and not yet finished or retried."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def started(self, job: Job) -> None:
        """`job` starts on this worker: listed, and given a row id if it has none (`adopt`)."""
        adopt(job)
        self._jobs[job.key] = job

    def ended(self, job: Job) -> None:
        # Only the worker's own copy ends its run: a sweep or the reconciler in this process
        # handles copies read from Redis.
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]

    @contextlib.contextmanager
    def ending(self, job: Job) -> Iterator[None]:
        """Around a finish or a retry of `job`: its run is over once that returns or fails."""
        try:
            yield
        finally:
            self.ended(job)

    def listing(self) -> dict[str, Any]:
        jobs = [
            {"key": job.key, "row_id": _str_or_none(row_id_of(job)), "started": job.started}
            for job in self._jobs.values()
        ]
        return {LISTED_AT: now(), JOBS: jobs}


@dataclass(frozen=True)
class Listing:
    """What a live worker last said it runs: row ids, and when it said so (epoch ms)."""

    at_ms: float
    row_ids: frozenset[str]

    @classmethod
    def of(cls, info: Mapping[str, Any] | None) -> Listing | None:
        """The listing in a SAQ worker record; None for a worker that lists nothing."""
        if not info or not isinstance(info.get(LISTED_AT), int | float):
            return None
        jobs = info.get(JOBS)
        if not isinstance(jobs, list):
            return None
        row_ids = frozenset(
            str(job["row_id"]) for job in jobs if isinstance(job, dict) and job.get("row_id")
        )
        return cls(float(info[LISTED_AT]), row_ids)

    def lists(self, row_id: UUID | str, since_ms: float) -> bool | None:
        """Whether the worker runs the job, by a listing made after `since_ms` (the run's
        start, on the same worker's clock); None if the listing is older: it cannot tell."""
        if self.at_ms <= since_ms:
            return None
        return str(row_id) in self.row_ids


def fleet_of(workers: Mapping[str, Any]) -> dict[str, Listing | None]:
    """The live workers of SAQ's queue info, each with what it lists (None: nothing)."""
    return {worker_id: Listing.of(info) for worker_id, info in workers.items()}


def adopt(job: Job) -> None:
    """Give a job a plain SAQ producer made a row id, so the row is created as it starts.

    A job with neither a row id nor the outbox's mark has no row: its key is its row id if
    it is a UUID (an outbox job enqueued before the mark existed keeps its row, which the
    insert then finds), else a new one.
    """
    meta = job.meta if job.meta is not None else {}
    if ROW_ID in meta or meta.get(FROM_OUTBOX):
        return
    try:
        row_id = str(UUID(job.key))
    except (ValueError, TypeError, AttributeError):
        row_id = str(uuid4())
    job.meta = {**meta, ROW_ID: row_id}


def _str_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)
