"""Jobs that wait for other jobs (`after=`): the statements that release a child when its
last parent completes, abort it when a parent ends otherwise, put it back to waiting when an
operator retries that parent, and repair what a killed process left (the child's insert is
`app.jobs.outbox.after`'s).

The protocol that makes release exact under concurrency (docs/reliability.md, promise 14):

- a child is inserted by one statement that first sets `has_dependents` on its parents with
  an UPDATE, which locks them: a parent finishing at that moment either finishes first (the
  child sees it complete and is `queued` at once) or after (its guarded UPDATE returns
  `has_dependents`, so its recorder releases the child);
- a child counts the parents it still waits for (`parents_left`); each parent's completion
  decrements it in an UPDATE of the child's row, so two parents completing at once in two
  processes are serialized by the row's lock and the second one releases it (a check of the
  other parents' statuses could not: each would read the other's as unfinished);
- the reconciler repairs what a killed process left: waiting rows whose parents have all
  completed are released, those with a parent failed or aborted are aborted.

Job ids are plain columns, not foreign keys: a parent deleted by retention counts as gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import text

from app.jobs.lifecycle import JobStatus
from app.jobs.record.counting import counted
from app.jobs.record.settled import MovedChild, Settled, aborted_of, moved_of, released_of
from app.jobs.record.statements import Execute

# The errors entry of a row aborted because of a parent names the parent under this key:
# an operator's retry of the parent puts such rows (and only those) back to waiting.
ABORTED_BY_PARENT = "aborted_by_parent"


def parent_reason(parent_id: str, status: str) -> str:
    """The SQL of a child's error when its parent ended `status` (of the given columns)."""
    return (
        f"'parent job ' || {parent_id} || CASE WHEN {status} = 'failed' "
        "THEN ' failed' ELSE ' was aborted' END"
    )


def ended_entry(attempts: str, at: str, reason: str, parent_id: str) -> str:
    """The SQL of the errors entry of a child aborted because of a parent."""
    return (
        f"jsonb_build_object('attempt', {attempts}, 'at', {at}, 'status', 'aborted', "
        f"'error', {reason}, '{ABORTED_BY_PARENT}', {parent_id})"
    )


# What the outbox needs to put a released row's job on the queue, then what its event needs.
_RELEASED = """c.job_id, c.task_name, c.arguments, c.attempts, c.max_attempts, c.manual_retries,
    c.has_dependents, c.queue, c.error, c.user_id, c.project_id"""
# What the event of a row these statements moved needs (they are not a worker's transitions,
# so the recorder does not publish them).
_MOVED = "job_id, status, attempts, error, task_name, queue, user_id, project_id"

# Parents that completed: each child's count goes down by the number among them it waits
# for; at zero it is released. An UPDATE of the child's row: concurrent parents' releases
# of one child take turns, and the later one counts from what the earlier one wrote. Each
# link is counted once (`counted`), so the statement sent again after a lost reply does not
# count a parent twice.
RELEASE_CHILDREN = text(
    f"""
    WITH newly AS (
        UPDATE job_dependencies SET counted = true
        WHERE parent_id = ANY(CAST(:parent_ids AS uuid[])) AND NOT counted
        RETURNING child_id
    )
    UPDATE background_jobs AS c SET
        parents_left = GREATEST(c.parents_left - r.n, 0),
        status = CASE WHEN c.parents_left - r.n <= 0 THEN 'queued' ELSE c.status END,
        updated_at = now()
    FROM (SELECT child_id, count(*) AS n FROM newly GROUP BY child_id) AS r
    WHERE c.job_id = r.child_id AND c.status = 'waiting'
    RETURNING c.status, {_RELEASED}
    """  # noqa: S608 - built from this module's constants only
)

