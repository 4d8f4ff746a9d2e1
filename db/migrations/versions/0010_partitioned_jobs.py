"""background_jobs partitioned by created_at; job ids that carry their creation time; the
idempotency keys in a table of their own; job_stats, the ended jobs counted per minute

Revision ID: 0010_partitioned_jobs
Revises: 0009_schedule_pauses
Create Date: 2026-12-07

The existing table becomes the first partition (`background_jobs_legacy`, every row created
before the cutoff: the first partition boundary at least an hour from now) without being
copied: its new unique indexes are built concurrently first, its range is checked by a
validated CHECK, and the swap itself changes only the catalog. Writers must be stopped while
it runs (docs/scaling.md "Migrating an existing table"): the old code's statements do not
fit the new table. The partitions after the cutoff are made here and then, ahead of time, by
the workers (app/ops/partitions.py); retention drops them whole.

Partition width: JOB_PARTITION_MINUTES (default 1440), as the app reads it.

job_stats is filled from the rows of the last 8 days (what the stats' longest window, 7 days,
reads), counted as the recorder's statement counts them (app/jobs/record/counting.py); a job
that ended while this ran would not be counted: one more reason to stop the writers.
"""

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import op

from app.jobs.histogram import RUN_COLUMNS, WAIT_COLUMNS
from app.jobs.record.counting import COMPACT, count_ended

revision: str = "0010_partitioned_jobs"
down_revision: str | None = "0009_schedule_pauses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "background_jobs"
_LEGACY = "background_jobs_legacy"
# The table's indexes that keep their definition: renamed on the old table, then made again
# on the partitioned one, where each attaches the old table's index instead of building one.
_ENDED = "status IN ('complete', 'failed', 'aborted')"
_UNFINISHED_WHERE = "status IN ('queued', 'running')"
_INDEXES = {
    **{
        f"ix_background_jobs_{column}_created_at_id": f"({column}, created_at, id)"
        for column in ("status", "task_name", "queue", "user_id", "project_id", "worker_id")
    },
    "ix_background_jobs_created_at_id": "(created_at, id)",
    "ix_background_jobs_with_error_created_at_id": "(created_at, id) WHERE error IS NOT NULL",
    "ix_background_jobs_ended_updated_at": f"(updated_at) WHERE {_ENDED}",
}
# The reconciler's unfinished rows, now also ordered by job_id (its pages' order): no sort
# over the partitions' scans. Built on the old table before the swap; replaces (updated_at).
_UNFINISHED = "ix_background_jobs_unfinished_updated_at_job_id"
_UNFINISHED_BEFORE = "ix_background_jobs_unfinished_updated_at"
_NEW_INDEXES = {**_INDEXES, _UNFINISHED: f"(updated_at, job_id) WHERE {_UNFINISHED_WHERE}"}

# The created_at a job id spells (app/jobs/ids.py), NULL for an id that spells none: bytes
# 7-8 hold the version (7) and the microseconds within the millisecond (< 1000), bytes 1-6
# the milliseconds. One expression, so that PostgreSQL inlines it (it runs in the CHECK of
# every insert: about a microsecond).
_HEAD = "('x' || encode(substring(uuid_send(job_id) FROM 7 FOR 2), 'hex'))::bit(16)::int4"
_MILLIS = "('x' || encode(substring(uuid_send(job_id) FROM 1 FOR 6), 'hex'))::bit(48)::int8"
JOB_ID_CREATED_AT = f"""
CREATE OR REPLACE FUNCTION job_id_created_at(job_id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN {_HEAD} >> 12 = 7 AND {_HEAD} & 4095 < 1000
        THEN to_timestamp(({_MILLIS} * 1000 + ({_HEAD} & 4095))::float8 / 1000000) END
$$
"""
CHECK_JOB_ID = "coalesce(job_id_created_at(job_id) = created_at, true)"


def _width_seconds() -> int:
    return int(os.environ.get("JOB_PARTITION_MINUTES") or 1440) * 60


def _scalar(sql: str) -> Any:
    return op.get_bind().exec_driver_sql(sql).scalar_one()


def _legacy_name(index: str) -> str:
    return index.replace("ix_background_jobs_", f"{_LEGACY}_")


