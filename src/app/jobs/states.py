"""The one place that defines a tracked job's statuses and which transitions are allowed.

SAQ's own words are used, except `running` for SAQ's `active`, so `/saq` and
`background_jobs` speak nearly one language.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED}
)

# target -> the statuses a row may be in when it moves there. A terminal row never moves:
# a late or duplicate event (a retry's `queued` arriving after the next attempt started,
# a second delivery of a finished job) must not rewrite history.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.QUEUED}),
    JobStatus.COMPLETE: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.ABORTED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}

_FROM_SAQ = {
    "new": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "active": JobStatus.RUNNING,
    "aborting": JobStatus.RUNNING,
    "complete": JobStatus.COMPLETE,
    "failed": JobStatus.FAILED,
    "aborted": JobStatus.ABORTED,
}


def from_saq(status: str) -> JobStatus:
    """Translate a SAQ `Status` value (or its string) into the table's word."""
    return _FROM_SAQ[str(getattr(status, "value", status))]


def can_move(source: JobStatus, target: JobStatus) -> bool:
    return source in ALLOWED_SOURCES[target]