# Parents that ended failed or aborted: every waiting descendant is aborted, each naming its
# own parent (a grandchild names the child that was aborted before it).
_DOOMED_REASON = parent_reason("x.parent_id::text", "x.parent_status")
ABORT_DESCENDANTS = text(
    f"""
    WITH RECURSIVE doomed(child_id, parent_id, parent_status) AS (
        SELECT d.child_id, d.parent_id, CAST(p.status AS text) FROM job_dependencies d
        JOIN background_jobs p ON p.job_id = d.parent_id
        WHERE d.parent_id = ANY(CAST(:parent_ids AS uuid[]))
          AND p.status IN ('failed', 'aborted')
      UNION
        SELECT d.child_id, d.parent_id, CAST('aborted' AS text) FROM job_dependencies d
        JOIN doomed x ON d.parent_id = x.child_id
    ),
    aborted AS (
        UPDATE background_jobs AS c SET
            status = 'aborted',
            completed_at = now(),
            updated_at = now(),
            error = {_DOOMED_REASON},
            errors = c.errors || jsonb_build_array(
                {ended_entry("c.attempts", "CAST(now() AS text)", _DOOMED_REASON, "x.parent_id")})
        FROM (SELECT DISTINCT ON (child_id) child_id, parent_id, parent_status FROM doomed
              ORDER BY child_id, parent_id) AS x
        WHERE c.job_id = x.child_id AND c.status = 'waiting'
        RETURNING c.*
    ){counted("aborted")}
    SELECT {_MOVED} FROM aborted
    """  # noqa: S608 - built from this module's constants only
)

# Rows an operator retried: their descendants aborted because of a parent wait again, each
# for its parents that have not completed (the retried rows among them).
_BY_PARENT = f"(c.errors -> -1 ->> '{ABORTED_BY_PARENT}') IS NOT NULL"
WAIT_AGAIN = text(
    f"""
    WITH RECURSIVE back(child_id) AS (
        SELECT d.child_id FROM job_dependencies d
        JOIN background_jobs c ON c.job_id = d.child_id
        WHERE d.parent_id = ANY(CAST(:job_ids AS uuid[])) AND c.status = 'aborted'
          AND {_BY_PARENT}
      UNION
        SELECT d.child_id FROM job_dependencies d JOIN back b ON d.parent_id = b.child_id
        JOIN background_jobs c ON c.job_id = d.child_id
        WHERE c.status = 'aborted' AND {_BY_PARENT}
    ),
    -- What the aborted rows added to `job_stats` is taken back (locked first, so `ended`
    -- is what they were).
    ended AS MATERIALIZED (
        SELECT id, created_at, task_name, project_id, status, started_at, completed_at
        FROM background_jobs WHERE job_id IN (SELECT child_id FROM back) AND status = 'aborted'
        FOR UPDATE
    ),
    again AS (
        UPDATE background_jobs AS c SET
            status = 'waiting',
            completed_at = NULL,
            updated_at = now(),
            errors = c.errors || jsonb_build_array(jsonb_build_object(
                'attempt', c.attempts, 'at', CAST(now() AS text), 'status', 'waiting',
                'retried_from', 'aborted', 'retried_by', CAST(:actor AS text))),
            parents_left = (SELECT count(*) FROM job_dependencies d
                            JOIN background_jobs p ON p.job_id = d.parent_id
                            WHERE d.child_id = c.job_id AND p.status <> 'complete')
        FROM ended AS e
        WHERE c.id = e.id AND c.created_at = e.created_at AND c.status = 'aborted'
        RETURNING c.id, {", ".join(f"c.{column}" for column in _MOVED.split(", "))}
    ){counted("(SELECT e.* FROM ended AS e JOIN again AS a ON a.id = e.id)", sign=-1)}
    SELECT {_MOVED} FROM again
    """  # noqa: S608 - built from this module's constants only
)

# The reconciler's safety net, for what a killed process or a lost write left behind: read
# first, so that a pass with nothing to settle writes nothing.
_STALE_WAITING = "c.status = 'waiting' AND c.updated_at < CAST(:older_than AS timestamptz)"
READY_WAITING = text(
    f"""
    SELECT c.job_id FROM background_jobs c
    WHERE {_STALE_WAITING}
      AND NOT EXISTS (SELECT 1 FROM job_dependencies d
                      JOIN background_jobs p ON p.job_id = d.parent_id
                      WHERE d.child_id = c.job_id AND p.status <> 'complete')
    """  # noqa: S608 - built from this module's constants only
)
RELEASE_READY = text(
    f"""
    UPDATE background_jobs AS c SET status = 'queued', parents_left = 0, updated_at = now()
    WHERE c.job_id = ANY(CAST(:job_ids AS uuid[])) AND c.status = 'waiting'
    RETURNING c.status, {_RELEASED}
    """  # noqa: S608 - built from this module's constants only
)
ENDED_PARENTS_OF_WAITING = text(
    f"""
    SELECT DISTINCT d.parent_id FROM background_jobs c
    JOIN job_dependencies d ON d.child_id = c.job_id
    JOIN background_jobs p ON p.job_id = d.parent_id
    WHERE {_STALE_WAITING} AND p.status IN ('failed', 'aborted')
    """  # noqa: S608 - built from this module's constants only
)


