"""A job recorded to wait for others (`after=`): its row, its links and its parents' flag,
written by one statement (the protocol: `app.jobs.record.dependencies`).

A child can only name jobs that exist already, and its own id is new: a cycle, or a job
waiting for itself, cannot be written (such an id is an unknown parent, a 400).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import text

from app.jobs.ids import created_between
from app.jobs.record.counting import counted
from app.jobs.record.dependencies import ended_entry, parent_reason
from app.jobs.record.statements import Execute

MAX_PARENTS = 100  # per child: a larger fan-in is refused


class DependencyError(ValueError):
    """`after` names a job that does not exist (in the child's project), or too many."""


# One statement: lock and flag the parents (of the child's project only, in the partitions
# their ids' times fall in), claim the child's Idempotency-Key (`job_idempotency_keys`: a
# partitioned table cannot keep it unique), insert the child in the status they call for,
# the links, and, for a child aborted at once (a parent failed), its count in `job_stats`.
# A parent missing, or of another project, inserts nothing (`found` tells) and claims no key;
# the flags it set are harmless (an extra release that finds none).
_TALLY_REASON = parent_reason("t.ended_id::text", "t.ended_status")
_CREATED_TEXT = "CAST(CAST(:created AS timestamptz) AS text)"
_ALL_FOUND = "t.found = CAST(:wanted AS bigint)"
INSERT_DEPENDENT = text(
    f"""
    WITH parents AS (
        UPDATE background_jobs SET has_dependents = true
        WHERE job_id = ANY(CAST(:parent_ids AS uuid[]))
          AND created_at BETWEEN CAST(:oldest AS timestamptz) AND CAST(:newest AS timestamptz)
          AND project_id IS NOT DISTINCT FROM CAST(:project_id AS uuid)
        RETURNING job_id, status
    ),
    tally AS (
        SELECT count(*) AS found,
            count(*) FILTER (WHERE status <> 'complete') AS waiting_for,
            (array_agg(job_id ORDER BY job_id)
                FILTER (WHERE status IN ('failed', 'aborted')))[1] AS ended_id,
            (array_agg(status ORDER BY job_id)
                FILTER (WHERE status IN ('failed', 'aborted')))[1] AS ended_status
        FROM parents
    ),
    claimed AS (
        INSERT INTO job_idempotency_keys (idempotency_key, job_id, created_at)
        SELECT CAST(:key AS text), CAST(:job_id AS uuid), CAST(:created AS timestamptz)
        FROM tally t WHERE {_ALL_FOUND} AND CAST(:key AS text) IS NOT NULL
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING job_id
    ),
    child AS (
        INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments, errors,
            attempts, max_attempts, user_id, project_id, idempotency_key, request_fingerprint,
            enqueued_by, created_at, updated_at, parents_left, completed_at, error)
        SELECT CAST(:id AS uuid), CAST(:job_id AS uuid), CAST(:task_name AS text),
            CAST(:queue AS text),
            CASE WHEN t.ended_id IS NOT NULL THEN 'aborted'
                 WHEN t.waiting_for > 0 THEN 'waiting' ELSE 'queued' END,
            CAST(:arguments AS jsonb),
            CASE WHEN t.ended_id IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(
                {ended_entry("0", _CREATED_TEXT, _TALLY_REASON, "t.ended_id")})
            END,
            0, CAST(:max_attempts AS integer), CAST(:user_id AS uuid),
            CAST(:project_id AS uuid), CAST(:key AS text), CAST(:fingerprint AS text),
            CAST(:enqueued_by AS text), CAST(:created AS timestamptz),
            CAST(:created AS timestamptz), t.waiting_for,
            CASE WHEN t.ended_id IS NOT NULL THEN CAST(:created AS timestamptz) END,
            CASE WHEN t.ended_id IS NOT NULL THEN {_TALLY_REASON} END
        FROM tally t WHERE {_ALL_FOUND}
          AND (CAST(:key AS text) IS NULL OR EXISTS (SELECT 1 FROM claimed))
        RETURNING job_id, status, error, task_name, project_id, created_at, started_at,
            completed_at
    ),
    links AS (
        INSERT INTO job_dependencies (parent_id, child_id, counted)
        SELECT p.job_id, c.job_id, p.status = 'complete' FROM parents p CROSS JOIN child c
    ){counted("child")}
    SELECT t.found, c.job_id, c.status, c.error FROM tally t LEFT JOIN child c ON true
    """  # noqa: S608 - built from this module's constants only
)


@dataclass(frozen=True, slots=True)
class Inserted:
    """What the statement did: None if the idempotency key was taken (nothing inserted)."""

    status: str | None
    error: str | None


def parents_of(after: Sequence[UUID]) -> list[UUID]:
    """`after` without repeats, in the order its parents are locked; or `DependencyError`."""
    parents = sorted(set(after))
    if len(parents) > MAX_PARENTS:
        raise DependencyError(f"after: at most {MAX_PARENTS} jobs, got {len(parents)}")
    return parents


async def insert_dependent(execute: Execute, parents: list[UUID], row: dict[str, Any]) -> Inserted:
    """Insert the child `row` (INSERT_DEPENDENT's parameters) after `parents`."""
    oldest, newest = created_between(parents)
    found = await execute(
        INSERT_DEPENDENT,
        {**row, "parent_ids": parents, "wanted": len(parents), "oldest": oldest, "newest": newest},
    )
    tally = found[0]._mapping
    count, status, error = tally["found"], tally["status"], tally["error"]
    if count != len(parents):
        raise DependencyError(
            "after: each job must exist and belong to the same project as the new job "
            f"({len(parents) - count} of {len(parents)} do not)"
        )
    return Inserted(status, error)
