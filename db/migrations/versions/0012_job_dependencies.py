"""jobs that wait for other jobs: the `waiting` status, job_dependencies, the parents' flag

Revision ID: 0012_job_dependencies
Revises: 0011_queue_pauses
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision: str = "0012_job_dependencies"
down_revision: str | None = "0011_queue_pauses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('queued', 'running', 'complete', 'failed', 'aborted')"
_NEW = "status IN ('waiting', 'queued', 'running', 'complete', 'failed', 'aborted')"
_UNFINISHED_OLD = "status IN ('queued', 'running')"
_UNFINISHED_NEW = "status IN ('waiting', 'queued', 'running')"
# The reconciler's scan of unfinished rows, as 0010_partitioned_jobs made it: made on the
# partitioned table, so that every partition (and each one made later) has it.
_UNFINISHED = "ix_background_jobs_unfinished_updated_at_job_id"


def _status_rules(every_status: str, unfinished: str) -> None:
    # On the partitioned table: the CHECK and the index go to (and from) every partition.
    op.drop_constraint(op.f("ck_background_jobs_status"), "background_jobs", type_="check")
    op.create_check_constraint(op.f("ck_background_jobs_status"), "background_jobs", every_status)
    op.drop_index(_UNFINISHED, table_name="background_jobs")
    op.create_index(
        _UNFINISHED,
        "background_jobs",
        ["updated_at", "job_id"],
        postgresql_where=sa.text(unfinished),
    )


def upgrade() -> None:
    # Both columns have a constant default: adding them to the partitioned table adds them to
    # every partition and rewrites none.
    op.add_column(
        "background_jobs",
        sa.Column("has_dependents", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "background_jobs",
        sa.Column("parents_left", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    _status_rules(_NEW, _UNFINISHED_NEW)
    # Job ids, no foreign keys: background_jobs' primary key may change (partitioning), and a
    # parent deleted by retention must not take its children's record with it.
    op.create_table(
        "job_dependencies",
        sa.Column("parent_id", GUID(length=16), nullable=False),
        sa.Column("child_id", GUID(length=16), nullable=False),
        sa.Column("counted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=op.f("pk_job_dependencies")),
    )
    op.create_index("ix_job_dependencies_child_id", "job_dependencies", ["child_id"])


def downgrade() -> None:
    op.drop_table("job_dependencies")
    op.execute(
        "UPDATE background_jobs SET status = 'aborted', error = 'waiting when dependencies were "
        "removed' WHERE status = 'waiting'"
    )
    _status_rules(_OLD, _UNFINISHED_OLD)
    op.drop_column("background_jobs", "parents_left")
    op.drop_column("background_jobs", "has_dependents")
