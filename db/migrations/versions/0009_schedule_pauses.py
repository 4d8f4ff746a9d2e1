"""the cron schedules an operator paused: who paused each and when

Revision ID: 0009_schedule_pauses
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0009_schedule_pauses"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule_pauses",
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("paused_by", sa.String(length=200), nullable=False),
        sa.Column("paused_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queue", "name", name=op.f("pk_schedule_pauses")),
    )


def downgrade() -> None:
    op.drop_table("schedule_pauses")