def _partition() -> None:
    op.execute(JOB_ID_CREATED_AT)
    width = _width_seconds()
    # The first boundary at least an hour away: rows written until the swap still fit.
    newest = f"greatest(now(), (SELECT max(created_at) FROM {_TABLE})) + interval '1 hour'"  # noqa: S608
    cutoff = _scalar(
        f"SELECT to_timestamp(ceil(extract(epoch FROM {newest}) / {width}) * {width})"  # noqa: S608
    )
    # The heavy part, without blocking writes: the old table's unique indexes with the
    # partition key, and proof that each row is inside the first partition's range and
    # satisfies the job id CHECK (so that attaching it scans nothing).
    with op.get_context().autocommit_block():
        for name, columns in (("id", "id, created_at"), ("job_id", "job_id, created_at")):
            index = f"{_TABLE}_legacy_{name}_created_at"
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")  # a failed earlier run's
            op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {_TABLE} ({columns})")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_legacy_name(_UNFINISHED)}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {_legacy_name(_UNFINISHED)} ON {_TABLE} "
            f"{_NEW_INDEXES[_UNFINISHED]}"
        )
        for name, check in (
            ("ck_background_jobs_legacy_range", f"created_at < '{cutoff.isoformat()}'"),
            ("ck_background_jobs_job_id_created_at", CHECK_JOB_ID),
        ):
            op.execute(f"ALTER TABLE {_TABLE} DROP CONSTRAINT IF EXISTS {name}")
            op.execute(f"ALTER TABLE {_TABLE} ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")
            op.execute(f"ALTER TABLE {_TABLE} VALIDATE CONSTRAINT {name}")
    op.execute(f"LOCK TABLE {_TABLE} IN ACCESS EXCLUSIVE MODE")
    op.execute(
        """
        CREATE TABLE job_idempotency_keys (
            idempotency_key varchar(255) NOT NULL,
            job_id uuid NOT NULL,
            created_at timestamptz NOT NULL,
            CONSTRAINT pk_job_idempotency_keys PRIMARY KEY (idempotency_key)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_job_idempotency_keys_created_at ON job_idempotency_keys (created_at)"
    )
    op.execute(
        f"""
        INSERT INTO job_idempotency_keys (idempotency_key, job_id, created_at)
        SELECT idempotency_key, job_id, created_at FROM {_TABLE} WHERE idempotency_key IS NOT NULL
        """  # noqa: S608 - constants only
    )
    op.execute(f"ALTER TABLE {_TABLE} RENAME TO {_LEGACY}")
    for index in _INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {_legacy_name(index)}")
    op.execute(f"DROP INDEX {_UNFINISHED_BEFORE}")
    op.execute(
        f"""
        ALTER TABLE {_LEGACY}
            DROP CONSTRAINT pk_background_jobs,
            DROP CONSTRAINT uq_background_jobs_idempotency_key,
            ADD CONSTRAINT {_LEGACY}_pkey PRIMARY KEY USING INDEX {_TABLE}_legacy_id_created_at,
            ADD CONSTRAINT {_LEGACY}_job_id_created_at_key
                UNIQUE USING INDEX {_TABLE}_legacy_job_id_created_at
        """
    )
    # Its ids spell no time, so (job_id, created_at) alone would not keep them unique: the
    # partition keeps its own unique index on job_id (a row reported late lands here again).
    op.execute(
        f"ALTER TABLE {_LEGACY} RENAME CONSTRAINT uq_background_jobs_job_id TO {_LEGACY}_job_id_key"
    )
    # The same columns in the same order, the defaults, and the CHECKs by name (attaching
    # a table needs each of the parent's).
    op.execute(
        f"CREATE TABLE {_TABLE} (LIKE {_LEGACY} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (created_at)"
    )
    op.execute(f"ALTER TABLE {_TABLE} DROP CONSTRAINT ck_background_jobs_legacy_range")
    op.execute(
        f"""
        ALTER TABLE {_TABLE}
            ADD CONSTRAINT pk_background_jobs PRIMARY KEY (id, created_at),
            ADD CONSTRAINT uq_background_jobs_job_id_created_at UNIQUE (job_id, created_at)
        """
    )
    # Each finds the old table's index of the same definition and attaches it.
    for index, definition in _NEW_INDEXES.items():
        op.execute(f"CREATE INDEX {index} ON {_TABLE} {definition}")
    op.execute(
        f"ALTER TABLE {_TABLE} ATTACH PARTITION {_LEGACY} "
        f"FOR VALUES FROM (MINVALUE) TO ('{cutoff.isoformat()}')"
    )
    op.execute(f"ALTER TABLE {_LEGACY} DROP CONSTRAINT ck_background_jobs_legacy_range")
    # Then the partitions up to JOB_PARTITIONS_AHEAD widths past now, as the workers make them.
    ahead = int(os.environ.get("JOB_PARTITIONS_AHEAD") or 3)
    now = _scalar("SELECT now()")
    until = datetime.fromtimestamp((now.timestamp() // width + ahead + 1) * width, UTC)
    start = cutoff
    while start < until:
        end = start + timedelta(seconds=width)
        op.execute(
            f"CREATE TABLE background_jobs_p{start.astimezone(UTC):%Y%m%d_%H%M} PARTITION OF "
            f"{_TABLE} FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        start = end


def _unpartition() -> None:
    # One table again: a copy of every row, as slow as the table is big.
    op.execute(f"ALTER TABLE {_TABLE} RENAME TO background_jobs_partitioned")
    for index in [*_NEW_INDEXES, "pk_background_jobs", "uq_background_jobs_job_id_created_at"]:
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_partitioned")
    op.execute(f"CREATE TABLE {_TABLE} (LIKE background_jobs_partitioned INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {_TABLE} SELECT * FROM background_jobs_partitioned")  # noqa: S608
    op.execute(
        f"""
        ALTER TABLE {_TABLE}
            ADD CONSTRAINT pk_background_jobs PRIMARY KEY (id),
            ADD CONSTRAINT uq_background_jobs_job_id UNIQUE (job_id),
            ADD CONSTRAINT uq_background_jobs_idempotency_key UNIQUE (idempotency_key),
            ADD CONSTRAINT ck_background_jobs_status
                CHECK (status IN ('queued', 'running', 'complete', 'failed', 'aborted')),
            ADD CONSTRAINT ck_background_jobs_attempts CHECK (attempts >= 0)
        """
    )
    for index, definition in _INDEXES.items():
        op.execute(f"CREATE INDEX {index} ON {_TABLE} {definition}")
    op.execute(
        f"CREATE INDEX {_UNFINISHED_BEFORE} ON {_TABLE} (updated_at) WHERE {_UNFINISHED_WHERE}"
    )
    op.execute("DROP TABLE background_jobs_partitioned")
    op.execute("DROP TABLE job_idempotency_keys")
    op.execute("DROP FUNCTION job_id_created_at(uuid)")


_RECENT = """(
    SELECT task_name, project_id, status, created_at, started_at, completed_at
    FROM background_jobs
    WHERE created_at >= now() - interval '8 days' OR completed_at >= now() - interval '2 hours'
)"""


def _count() -> None:
    buckets = ", ".join(f"{column} integer" for column in (*RUN_COLUMNS, *WAIT_COLUMNS))
    op.execute(
        f"""
        CREATE TABLE job_stats (
            kind varchar(8) NOT NULL,
            project_id uuid NOT NULL,
            at timestamptz NOT NULL,
            task_name varchar(200) NOT NULL,
            complete bigint DEFAULT 0 NOT NULL,
            failed bigint DEFAULT 0 NOT NULL,
            aborted bigint DEFAULT 0 NOT NULL,
            {buckets},
            CONSTRAINT pk_job_stats PRIMARY KEY (kind, project_id, at, task_name)
        ) WITH (fillfactor = 70)
        """
    )
    op.execute(
        """
        CREATE TABLE job_stats_pending (
            kind varchar(8) NOT NULL,
            project_id uuid NOT NULL,
            at timestamptz NOT NULL,
            task_name varchar(200) NOT NULL,
            status varchar(16) NOT NULL,
            run smallint,
            wait smallint,
            n integer NOT NULL
        )
        """
    )
    op.execute(count_ended(_RECENT))
    op.execute(COMPACT)


def _uncount() -> None:
    op.execute("DROP TABLE job_stats_pending")
    op.execute("DROP TABLE job_stats")


def upgrade() -> None:
    _partition()
    _count()


def downgrade() -> None:
    _uncount()
    _unpartition()
