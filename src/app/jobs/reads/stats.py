"""Per task, what happened to the jobs created in a recent window: counts by status, the
failure rate, run and wait times (`GET /api/v1/jobs/stats`, the overview).

One statement whose cost does not grow with the table: the ended jobs' counts from
`job_stats` (one row per task and minute for windows up to an hour, per task and hour for
longer ones: a `7d` window sums 169 rows a task where `1h` sums 61) and the few its
compaction has not reached yet (`job_stats_pending`: seconds' worth), and the unfinished
jobs created in the window, counted live (as many as are waiting, queued or running). A window
starts at the minute (`5m`, `15m`, `1h`) or at the hour (`6h`, `24h`, `7d`) before
`now - window`. Percentiles come from the duration buckets (app/jobs/histogram.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import TextClause, text

from app.jobs.histogram import BUCKETS, RUN_COLUMNS, WAIT_COLUMNS, bucket_sql, percentile
from app.jobs.lifecycle import UNFINISHED_STATUSES, JobStatus, status_in
from app.jobs.record.counting import ALL_PROJECTS, COUNTS, ENDED, HOUR, MINUTE

# The windows `GET /api/v1/jobs/stats` offers, by name, in minutes.
WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "6h": 360, "24h": 1440, "7d": 10080}
_BY_MINUTE_UP_TO = 60  # minutes: longer windows are read by the hour

_STATUSES = [status.value for status in JobStatus]
_DURATIONS = [*RUN_COLUMNS, *WAIT_COLUMNS]


def _pivot(status: str, run: str, wait: str, n: str) -> str:
    """A select list in `job_stats`'s shape, from rows of (status, run and wait buckets, n)."""
    counts = [f"coalesce(sum({n}) FILTER (WHERE {status} = '{s}'), 0)" for s in _STATUSES]
    return ", ".join(
        [
            *counts,
            *(f"sum({n}) FILTER (WHERE {run} = {i})" for i in range(len(RUN_COLUMNS))),
            *(f"sum({n}) FILTER (WHERE {wait} = {i})" for i in range(len(WAIT_COLUMNS))),
        ]
    )


_WAIT = "EXTRACT(EPOCH FROM started_at - created_at)::float8"
# One statement, so one snapshot: the compacted counts, those still pending (a compaction
# moves them from one to the other atomically) and the unfinished rows of the window (a job
# that ends meanwhile is in exactly one of them).
_STATS = f"""
    SELECT task_name, {", ".join(f"sum({c})" for c in [*_STATUSES, *_DURATIONS])}
    FROM (
        SELECT task_name, {", ".join(c if c in COUNTS else f"0 AS {c}" for c in _STATUSES)},
            {", ".join(_DURATIONS)}
        FROM job_stats
        WHERE kind = :kind AND project_id = :every_or_one AND at >= :since
        UNION ALL
        SELECT task_name, {_pivot("status", "run", "wait", "n")}
        FROM job_stats_pending
        WHERE kind = :kind AND project_id = :every_or_one AND at >= :since
        GROUP BY task_name
        UNION ALL
        SELECT task_name, {_pivot("status", "NULL", "wait_bucket", "1")}
        FROM (
            SELECT task_name, status, {bucket_sql(_WAIT)} AS wait_bucket FROM background_jobs
            WHERE {status_in(UNFINISHED_STATUSES)} AND created_at >= :since {{project}}
            OFFSET 0
        ) AS unfinished
        GROUP BY task_name
    ) AS counted
    GROUP BY task_name
    ORDER BY task_name
"""  # noqa: S608 - built from constants only
_EVERY_PROJECT = text(_STATS.format(project=""))
_ONE_PROJECT = text(_STATS.format(project="AND project_id = :every_or_one"))
# The overview's chart: per task and minute since `since`, the jobs that ended then.
_COMPLETE, _FAILED = JobStatus.COMPLETE.value, JobStatus.FAILED.value
_EVERY_PROJECT_SINCE = f"kind = '{ENDED}' AND project_id = '{ALL_PROJECTS}' AND at >= :since"
PER_MINUTE = text(
    f"""
    SELECT task_name, minute, CAST(sum(complete) AS bigint) AS complete,
        CAST(sum(failed) AS bigint) AS failed
    FROM (
        SELECT task_name, at AS minute, complete, failed FROM job_stats
        WHERE {_EVERY_PROJECT_SINCE}
        UNION ALL
        SELECT task_name, at, coalesce(sum(n) FILTER (WHERE status = '{_COMPLETE}'), 0),
            coalesce(sum(n) FILTER (WHERE status = '{_FAILED}'), 0)
        FROM job_stats_pending WHERE {_EVERY_PROJECT_SINCE}
        GROUP BY task_name, at
    ) AS ended
    GROUP BY task_name, minute
    HAVING sum(complete) > 0 OR sum(failed) > 0
    ORDER BY task_name, minute
    """  # noqa: S608 - built from constants only
)


def window_start(window: str, now: datetime) -> tuple[str, datetime]:
    """The kind of counts a window reads, and the moment it starts."""
    minutes = WINDOWS[window]
    start = now - timedelta(minutes=minutes)
    if minutes <= _BY_MINUTE_UP_TO:
        return MINUTE, start.replace(second=0, microsecond=0)
    return HOUR, start.replace(minute=0, second=0, microsecond=0)


def stats_statement(kind: str, since: datetime, project_id: UUID | None) -> TextClause:
    """Per task, the counts of the jobs created since `since` (of `project_id`, if given)."""
    if project_id is None:
        return _EVERY_PROJECT.bindparams(kind=kind, since=since, every_or_one=ALL_PROJECTS)
    return _ONE_PROJECT.bindparams(kind=kind, since=since, every_or_one=project_id)


def task_stats(rows: list[Any]) -> list[dict[str, Any]]:
    """Per task (by name), the row the stats answer is made of: `total`, each status's count,
    `run_seconds` and `wait_seconds` as [p50, p95] (None when no job qualifies)."""
    found = []
    statuses, run_end = len(_STATUSES), len(_STATUSES) + BUCKETS
    for task_name, *sums in rows:
        counts = {status: int(n or 0) for status, n in zip(_STATUSES, sums, strict=False)}
        if not sum(counts.values()):  # an operator retried every one of them
            continue
        found.append(
            {
                "task_name": task_name,
                "total": sum(counts.values()),
                **counts,
                "run_seconds": _percentiles([int(n or 0) for n in sums[statuses:run_end]]),
                "wait_seconds": _percentiles([int(n or 0) for n in sums[run_end:]]),
            }
        )
    return found


def _percentiles(counts: list[int]) -> list[float] | None:
    p50, p95 = percentile(counts, 0.5), percentile(counts, 0.95)
    return None if p50 is None or p95 is None else [p50, p95]


def failure_rate(failed: int, ended: int) -> float | None:
    """The share of ended jobs (complete, failed or aborted) that failed; None: none ended."""
    return round(failed / ended, 4) if ended else None
