"""idempotency key on background_jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "background_jobs", sa.Column("idempotency_key", sa.String(length=255), nullable=True)
    )
    op.add_column(
        "background_jobs", sa.Column("request_fingerprint", sa.String(length=64), nullable=True)
    )
    op.create_unique_constraint(
        op.f("uq_background_jobs_idempotency_key"), "background_jobs", ["idempotency_key"]
    )
    # The reconciler walks unfinished rows, least recently changed first.
    op.create_index(
        "ix_background_jobs_unfinished_updated_at",
        "background_jobs",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_background_jobs_unfinished_updated_at", table_name="background_jobs")
    op.drop_constraint(
        op.f("uq_background_jobs_idempotency_key"), "background_jobs", type_="unique"
    )
    op.drop_column("background_jobs", "request_fingerprint")
    op.drop_column("background_jobs", "idempotency_key")
