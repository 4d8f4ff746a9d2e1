"""indexes for the job list's keyset pages: each filter's column, then (created_at, id)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "background_jobs"
# The list's equality filters; each index ends with the list's order (created_at, id).
_LISTED_BY = ("status", "task_name", "queue", "user_id", "project_id", "worker_id")
# What they replace: ordered by created_at alone, or a column pair that the new indexes
# serve with a filter on the index scan.
_REPLACED = {
    "ix_background_jobs_created_at": ["created_at"],
    "ix_background_jobs_status_created_at": ["status", "created_at"],
    "ix_background_jobs_user_id_created_at": ["user_id", "created_at"],
    "ix_background_jobs_project_id_created_at": ["project_id", "created_at"],
    "ix_background_jobs_user_id_status_created_at": ["user_id", "status", "created_at"],
    "ix_background_jobs_project_id_status_created_at": ["project_id", "status", "created_at"],
}


def upgrade() -> None:
    # Built concurrently: a table of millions of rows keeps taking writes meanwhile.
    with op.get_context().autocommit_block():
        for column in _LISTED_BY:
            op.create_index(
                f"ix_background_jobs_{column}_created_at_id",
                _TABLE,
                [column, "created_at", "id"],
                postgresql_concurrently=True,
            )
        op.create_index(
            "ix_background_jobs_created_at_id",
            _TABLE,
            ["created_at", "id"],
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_background_jobs_with_error_created_at_id",
            _TABLE,
            ["created_at", "id"],
            postgresql_where=sa.text("error IS NOT NULL"),
            postgresql_concurrently=True,
        )
        for name in _REPLACED:
            op.drop_index(name, table_name=_TABLE, postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in _REPLACED.items():
            op.create_index(name, _TABLE, columns, postgresql_concurrently=True)
        op.drop_index(
            "ix_background_jobs_with_error_created_at_id",
            table_name=_TABLE,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_background_jobs_created_at_id", table_name=_TABLE, postgresql_concurrently=True
        )
        for column in _LISTED_BY:
            op.drop_index(
                f"ix_background_jobs_{column}_created_at_id",
                table_name=_TABLE,
                postgresql_concurrently=True,
            )
