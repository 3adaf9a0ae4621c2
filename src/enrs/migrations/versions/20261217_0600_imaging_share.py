"""imaging: access codes to a study, their browser sessions and the codes typed

Revision ID: 20261217_0600
Revises: 20261217_0200
Create Date: 2026-12-17 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261217_0600"
down_revision: str | None = "20261217_0200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_share",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.Column("created_by_name", sa.String(length=255), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=160), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["imaging_study.id"], name=op.f("fk_imaging_share_study_id_imaging_study")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_share")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_imaging_share_code_hash")),
    )
    with op.batch_alter_table("imaging_share", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_imaging_share_study_id"), ["study_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_imaging_share_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "imaging_share_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["imaging_share.id"],
            name=op.f("fk_imaging_share_session_share_id_imaging_share"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_share_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_imaging_share_session_token_hash")),
    )
    with op.batch_alter_table("imaging_share_session", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_share_session_share_id"), ["share_id"], unique=False
        )
    op.create_table(
        "imaging_share_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_share_attempt")),
    )
    with op.batch_alter_table("imaging_share_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_imaging_share_attempt_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_imaging_share_attempt_source_ip"), ["source_ip"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("imaging_share_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_share_attempt_source_ip"))
        batch_op.drop_index(batch_op.f("ix_imaging_share_attempt_at"))
    op.drop_table("imaging_share_attempt")
    with op.batch_alter_table("imaging_share_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_share_session_share_id"))
    op.drop_table("imaging_share_session")
    with op.batch_alter_table("imaging_share", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_share_expires_at"))
        batch_op.drop_index(batch_op.f("ix_imaging_share_study_id"))
    op.drop_table("imaging_share")
