"""rows for jobs the outbox did not make: SAQ's key, the cron schedule, the scheduled time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites nothing, existing rows are the outbox's.
    op.add_column("background_jobs", sa.Column("job_key", sa.Text(), nullable=True))
    op.add_column("background_jobs", sa.Column("cron", sa.Text(), nullable=True))
    op.add_column(
        "background_jobs", sa.Column("scheduled_at", DateTimeUTC(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("background_jobs", "scheduled_at")
    op.drop_column("background_jobs", "cron")
    op.drop_column("background_jobs", "job_key")
