"""an index of ended jobs by their last change, for the retention's deletes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Retention deletes the oldest ended rows first, a batch at a time.
    op.create_index(
        "ix_background_jobs_ended_updated_at",
        "background_jobs",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('complete', 'failed', 'aborted')"),
    )


def downgrade() -> None:
    op.drop_index("ix_background_jobs_ended_updated_at", table_name="background_jobs")
