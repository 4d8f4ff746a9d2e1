"""job_stats: the ended jobs counted per minute and hour of their creation, and per minute
of their end, by task and project, with their run and wait times' buckets; and
job_stats_pending, where the recorder's statement appends them until a worker compacts them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Filled from the rows of the last 8 days (what the stats' longest window, 7 days, reads),
counted as the recorder's statement counts them (app/jobs/record/counting.py). As for 0009,
stop the API and the workers while it runs: a job that ends meanwhile would not be counted.
"""

from collections.abc import Sequence

from alembic import op

from app.jobs.histogram import RUN_COLUMNS, WAIT_COLUMNS
from app.jobs.record.counting import COMPACT, count_ended

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RECENT = """(
    SELECT task_name, project_id, status, created_at, started_at, completed_at
    FROM background_jobs
    WHERE created_at >= now() - interval '8 days' OR completed_at >= now() - interval '2 hours'
)"""


def upgrade() -> None:
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


def downgrade() -> None:
    op.execute("DROP TABLE job_stats_pending")
    op.execute("DROP TABLE job_stats")
