"""imaging: the reports and KOS manifests of a study filed in the document repository

Revision ID: 20261218_0710
Revises: 20261217_0500
Create Date: 2026-12-18 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261218_0710"
down_revision: str | None = "20261217_0500"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_study_document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("document_id", sa.String(length=64), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["imaging_study.id"],
            name=op.f("fk_imaging_study_document_study_id_imaging_study"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_study_document")),
        sa.UniqueConstraint(
            "sop_instance_uid", name=op.f("uq_imaging_study_document_sop_instance_uid")
        ),
    )
    op.create_index(
        op.f("ix_imaging_study_document_study_id"),
        "imaging_study_document",
        ["study_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_imaging_study_document_status"), "imaging_study_document", ["status"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_imaging_study_document_status"), table_name="imaging_study_document")
    op.drop_index(op.f("ix_imaging_study_document_study_id"), table_name="imaging_study_document")
    op.drop_table("imaging_study_document")
