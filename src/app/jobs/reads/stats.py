"""Per task, what happened to the jobs created in a recent window: counts by status, the
failure rate, run and wait times (`GET /api/v1/jobs/stats`).

One statement over the window's rows, found through the index on `(created_at, id)` (or on
`(project_id, created_at, id)` for a project); the percentiles are `percentile_cont`'s.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.dialects.postgresql import UUID as PG_UUID

from app.jobs.lifecycle import JobStatus

# The windows `GET /api/v1/jobs/stats` offers, by name, in minutes.
WINDOWS = {"5m": 5, "15m": 15, "1h": 60, "6h": 360, "24h": 1440, "7d": 10080}

# Run time: from the (last) start to the end; wait time: from the row's creation to the start.
_RUN = "EXTRACT(EPOCH FROM completed_at - started_at)::float8"
_WAIT = "EXTRACT(EPOCH FROM started_at - created_at)::float8"
_STATUS_COUNTS = ",\n        ".join(
    f"count(*) FILTER (WHERE status = '{status.value}') AS {status.value}" for status in JobStatus
)
_STATS = f"""
    SELECT task_name,
        count(*) AS total,
        {_STATUS_COUNTS},
        percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {_RUN})
            FILTER (WHERE started_at IS NOT NULL AND completed_at IS NOT NULL) AS run_seconds,
        percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {_WAIT})
            FILTER (WHERE started_at IS NOT NULL) AS wait_seconds
    FROM background_jobs
    WHERE created_at >= :since {{project}}
    GROUP BY task_name
    ORDER BY task_name
"""  # noqa: S608 - built from this module's constants only
_SINCE = bindparam("since", type_=TIMESTAMP(timezone=True))
_ALL_PROJECTS = text(_STATS.format(project="")).bindparams(_SINCE)
_ONE_PROJECT = text(_STATS.format(project="AND project_id = :project_id")).bindparams(
    _SINCE, bindparam("project_id", type_=PG_UUID(as_uuid=True))
)


def stats_statement(since: datetime, project_id: UUID | None) -> TextClause:
    """Per task, the jobs created at or after `since` (of `project_id` only, if given)."""
    if project_id is None:
        return _ALL_PROJECTS.params(since=since)
    return _ONE_PROJECT.params(since=since, project_id=project_id)


def failure_rate(failed: int, ended: int) -> float | None:
    """The share of ended jobs (complete, failed or aborted) that failed; None: none ended."""
    return round(failed / ended, 4) if ended else None
