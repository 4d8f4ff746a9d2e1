"""create background_jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "background_jobs",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("job_id", GUID(length=16), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("arguments", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=True),
        sa.Column("project_id", GUID(length=16), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("completed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'complete', 'failed', 'aborted')",
            name=op.f("ck_background_jobs_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_background_jobs_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_background_jobs")),
        sa.UniqueConstraint("job_id", name=op.f("uq_background_jobs_job_id")),
    )  # fmt: skip
    op.create_index("ix_background_jobs_created_at", "background_jobs", ["created_at"])
    op.create_index(
        "ix_background_jobs_status_created_at", "background_jobs", ["status", "created_at"]
    )
    op.create_index(
        "ix_background_jobs_user_id_created_at", "background_jobs", ["user_id", "created_at"]
    )
    op.create_index(
        "ix_background_jobs_project_id_created_at", "background_jobs", ["project_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("background_jobs")
