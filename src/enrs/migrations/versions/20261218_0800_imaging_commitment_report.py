"""imaging: Storage Commitment reports kept and retried until delivered

Revision ID: 20261218_0800
Revises: 20261218_0710
Create Date: 2026-12-18 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261218_0800"
down_revision: str | None = "20261218_0710"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_commitment_report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aet", sa.String(length=16), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_commitment_report")),
    )
    op.create_index(
        "ix_imaging_commitment_report_due",
        "imaging_commitment_report",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_imaging_commitment_report_due", table_name="imaging_commitment_report")
    op.drop_table("imaging_commitment_report")