async def settle_children(execute: Execute, ended: Mapping[UUID, JobStatus]) -> Settled:
    """After parents ended (each has dependents): release the children whose last parent
    completed, abort the descendants of those that failed or were aborted."""
    completed = [job_id for job_id, status in ended.items() if status is JobStatus.COMPLETE]
    others = [job_id for job_id, status in ended.items() if status is not JobStatus.COMPLETE]
    settled = Settled()
    if completed:
        settled += released_of(await execute(RELEASE_CHILDREN, {"parent_ids": completed}))
    if others:
        settled += aborted_of(await execute(ABORT_DESCENDANTS, {"parent_ids": others}))
    return settled


async def wait_again(execute: Execute, job_ids: Sequence[UUID], actor: str) -> list[MovedChild]:
    """After an operator retried `job_ids`: the descendants they aborted wait again."""
    if not job_ids:
        return []
    rows = await execute(WAIT_AGAIN, {"job_ids": list(job_ids), "actor": actor})
    return [moved_of(row) for row in rows]


async def repair_waiting(execute: Execute, older_than: datetime) -> Settled:
    """The reconciler's pass over waiting rows unchanged since `older_than`: those whose
    parents all completed are released, those with a parent that failed or was aborted are
    aborted with their descendants."""
    ready = await execute(READY_WAITING, {"older_than": older_than})
    settled = Settled()
    if ready:
        job_ids = [row[0] for row in ready]
        settled += released_of(await execute(RELEASE_READY, {"job_ids": job_ids}))
    ended = await execute(ENDED_PARENTS_OF_WAITING, {"older_than": older_than})
    if ended:
        parent_ids = [row[0] for row in ended]
        settled += aborted_of(await execute(ABORT_DESCENDANTS, {"parent_ids": parent_ids}))
    return settled


PARENTS_OF = text(
    "SELECT DISTINCT parent_id FROM job_dependencies WHERE child_id = ANY(CAST(:job_ids AS uuid[]))"
)


async def parents_of(execute: Execute, job_ids: Sequence[UUID]) -> list[UUID]:
    """The jobs `job_ids` wait for (fixed when each was inserted)."""
    return [row[0] for row in await execute(PARENTS_OF, {"job_ids": list(job_ids)})]


# An operator's cancel of waiting jobs: they are not on the queue, so the row is the job.
CANCEL_WAITING = text(
    f"""
    WITH aborted AS (
        UPDATE background_jobs SET status = 'aborted', error = CAST(:reason AS text),
            completed_at = now(), updated_at = now(),
            errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempts,
                'at', CAST(now() AS text), 'status', 'aborted', 'error', CAST(:reason AS text)))
        WHERE job_id = ANY(CAST(:job_ids AS uuid[])) AND status = 'waiting'
        RETURNING *
    ){counted("aborted")}
    SELECT {_MOVED} FROM aborted
    """  # noqa: S608 - built from this module's constants only
)


async def cancel_waiting(execute: Execute, job_ids: Sequence[UUID], reason: str) -> Settled:
    """Abort the waiting jobs among `job_ids` (the others had left `waiting` meanwhile), and
    their waiting descendants: `moved` holds them all, those among `job_ids` first."""
    if not job_ids:
        return Settled()
    rows = await execute(CANCEL_WAITING, {"job_ids": list(job_ids), "reason": reason})
    settled = aborted_of(rows)
    if settled.moved:
        parent_ids = [child.job_id for child in settled.moved]
        settled += aborted_of(await execute(ABORT_DESCENDANTS, {"parent_ids": parent_ids}))
    return settled
