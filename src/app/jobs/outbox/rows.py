"""The outbox's rows: what a trigger records (`EnqueuedJob`), and the statements that insert
them, claim their Idempotency-Keys, and read the row a key already names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, select, text

from app.db.models import BackgroundJob, JobIdempotencyKey
from app.jobs.jsonb import to_json
from app.jobs.record.statements import Execute


@dataclass(frozen=True, slots=True)
class EnqueuedJob:
    """A job's row as `enqueue` recorded it (a replayed request: as the first one did).

    A plain record, not an ORM object, which would cost the trigger more (docs/benchmarks.md).
    Read the row itself (`BackgroundJobService.get_by_job_id`) for what happened since.
    """

    id: UUID
    job_id: UUID
    task_name: str
    queue: str
    status: str
    arguments: dict[str, Any]
    attempts: int
    max_attempts: int
    user_id: UUID | None
    project_id: UUID | None
    idempotency_key: str | None
    request_fingerprint: str | None
    created_at: datetime
    enqueued_by: str | None = None  # the API key (display prefix) that triggered it


# One statement whatever the batch size, so it is prepared once per connection.
_BATCH = """
        CAST(:ids AS uuid[]), CAST(:job_ids AS uuid[]), CAST(:task_names AS text[]),
        CAST(:queues AS text[]), CAST(:arguments AS jsonb[]), CAST(:max_attempts AS integer[]),
        CAST(:user_ids AS uuid[]), CAST(:project_ids AS uuid[]), CAST(:keys AS text[]),
        CAST(:fingerprints AS text[]), CAST(:enqueued_by AS text[]),
        CAST(:created AS timestamptz[])
    ) AS v(id, job_id, task_name, queue, arguments, max_attempts, user_id, project_id,
           idempotency_key, request_fingerprint, enqueued_by, created_at)"""
_INSERT = """
    INSERT INTO background_jobs (id, job_id, task_name, queue, status, arguments, errors,
        attempts, max_attempts, user_id, project_id, idempotency_key, request_fingerprint,
        enqueued_by, created_at, updated_at)
    SELECT v.id, v.job_id, v.task_name, v.queue, 'queued', v.arguments, '[]'::jsonb,
        0, v.max_attempts, v.user_id, v.project_id, v.idempotency_key, v.request_fingerprint,
        v.enqueued_by, v.created_at, v.created_at"""
INSERT_QUEUED = text(f"{_INSERT} FROM unnest({_BATCH} RETURNING job_id")
# A batch with Idempotency-Keys: each key is claimed in `job_idempotency_keys` (a partitioned
# table cannot keep it unique), in the same statement as the rows. ON CONFLICT DO NOTHING:
# of requests with one key, exactly one claims it (also within one batch), and only the
# rows without a key or with a key they claimed are inserted.
INSERT_QUEUED_WITH_KEYS = text(
    f"""
    WITH v AS MATERIALIZED (SELECT * FROM unnest({_BATCH}),
    claimed AS (
        INSERT INTO job_idempotency_keys (idempotency_key, job_id, created_at)
        SELECT idempotency_key, job_id, created_at FROM v WHERE idempotency_key IS NOT NULL
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING job_id
    )
    {_INSERT}
    FROM v WHERE v.idempotency_key IS NULL OR v.job_id IN (SELECT job_id FROM claimed)
    RETURNING job_id
    """  # noqa: S608 - built from this module's constants only
)

# The row an Idempotency-Key already names, read on the outbox's own connection: the
# trigger opens no session (docs/benchmarks.md).
_KEYS = JobIdempotencyKey.__table__
_JOBS = BackgroundJob.__table__
FIRST_WITH_KEY = (
    select(*(_JOBS.c[name] for name in EnqueuedJob.__dataclass_fields__))
    .join_from(
        _KEYS,
        _JOBS,
        (_JOBS.c.job_id == _KEYS.c.job_id) & (_JOBS.c.created_at == _KEYS.c.created_at),
    )
    .where(_KEYS.c.idempotency_key == bindparam("key"))
)


async def insert_rows(execute: Execute, rows: Sequence[EnqueuedJob]) -> set[UUID]:
    """Insert new `queued` rows in one statement; returns the job ids actually inserted."""
    keyed = any(r.idempotency_key is not None for r in rows)
    result = await execute(
        INSERT_QUEUED_WITH_KEYS if keyed else INSERT_QUEUED,
        {
            "ids": [r.id for r in rows],
            "job_ids": [r.job_id for r in rows],
            "task_names": [r.task_name for r in rows],
            "queues": [r.queue for r in rows],
            "arguments": [to_json(r.arguments) for r in rows],
            "max_attempts": [r.max_attempts for r in rows],
            "user_ids": [r.user_id for r in rows],
            "project_ids": [r.project_id for r in rows],
            "keys": [r.idempotency_key for r in rows],
            "fingerprints": [r.request_fingerprint for r in rows],
            "enqueued_by": [r.enqueued_by for r in rows],
            "created": [r.created_at for r in rows],
        },
    )
    return {row[0] for row in result}


# A key whose row is gone (its partition dropped before the key was deleted): free again.
FREE_STALE_KEY = text(
    """
    DELETE FROM job_idempotency_keys AS k WHERE k.idempotency_key = :key
      AND NOT EXISTS (SELECT 1 FROM background_jobs AS b
                      WHERE b.job_id = k.job_id AND b.created_at = k.created_at)
    RETURNING idempotency_key
    """
)
