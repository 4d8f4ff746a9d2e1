"""`job_stats`: what the jobs that ended add up to, per minute and task, written by the same
statement that makes their rows final, so that no crash can count a move twice or miss one.

A row that reaches a final status (`complete`, `failed`, `aborted`) adds 1 to counts keyed
by (kind, project, time, task, measure, bucket):

- kinds `minute` and `hour`: the minute and the hour of the job's *creation*, for every
  project (`ALL_PROJECTS`) and for its own; measures: its status (bucket 0), `run` and
  `wait` (the bucket of its run and wait time: app/jobs/histogram.py). `GET
  /api/v1/jobs/stats` sums them over a window;
- kind `ended`: the minute it *ended*, every project, its status only (the overview's chart).

Only moves that took effect are counted: the guarded UPDATE returns only them, and a final
row never moves again (a late or repeated event is ignored), except through an operator's
retry, which takes the row's counts back (`sign=-1`) in the retry's own statement. Counts
are added in key order, so two statements never wait for each other in a cycle.
"""

from __future__ import annotations

from uuid import UUID

from app.jobs.histogram import bucket_sql
from app.jobs.lifecycle import TERMINAL_STATUSES, status_in

ALL_PROJECTS = UUID(int=0)  # the counts of every project together
MINUTE, HOUR, ENDED = "minute", "hour", "ended"
RUN, WAIT = "run", "wait"
_RUN = "EXTRACT(EPOCH FROM s.completed_at - s.started_at)::float8"
_WAIT = "EXTRACT(EPOCH FROM s.started_at - s.created_at)::float8"
_KINDS = f"""(VALUES
        ('{MINUTE}', '{ALL_PROJECTS}'::uuid, date_trunc('minute', m.created_at, 'UTC')),
        ('{MINUTE}', m.project_id, date_trunc('minute', m.created_at, 'UTC')),
        ('{HOUR}', '{ALL_PROJECTS}'::uuid, date_trunc('hour', m.created_at, 'UTC')),
        ('{HOUR}', m.project_id, date_trunc('hour', m.created_at, 'UTC')),
        ('{ENDED}', '{ALL_PROJECTS}'::uuid, date_trunc('minute', m.completed_at, 'UTC'))
    ) AS k(kind, project_id, at)"""
_MEASURES = f"""(VALUES
        (CAST(m.status AS text), 0), ('{RUN}', m.run_bucket), ('{WAIT}', m.wait_bucket)
    ) AS x(measure, bucket)"""
_KEY = "kind, project_id, at, task_name, measure, bucket"


def count_ended(source: str, sign: int = 1) -> str:
    """An INSERT that adds (`sign` 1) or takes back (-1) the final rows of `source` (a CTE or
    a subquery with task_name, project_id, status, created_at, started_at, completed_at)."""
    minus = "-" if sign < 0 else ""
    ended = status_in(TERMINAL_STATUSES).replace("status", "s.status")
    return f"""
    INSERT INTO job_stats ({_KEY}, n)
    SELECT k.kind, k.project_id, k.at, m.task_name, x.measure, x.bucket, {minus}count(*)
    FROM (
        SELECT s.task_name, s.project_id, s.status, s.created_at, s.completed_at,
            {bucket_sql(_RUN)} AS run_bucket, {bucket_sql(_WAIT)} AS wait_bucket
        FROM {source} AS s WHERE {ended}
    ) AS m
    CROSS JOIN LATERAL {_KINDS}
    CROSS JOIN LATERAL {_MEASURES}
    WHERE k.project_id IS NOT NULL AND k.at IS NOT NULL AND x.bucket IS NOT NULL
      AND (k.kind <> '{ENDED}' OR x.measure NOT IN ('{RUN}', '{WAIT}'))
    GROUP BY k.kind, k.project_id, k.at, m.task_name, x.measure, x.bucket
    ORDER BY k.kind, k.project_id, k.at, m.task_name, x.measure, x.bucket
    ON CONFLICT ({_KEY}) DO UPDATE SET n = job_stats.n + excluded.n
    """  # noqa: S608 - built from this module's constants only
