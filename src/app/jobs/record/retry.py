"""An operator's retry of ended jobs (`RETRY_ENDED`): the one way out of a final status
(`RETRYABLE_STATUSES` in lifecycle.py), with what the rows added to `job_stats` taken back
in the same statement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text

from app.jobs.ids import EARLIEST, LATEST, created_between
from app.jobs.lifecycle import RETRYABLE_STATUSES, status_in
from app.jobs.record.counting import counted

# An operator's retry of ended jobs: back to `queued` under the same job_id, for at least one
# more attempt, with an entry in the history saying who retried it. One statement for any
# number of jobs; its status guard makes concurrent retries of a job take effect once. A job
# with parents that have not all completed goes back to `waiting` for them, not on the queue.
# What the ended rows added to `job_stats` is taken back in the same statement (the rows are
# locked first, so `ended` is what they were when retried).
_RETRYABLE = status_in(RETRYABLE_STATUSES)
_RETRIED_ENDED = "(SELECT e.* FROM ended AS e JOIN retried AS r ON r.id = e.id)"
_PARENTS_LEFT = """(SELECT count(*) FROM job_dependencies d
            JOIN background_jobs p ON p.job_id = d.parent_id AND p.created_at BETWEEN
                CAST(:parents_oldest AS timestamptz) AND CAST(:parents_newest AS timestamptz)
            WHERE d.child_id = b.job_id AND p.status <> 'complete')"""
_AGAIN = f"CASE WHEN {_PARENTS_LEFT} > 0 THEN 'waiting' ELSE 'queued' END"
RETRY_ENDED = text(
    f"""
    WITH ended AS MATERIALIZED (
        SELECT id, created_at, task_name, project_id, status, started_at, completed_at
        FROM background_jobs
        WHERE job_id = ANY(CAST(:job_ids AS uuid[])) AND {_RETRYABLE}
          AND created_at BETWEEN CAST(:oldest AS timestamptz) AND CAST(:newest AS timestamptz)
        FOR UPDATE
    ),
    retried AS (
        UPDATE background_jobs AS b SET
            status = {_AGAIN},
            parents_left = {_PARENTS_LEFT},
            max_attempts = GREATEST(b.max_attempts, b.attempts + 1),
            manual_retries = b.manual_retries + 1,
            completed_at = NULL,
            progress = NULL,
            progress_message = NULL,
            errors = b.errors || jsonb_build_array(jsonb_build_object(
                'attempt', b.attempts, 'at', CAST(:at AS text), 'status', {_AGAIN},
                'retried_from', b.status, 'retried_by', CAST(:actor AS text))),
            updated_at = now()
        FROM ended
        WHERE b.id = ended.id AND b.created_at = ended.created_at AND b.{_RETRYABLE}
          AND b.created_at BETWEEN CAST(:oldest AS timestamptz) AND CAST(:newest AS timestamptz)
        RETURNING b.*
    ){counted(_RETRIED_ENDED, sign=-1)}
    SELECT * FROM retried
    """  # noqa: S608 - built from this module's constants only
)


def retry_parameters(
    job_ids: Iterable[UUID], actor: str, parents: Sequence[UUID] = ()
) -> dict[str, Any]:
    """RETRY_ENDED's parameters; `parents`: the jobs the retried ones wait for, if any (the
    partitions their rows are read in: none without them)."""
    ids = list(job_ids)
    oldest, newest = created_between(ids)
    parents_oldest, parents_newest = created_between(parents) if parents else (LATEST, EARLIEST)
    return {
        "job_ids": ids,
        "actor": actor,
        "at": datetime.now(UTC).isoformat(),
        "oldest": oldest,
        "newest": newest,
        "parents_oldest": parents_oldest,
        "parents_newest": parents_newest,
    }
