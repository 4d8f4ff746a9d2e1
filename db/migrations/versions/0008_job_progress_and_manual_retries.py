"""a running job's progress and message; how many times an operator retried a job

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "background_jobs"


def upgrade() -> None:
    # A constant default: no table rewrite, whatever the table holds.
    op.add_column(
        _TABLE,
        sa.Column("manual_retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(_TABLE, sa.Column("progress", sa.Float(), nullable=True))
    op.add_column(_TABLE, sa.Column("progress_message", sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column(_TABLE, "progress_message")
    op.drop_column(_TABLE, "progress")
    op.drop_column(_TABLE, "manual_retries")
