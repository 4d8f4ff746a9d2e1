"""indexes for job lists filtered by user or project and status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_background_jobs_user_id_status_created_at",
        "background_jobs",
        ["user_id", "status", "created_at"],
    )
    op.create_index(
        "ix_background_jobs_project_id_status_created_at",
        "background_jobs",
        ["project_id", "status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_background_jobs_project_id_status_created_at", table_name="background_jobs")
    op.drop_index("ix_background_jobs_user_id_status_created_at", table_name="background_jobs")
