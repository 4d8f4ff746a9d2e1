"""What settling children did (`app.jobs.record.dependencies`): the rows released, to be put
on the queue, and every row moved, for the event streams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from app.jobs.lifecycle import JobStatus


@dataclass(frozen=True, slots=True)
class ReleasedJob:
    """A row moved from `waiting` to `queued`: what the outbox puts on the queue."""

    job_id: UUID
    task_name: str
    arguments: Mapping[str, Any]
    attempts: int
    max_attempts: int
    manual_retries: int
    has_dependents: bool
    queue: str


def released_of(rows: Sequence[Any]) -> Settled:
    """Rows a release returned: those `queued` (the others still wait for a parent)."""
    queued = [row for row in rows if row[0] == JobStatus.QUEUED.value]
    return Settled(
        [ReleasedJob(*(row._mapping[name] for name in ReleasedJob.__slots__)) for row in queued],
        [moved_of(row) for row in queued],
    )


def aborted_of(rows: Sequence[Any]) -> Settled:
    """Rows an abort (or a cancel) returned."""
    return Settled(moved=[moved_of(row) for row in rows])


def moved_of(row: Any) -> MovedChild:
    fields = row._mapping
    return MovedChild(
        fields["job_id"], JobStatus(fields["status"]), fields["attempts"], fields["error"],
        fields["task_name"], fields["queue"], fields["user_id"], fields["project_id"],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MovedChild:
    """A row these statements moved (released, aborted, waiting again): its event's fields."""

    job_id: UUID
    status: JobStatus
    attempt: int
    error: str | None
    task_name: str
    queue: str
    user_id: UUID | None
    project_id: UUID | None


@dataclass(frozen=True, slots=True)
class Settled:
    """What settling children did: the rows to put on the queue, and every row moved (those
    included), for the event streams."""

    released: list[ReleasedJob] = field(default_factory=list)
    moved: list[MovedChild] = field(default_factory=list)

    def __add__(self, other: Settled) -> Settled:
        return Settled(self.released + other.released, self.moved + other.moved)
