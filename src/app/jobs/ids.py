"""Job ids that carry their row's creation time, so that a lookup by id finds its partition.

`background_jobs` is partitioned by `created_at` (docs/scaling.md), and PostgreSQL can only
keep a column unique across partitions together with the partition key. So a job id is a
UUIDv7 (RFC 9562) whose 48-bit millisecond timestamp and 12-bit `rand_a` (the microseconds
within that millisecond, 0..999: the RFC's "increased clock precision") spell the row's
`created_at` to the microsecond, and the table's CHECK (`job_id_created_at(job_id) =
created_at`) holds every row to it. Two rows with one id would then have one `created_at`,
hence one partition, where the unique index on `(job_id, created_at)` refuses the second.

Ids made before the table was partitioned are random (UUIDv4): they carry no time, and a
lookup of one reads every partition's index (`created_between`). A leaf: imports nothing
from `app`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from uuid import UUID

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bounds that hold every row: a lookup that cannot be narrowed by time.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_VERSION_7 = 0x7
_VARIANT = 0b10


def new_job_id(at: datetime) -> UUID:
    """A fresh job id for a row created at `at` (to the microsecond)."""
    micros = (at - EPOCH) // timedelta(microseconds=1)
    millis, within = divmod(micros, 1000)
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (millis << 80) | (_VERSION_7 << 76) | (within << 64) | (_VARIANT << 62) | rand_b
    return UUID(int=value)


def first_id_at(at: datetime) -> UUID:
    """The least job id a row created at `at` or later can have (UUIDs compare as their
    bytes, and an id's leading bits are its millisecond): with the id of a later moment, a
    range of ids that holds the rows created between them."""
    millis = max((at - EPOCH) // timedelta(milliseconds=1), 0)
    return UUID(int=millis << 80)


def created_at_of(job_id: UUID) -> datetime | None:
    """The `created_at` a job id spells; None for an id that is not ours (not a UUIDv7, its
    sub-millisecond field out of range, or a time past year 9999: no row has one, and a
    lookup of it reads every partition and finds nothing)."""
    value = job_id.int
    if (value >> 76) & 0xF != _VERSION_7:
        return None
    within = (value >> 64) & 0xFFF
    if within >= 1000:
        return None
    try:
        return EPOCH + timedelta(milliseconds=value >> 80, microseconds=within)
    except OverflowError:  # any UUID may come in a request's path or body
        return None


def created_between(job_ids: Iterable[UUID]) -> tuple[datetime, datetime]:
    """The earliest and latest `created_at` of `job_ids`, for a condition that lets the
    planner skip the other partitions; (EARLIEST, LATEST) when one of them carries no time."""
    times = [created_at_of(job_id) for job_id in job_ids]
    known = [t for t in times if t is not None]
    if not known or len(known) < len(times):
        return EARLIEST, LATEST
    return min(known), max(known)
