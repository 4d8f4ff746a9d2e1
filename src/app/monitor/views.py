"""What the monitor's pages show, out of rows and query strings: the filters of a page (read
from its URL, written back into links), and each job as a template reads it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec

from app.auth.roles import Principal
from app.jobs.http.shared.redaction import Redactor
from app.jobs.http.shared.schemas import JobRead
from app.jobs.lifecycle import JobStatus
from app.jobs.reads.search import JobSearch, Position, SearchError, parse_q, parse_statuses

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
# The list's filters a page's URL may carry (the API's names), and the column that offers each.
FILTERS = ("status", "task_name", "queue", "worker_id", "user_id", "project_id", "has_error", "q")
# Text and an icon (a shape) for each status: never colour alone.
STATUS_ICONS = {
    JobStatus.WAITING: "◌",
    JobStatus.QUEUED: "◷",
    JobStatus.RUNNING: "▶",
    JobStatus.COMPLETE: "✓",
    JobStatus.FAILED: "✗",
    JobStatus.ABORTED: "⊘",
}
_ERROR_EXCERPT = 90


@dataclass(frozen=True)
class PageFilters:
    """A jobs page's filters as its URL gives them (what links keep), and as a search."""

    given: dict[str, str]  # filter name -> its value in the URL (status: comma-separated)
    search: JobSearch
    after: Position | None = None  # `cursor`: the page after (older than) this position
    before: Position | None = None  # `before`: the page just newer than this position
    limit: int = DEFAULT_PAGE_SIZE
    # A page links the same few values in many rows: each link is built once per page.
    _links: dict[tuple[tuple[str, str | None], ...], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_query(cls, query: Mapping[str, list[str]]) -> PageFilters:
        """The filters of a query string (its values by name); SearchError names a bad one."""
        given: dict[str, str] = {}
        for name in FILTERS:
            values = [value.strip() for value in query.get(name, []) if value.strip()]
            if values:
                given[name] = ",".join(values) if name == "status" else values[-1]
        search = search_of(given)
        after = _position("cursor", query)
        before = _position("before", query)
        limit = _limit(query)
        return cls(given, search, after, before, limit)

    def url(self, **changes: str | None) -> str:
        """This page's address with some filters changed (None removes one); paging restarts."""
        key = tuple(sorted(changes.items()))
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = self._url(changes)
        return link

    def _url(self, changes: Mapping[str, str | None]) -> str:
        values: dict[str, str] = dict(self.given)
        for name, value in changes.items():
            if value is None:
                values.pop(name, None)
            else:
                values[name] = value
        if self.limit != DEFAULT_PAGE_SIZE:
            values["limit"] = str(self.limit)
        return "/monitor" + (f"?{urlencode(values)}" if values else "")

    def page_url(self, *, cursor: str | None = None, before: str | None = None) -> str:
        values: dict[str, str] = dict(self.given)
        if self.limit != DEFAULT_PAGE_SIZE:
            values["limit"] = str(self.limit)
        if cursor is not None:
            values["cursor"] = cursor
        if before is not None:
            values["before"] = before
        return "/monitor" + (f"?{urlencode(values)}" if values else "")

    def query_string(self) -> str:
        """The filters alone (what live updates and bulk actions by filter send back)."""
        return urlencode(self.given)


def search_of(given: Mapping[str, str]) -> JobSearch:
    """The job list's search for a page's filters (as the API's `GET /api/v1/jobs` reads them)."""

    def one(name: str) -> tuple[str, ...]:
        return (given[name],) if name in given else ()

    search = JobSearch(
        statuses=parse_statuses([given["status"]]) if "status" in given else None,
        task_names=one("task_name"),
        queues=one("queue"),
        worker_ids=one("worker_id"),
        user_ids=tuple(_uuid(name, given[name]) for name in ("user_id",) if name in given),
        project_ids=tuple(_uuid(name, given[name]) for name in ("project_id",) if name in given),
        has_error=_boolean(given["has_error"]) if "has_error" in given else None,
    )
    return search.and_(parse_q(given["q"])) if "q" in given else search


def _uuid(name: str, value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise SearchError(name, f"{value!r} is not a UUID") from None


def _boolean(value: str) -> bool:
    if value not in ("true", "false"):
        raise SearchError("has_error", f"{value!r} is not true or false")
    return value == "true"


def _position(name: str, query: Mapping[str, list[str]]) -> Position | None:
    values = query.get(name)
    if not values:
        return None
    try:
        return Position.from_cursor(values[-1])
    except (SearchError, ValueError):
        raise SearchError(
            name, "not a cursor of this list: start again from the first page"
        ) from None


def _limit(query: Mapping[str, list[str]]) -> int:
    values = query.get("limit")
    if not values:
        return DEFAULT_PAGE_SIZE
    if not values[-1].isdigit() or int(values[-1]) not in PAGE_SIZES:
        raise SearchError("limit", f"choose one of {', '.join(map(str, PAGE_SIZES))}")
    return int(values[-1])


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def duration(seconds: float | None) -> str:
    """A duration a person reads at a glance: 0.12 s, 4.5 s, 3 min 20 s, 2 h 5 min."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def moment(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def excerpt(error: str | None) -> str:
    if not error:
        return ""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line if len(line) <= _ERROR_EXCERPT else line[: _ERROR_EXCERPT - 1] + "…"


@dataclass(frozen=True, slots=True)
class JobRow:
    """A row of the jobs table (attributes: the template reads them without a dict lookup)."""

    job_id: str
    task_name: str
    queue: str
    status: str
    icon: str
    user_id: str | None
    project_id: str | None
    worker_id: str | None
    attempts: int
    max_attempts: int
    created: str
    created_iso: str
    run_time: str
    error: str
    cursor: str


def row_view(row: Mapping[Any, Any]) -> JobRow:
    """A row of the jobs table, from the list's columns."""
    status = JobStatus(row["status"])
    return JobRow(
        job_id=str(row["job_id"]),
        task_name=row["task_name"],
        queue=row["queue"],
        status=status.value,
        icon=STATUS_ICONS[status],
        user_id=str(row["user_id"]) if row["user_id"] else None,
        project_id=str(row["project_id"]) if row["project_id"] else None,
        worker_id=row["worker_id"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        created=moment(row["created_at"]),
        created_iso=row["created_at"].isoformat(),
        run_time=duration(seconds_between(row["started_at"], row["completed_at"])),
        error=excerpt(row["error"]),
        cursor=Position(row["created_at"], row["id"]).cursor(),
    )


def job_view(job: JobRead, redactor: Redactor, principal: Principal) -> dict[str, Any]:
    """A job's page: the job as the principal may see it, timings, its errors newest first."""
    shown = redactor.job(job, principal)
    status = JobStatus(job.status)  # a row read by the ORM holds the plain text
    errors = sorted(
        (dict(entry) for entry in job.errors if isinstance(entry, dict)),
        key=lambda entry: (str(entry.get("at") or ""), int(entry.get("attempt") or 0)),
        reverse=True,
    )
    if not errors and job.error:  # a row written before errors were kept per attempt
        errors = [{"attempt": job.attempts, "error": job.error, "traceback": job.traceback}]
    for entry in errors:
        entry["when"] = _when(entry.get("at"))
    return {
        "job": msgspec.to_builtins(shown),
        "status": status.value,
        "icon": STATUS_ICONS[status],
        "finished": job.completed_at is not None,
        "created": moment(job.created_at),
        "started": moment(job.started_at),
        "completed": moment(job.completed_at),
        "wait_time": duration(seconds_between(job.created_at, job.started_at)),
        "run_time": duration(seconds_between(job.started_at, job.completed_at)),
        "arguments": pretty(shown.arguments),
        "result": pretty(shown.result) if shown.result is not None else None,
        "errors": errors,
        "masked": redactor.masks_for(principal),
    }


def _when(value: Any) -> str:
    """An entry's ISO time, shown like the page's other times."""
    try:
        return moment(datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value or "")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def relative_view(row: Any) -> dict[str, Any]:
    """A parent or child of a job as its page lists it (no status: its row was deleted)."""
    status = row["status"]
    return {
        "relation": row["relation"],
        "job_id": str(row["job_id"]),
        "task_name": row["task_name"] or "—",
        "status": status or "deleted",
        "icon": STATUS_ICONS[JobStatus(status)] if status else "·",
    }
