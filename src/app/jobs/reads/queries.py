"""The job list's statements: pages an index hands over in order, and counts that stop.

Every page is ordered `created_at DESC, id DESC` and continues after a position (keyset),
so the database reads only the rows of the page, never the rows before it. Each filter the
API offers has an index that starts with its column and ends with `(created_at, id)`
(`BackgroundJob`'s table args), so an index scan returns the page already in order. The
process's connections plan without sorts (`app.config.PLANNER_SETTINGS`): a sort would
read every matching row first, which is what makes job lists fall over at a million rows.
Several statuses are one index scan per status, merged (`Merge Append`), because an index
returns one status's rows in order, not several statuses' together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB

from app.db.models import BackgroundJob
from app.jobs.ids import EARLIEST, LATEST, created_at_of, created_between
from app.jobs.lifecycle import ON_QUEUE_STATUSES
from app.jobs.reads.search import SCAN_LIMIT, JobSearch, Position

TOTAL_LIMIT = 1_000  # a list counts its rows up to here, then says "more than"

JOBS = BackgroundJob.__table__
MATCHED, EXAMINED, MATCHED_SO_FAR, TOTAL = "_matched", "_examined", "_matched_so_far", "_total"


def by_job_ids(job_ids: Iterable[UUID]) -> list[ColumnElement[bool]]:
    """The rows of `job_ids`, read only in the partitions their times fall in (ids spell
    their row's `created_at`: app/jobs/ids.py); one id alone, in its one partition."""
    ids = list(job_ids)
    c = JOBS.c
    if len(ids) == 1 and (created_at := created_at_of(ids[0])) is not None:
        return [c.job_id == ids[0], c.created_at == created_at]
    oldest, newest = created_between(ids)
    if (oldest, newest) == (EARLIEST, LATEST):
        return [c.job_id.in_(ids)]
    return [c.job_id.in_(ids), c.created_at.between(oldest, newest)]


def unfinished_statement(
    queue: str, older_than: datetime, after: tuple[datetime, UUID] | None, limit: int
) -> Select[BackgroundJob]:
    """The reconciler's page: rows of `queue` whose job is on it (or should be), unchanged since
    `older_than`, after `after`, in the order of the partial index on `(updated_at, job_id)`
    of unfinished rows, which each partition has: its scans are merged in order, never
    sorted. Waiting rows are not on the queue (`dependencies.repair_waiting` settles them)."""
    c = BackgroundJob
    conditions: list[ColumnElement[bool]] = [
        c.status.in_(sorted(status.value for status in ON_QUEUE_STATUSES)),
        c.queue == queue,
        c.updated_at < older_than,
    ]
    if after is not None:
        conditions.append(tuple_(c.updated_at, c.job_id) > tuple_(*after))
    return select(c).where(*conditions).order_by(c.updated_at, c.job_id).limit(limit)


def _like(value: str) -> str:
    """`value` as a LIKE pattern that matches it literally."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def indexed_conditions(search: JobSearch) -> list[ColumnElement[bool]]:
    """The filters an index serves (statuses aside)."""
    c = JOBS.c
    conditions: list[ColumnElement[bool]] = [
        *(c.task_name == name for name in search.task_names),
        *(c.queue == queue for queue in search.queues),
        *(c.worker_id == worker for worker in search.worker_ids),
        *(c.user_id == user for user in search.user_ids),
        *(c.project_id == project for project in search.project_ids),
    ]
    if search.created_after is not None:
        conditions.append(c.created_at > search.created_after)
    if search.created_before is not None:
        conditions.append(c.created_at < search.created_before)
    if search.has_error is not None:
        conditions.append(c.error.is_not(None) if search.has_error else c.error.is_(None))
    if search.error_texts and search.has_error is None:
        conditions.append(c.error.is_not(None))  # the index of rows with an error serves it
    return conditions


def scanned_conditions(search: JobSearch) -> list[ColumnElement[bool]]:
    """The terms no index serves: checked on each row the scan reads."""
    c = JOBS.c
    return [
        *(c.arguments.op("@>")(cast(literal(doc, String), JSONB)) for doc in search.arguments),
        *(c.error.ilike(f"%{_like(phrase)}%", escape="\\") for phrase in search.error_texts),
        *(
            or_(
                c.task_name.ilike(f"{_like(word)}%", escape="\\"),
                c.error.ilike(f"%{_like(word)}%", escape="\\"),
            )
            for word in search.words
        ),
    ]


def _status_legs(search: JobSearch) -> list[ColumnElement[bool] | None]:
    if search.statuses is None:
        return [None]
    return [JOBS.c.status == status.value for status in sorted(search.statuses)]


def _in_order(statement: Select[Any], columns: Any) -> Select[Any]:
    return statement.order_by(columns.created_at.desc(), columns.id.desc())


def _ordered(
    search: JobSearch, after: Position | None, wanted: int, columns: list[Any] | None = None
) -> Select[Any]:
    """The first `wanted` rows after `after` in the list's order, each status's from its index."""
    keyset = []
    if after is not None:
        keyset = [tuple_(JOBS.c.created_at, JOBS.c.id) < tuple_(after.created_at, after.id)]
    conditions = [*indexed_conditions(search), *keyset]
    scanned = scanned_conditions(search)
    columns = [*(JOBS.c if columns is None else columns)]
    if scanned:
        columns.append(and_(*scanned).label(MATCHED))
    legs = [
        _in_order(
            select(*columns).where(*conditions, *([s] if s is not None else [])), JOBS.c
        ).limit(wanted)
        for s in _status_legs(search)
    ]
    if len(legs) == 1:
        return legs[0]
    merged = union_all(*legs).subquery("by_status")
    return _in_order(select(merged), merged.c).limit(wanted)


def count_statement(search: JobSearch) -> Select[Any]:
    """How many rows match, counted up to `TOTAL_LIMIT` + 1 (never a full count): the walk
    a page would make through the same index, to the 1,001st row at most: no more than
    about five pages of 200 cost."""
    walk = _ordered(search, None, TOTAL_LIMIT + 1, columns=[JOBS.c.created_at, JOBS.c.id])
    return select(func.count()).select_from(walk.subquery("matching"))


def status_breakdown_statement(search: JobSearch, newest: int) -> Select[Any]:
    """Per status, how many of the `newest` newest rows matching `search` have it: one walk
    in the list's order that stops there, however rare a status is. (Counting each status on
    its own walks every matching row when a status has fewer than the cap.)"""
    columns = [JOBS.c.status, JOBS.c.created_at, JOBS.c.id]
    walk = _ordered(search, None, newest, columns=columns).subquery("newest")
    return select(walk.c.status, func.count()).group_by(walk.c.status)


def page_statement(
    search: JobSearch, *, after: Position | None, limit: int, offset: int
) -> Select[Any]:
    """Up to `limit` + 1 rows of the page (one more says there is a next page).

    Without text or argument terms, each row carries the capped count (`_total`). With them,
    the scan reads at most `SCAN_LIMIT` rows: the rows that match come with `_matched`, and
    the row where the scan stopped, if it stopped early, with `_examined` = `SCAN_LIMIT`.
    """
    if not search.scans_text:
        page = _ordered(search, after, offset + limit + 1).limit(limit + 1).offset(offset)
        total = count_statement(search).scalar_subquery().label(TOTAL)
        return page.add_columns(total)
    candidates = _ordered(search, after, SCAN_LIMIT).subquery("candidates")
    c = candidates.c
    order = (c.created_at.desc(), c.id.desc())
    examined = (
        select(
            candidates,
            func.row_number().over(order_by=order).label(EXAMINED),
            func.count()
            .filter(c[MATCHED])
            .over(order_by=order, rows=(None, 0))
            .label(MATCHED_SO_FAR),
        )
    ).subquery("examined")
    e = examined.c
    return _in_order(
        select(examined).where(
            or_(and_(e[MATCHED], e[MATCHED_SO_FAR] > offset), e[EXAMINED] == SCAN_LIMIT)
        ),
        e,
    ).limit(limit + 1)


@dataclass(frozen=True, slots=True)
class ListedPage:
    """A page of the list and where the next one starts (None: this is the last)."""

    rows: list[Mapping[str, Any]]  # column values (RowMapping, or the driver's Record)
    next: Position | None
    total: int | None  # None: not counted (a search with text or argument terms)
    total_is_exact: bool


def read_page(
    found: Sequence[Mapping[str, Any]], search: JobSearch, *, limit: int, offset: int
) -> tuple[list[Mapping[str, Any]], Position | None]:
    """The page's rows out of what `page_statement` returned, and the next page's start."""
    stopped_at = None
    matched = list(found)
    if search.scans_text:
        matched = [row for row in found if row[MATCHED] and row[MATCHED_SO_FAR] > offset]
        stopped_at = next((row for row in found if row[EXAMINED] == SCAN_LIMIT), None)
    if len(matched) > limit:
        matched, stopped_at = matched[:limit], matched[limit - 1]
    if stopped_at is None:
        return matched, None
    return matched, Position(stopped_at["created_at"], stopped_at["id"])


def capped_total(count: int) -> tuple[int, bool]:
    """`total` and `total_is_exact` for a count made by `count_statement`."""
    return min(count, TOTAL_LIMIT), count <= TOTAL_LIMIT
