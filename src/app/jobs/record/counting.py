"""`job_stats`: what the jobs that ended add up to, per minute and task, written by the same
statement that makes their rows final, so that no crash can count a move twice or miss one.

That statement only appends narrow rows to `job_stats_pending` (kind, project, time, task,
status, run and wait buckets, count: no index, no conflict to resolve, so it costs the
batch little); `COMPACT`, run every few seconds by the workers, moves them into `job_stats`
(one row per kind, project, time and task, a column per bucket) in one statement, so each
count is in exactly one of the two tables, and readers add both up. A row that reaches a
final status (`complete`, `failed`, `aborted`) is counted under these keys:

- kinds `minute` and `hour`: the minute and the hour of the job's *creation*, for every
  project (`ALL_PROJECTS`) and for its own: its status, and its run and wait times, each a
  count in the column of its bucket (app/jobs/histogram.py). `GET /api/v1/jobs/stats` sums
  a window's rows: one per task and minute (or hour), however many jobs;
- kind `ended`: the minute it *ended*, every project, its status only (the overview's chart).

Only moves that took effect are counted: the guarded UPDATE returns only them, and a final
row never moves again (a late or repeated event is ignored), except through an operator's
retry, which takes the row's counts back (`sign=-1`) in the retry's own statement. The
compaction writes in key order, so two compactions never wait for each other in a cycle.
"""

from __future__ import annotations

from uuid import UUID

from app.jobs.histogram import RUN_COLUMNS, WAIT_COLUMNS, bucket_sql
from app.jobs.lifecycle import TERMINAL_STATUSES, JobStatus, status_in

ALL_PROJECTS = UUID(int=0)  # the counts of every project together
MINUTE, HOUR, ENDED = "minute", "hour", "ended"
COUNTS = tuple(status.value for status in JobStatus if status in TERMINAL_STATUSES)
_RUN = "EXTRACT(EPOCH FROM s.completed_at - s.started_at)::float8"
_WAIT = "EXTRACT(EPOCH FROM s.started_at - s.created_at)::float8"
_KEY = "kind, project_id, at, task_name"
_ALL = f"'{ALL_PROJECTS}'::uuid"
_KINDS = f"""(VALUES
        ('{MINUTE}', {_ALL}, date_trunc('minute', m.created_at, 'UTC'), m.run, m.wait),
        ('{MINUTE}', m.project_id, date_trunc('minute', m.created_at, 'UTC'), m.run, m.wait),
        ('{HOUR}', {_ALL}, date_trunc('hour', m.created_at, 'UTC'), m.run, m.wait),
        ('{HOUR}', m.project_id, date_trunc('hour', m.created_at, 'UTC'), m.run, m.wait),
        ('{ENDED}', {_ALL}, date_trunc('minute', m.completed_at, 'UTC'), NULL::int, NULL::int)
    ) AS k(kind, project_id, at, run, wait)"""


def count_ended(source: str, sign: int = 1) -> str:
    """An INSERT that adds (`sign` 1) or takes back (-1) the final rows of `source` (a CTE or
    subquery with task_name, project_id, status, created_at, started_at, completed_at) to
    `job_stats_pending`: one narrow row per kind, project, time, task, status and buckets."""
    minus = "-" if sign < 0 else ""
    ended = status_in(TERMINAL_STATUSES).replace("status", "s.status")
    return f"""
    INSERT INTO job_stats_pending ({_KEY}, status, run, wait, n)
    SELECT k.kind, k.project_id, k.at, m.task_name, m.status, k.run, k.wait, {minus}count(*)
    FROM (
        SELECT s.task_name, s.project_id, s.status, s.created_at, s.completed_at,
            {bucket_sql(_RUN)} AS run, {bucket_sql(_WAIT)} AS wait
        FROM {source} AS s WHERE {ended}
    ) AS m
    CROSS JOIN LATERAL {_KINDS}
    WHERE k.project_id IS NOT NULL AND k.at IS NOT NULL
    GROUP BY k.kind, k.project_id, k.at, m.task_name, m.status, k.run, k.wait
    """  # noqa: S608 - built from this module's constants only


def counted(source: str, sign: int = 1) -> str:
    """The data-modifying CTE (`, name AS (...)`) that counts `source`'s final rows."""
    return f",\n    {'counted' if sign > 0 else 'uncounted'} AS ({count_ended(source, sign)})"


def _pending_bucket(measure: str, bucket: int) -> str:
    return f"nullif(sum(n) FILTER (WHERE {measure} = {bucket}), 0)"


_DURATIONS = [*RUN_COLUMNS, *WAIT_COLUMNS]
# The pending counts moved into `job_stats` in one statement: each is counted exactly once,
# before or after (a second compaction at once skips the rows the first one deleted).
COMPACT = f"""
    WITH pending AS (DELETE FROM job_stats_pending RETURNING *)
    INSERT INTO job_stats ({_KEY}, {", ".join(COUNTS)}, {", ".join(_DURATIONS)})
    SELECT {_KEY},
        {", ".join(f"coalesce(sum(n) FILTER (WHERE status = '{c}'), 0)" for c in COUNTS)},
        {", ".join(_pending_bucket("run", i) for i in range(len(RUN_COLUMNS)))},
        {", ".join(_pending_bucket("wait", i) for i in range(len(WAIT_COLUMNS)))}
    FROM pending
    GROUP BY {_KEY}
    ORDER BY {_KEY}
    ON CONFLICT ({_KEY}) DO UPDATE SET {
    ", ".join(
        [
            *(f"{c} = job_stats.{c} + excluded.{c}" for c in COUNTS),
            *(
                f"{c} = nullif(coalesce(job_stats.{c}, 0) + coalesce(excluded.{c}, 0), 0)"
                for c in _DURATIONS
            ),
        ]
    )
}
    """  # noqa: S608 - built from this module's constants only
