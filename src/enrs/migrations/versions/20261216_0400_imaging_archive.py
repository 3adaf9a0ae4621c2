"""imaging: the DICOM archive's peers (AEs allowed to associate) and its index of the
studies, series and instances received

Revision ID: 20261216_0400
Revises: 20261215_1400
Create Date: 2026-12-16 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261216_0400"
down_revision: str | None = "20261215_1400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_peer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aet", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("may_store", sa.Boolean(), nullable=False),
        sa.Column("may_retrieve", sa.Boolean(), nullable=False),
        sa.Column("authority", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_peer")),
        sa.UniqueConstraint("aet", name=op.f("uq_imaging_peer_aet")),
    )
    op.create_table(
        "imaging_study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("patient_status", sa.String(length=16), nullable=False),
        sa.Column("patient_note", sa.Text(), nullable=True),
        sa.Column("source_patient_id", sa.String(length=64), nullable=True),
        sa.Column("source_issuer", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=324), nullable=True),
        sa.Column("patient_birth_date", sa.Date(), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=16), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("sending_aet", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_study")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_imaging_study_study_uid")),
    )
    with op.batch_alter_table("imaging_study", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_study_accession_number"), ["accession_number"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_study_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_study_patient_status"), ["patient_status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_study_study_date"), ["study_date"], unique=False
        )

    op.create_table(
        "imaging_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["imaging_study.id"],
            name=op.f("fk_imaging_series_study_id_imaging_study"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_series")),
        sa.UniqueConstraint("series_uid", name=op.f("uq_imaging_series_series_uid")),
    )
    with op.batch_alter_table("imaging_series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_imaging_series_modality"), ["modality"], unique=False)
        batch_op.create_index(batch_op.f("ix_imaging_series_study_id"), ["study_id"], unique=False)

    op.create_table(
        "imaging_instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_key", sa.String(length=256), nullable=False),
        sa.Column("sending_aet", sa.String(length=16), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["imaging_series.id"],
            name=op.f("fk_imaging_instance_series_id_imaging_series"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_instance")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_imaging_instance_sop_instance_uid")),
    )
    with op.batch_alter_table("imaging_instance", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_instance_series_id"), ["series_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("imaging_instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_instance_series_id"))

    op.drop_table("imaging_instance")
    with op.batch_alter_table("imaging_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_series_study_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_series_modality"))

    op.drop_table("imaging_series")
    with op.batch_alter_table("imaging_study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_study_study_date"))
        batch_op.drop_index(batch_op.f("ix_imaging_study_patient_status"))
        batch_op.drop_index(batch_op.f("ix_imaging_study_patient_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_study_accession_number"))

    op.drop_table("imaging_study")
    op.drop_table("imaging_peer")
