"""imaging: the history of the identitovigilance cell's corrections of studies

Revision ID: 20261217_0300
Revises: 20261217_0400
Create Date: 2026-12-17 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261217_0300"
down_revision: str | None = "20261217_0400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_study_correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("corrected_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("patient_before", sa.Integer(), nullable=True),
        sa.Column("patient_after", sa.Integer(), nullable=True),
        sa.Column("source_patient_id_before", sa.String(length=64), nullable=True),
        sa.Column("source_patient_id_after", sa.String(length=64), nullable=True),
        sa.Column("source_issuer_before", sa.String(length=64), nullable=True),
        sa.Column("source_issuer_after", sa.String(length=64), nullable=True),
        sa.Column("accession_before", sa.String(length=16), nullable=True),
        sa.Column("accession_after", sa.String(length=16), nullable=True),
        sa.Column("status_before", sa.String(length=16), nullable=False),
        sa.Column("status_after", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["imaging_study.id"],
            name=op.f("fk_imaging_study_correction_study_id_imaging_study"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_study_correction")),
    )
    with op.batch_alter_table("imaging_study_correction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_study_correction_study_id"), ["study_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("imaging_study_correction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_study_correction_study_id"))
    op.drop_table("imaging_study_correction")
