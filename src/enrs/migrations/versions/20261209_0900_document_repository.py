"""document repository: document entries and submission sets (MHD), the patients'
oppositions, the accesses professionals declare (with a reason or in an emergency)

Revision ID: 20261209_0900
Revises: 20261208_1000
Create Date: 2026-12-09 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261209_0900"
down_revision: str | None = "20261208_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the documents of a patient merged into another are found through the survivor
    with op.batch_alter_table("identity_patient", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_patient_merged_into_id"), ["merged_into_id"], unique=False
        )
    op.create_table(
        "document_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("reader", sa.String(length=256), nullable=False),
        sa.Column("reader_name", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reviewed_by", sa.String(length=256), nullable=True),
        sa.Column("reviewed_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_access")),
    )
    with op.batch_alter_table("document_access", schema=None) as batch_op:
        batch_op.create_index(
            "ix_document_access_patient_reader", ["patient_id", "reader"], unique=False
        )

    op.create_table(
        "document_submission_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("unique_id", sa.String(length=128), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("date", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitter", sa.String(length=256), nullable=False),
        sa.Column("submitter_finess", sa.String(length=16), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_submission_set")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_document_submission_set_resource_id")),
        sa.UniqueConstraint("unique_id", name=op.f("uq_document_submission_set_unique_id")),
    )
    with op.batch_alter_table("document_submission_set", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_document_submission_set_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "document_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("unique_id", sa.String(length=128), nullable=False),
        sa.Column("submission_set_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("source_patient", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("type_system", sa.String(length=128), nullable=False),
        sa.Column("type_code", sa.String(length=64), nullable=False),
        sa.Column("class_system", sa.String(length=128), nullable=False),
        sa.Column("class_code", sa.String(length=64), nullable=False),
        sa.Column("facility_type", sa.String(length=64), nullable=True),
        sa.Column("practice_setting", sa.String(length=64), nullable=True),
        sa.Column("format_code", sa.String(length=128), nullable=True),
        sa.Column("confidentiality", sa.String(length=16), nullable=False),
        sa.Column("visibility", sa.String(length=96), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=True),
        sa.Column("date", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_start", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_end", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("author_rpps", sa.String(length=16), nullable=True),
        sa.Column("author_reference", sa.String(length=256), nullable=True),
        sa.Column("structure_finess", sa.String(length=16), nullable=True),
        sa.Column("mime_type", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha1", sa.String(length=40), nullable=False),
        sa.Column("blob_key", sa.String(length=256), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("replaces_id", sa.Integer(), nullable=True),
        sa.Column("opposed", sa.Boolean(), nullable=False),
        sa.Column("submitter", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["replaces_id"],
            ["document_entry.id"],
            name=op.f("fk_document_entry_replaces_id_document_entry"),
        ),
        sa.ForeignKeyConstraint(
            ["submission_set_id"],
            ["document_submission_set.id"],
            name=op.f("fk_document_entry_submission_set_id_document_submission_set"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_entry")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_document_entry_resource_id")),
        sa.UniqueConstraint("unique_id", name=op.f("uq_document_entry_unique_id")),
    )
    with op.batch_alter_table("document_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_document_entry_patient_date", ["patient_id", "date"], unique=False
        )
        batch_op.create_index(
            "ix_document_entry_submission_set", ["submission_set_id"], unique=False
        )

    op.create_table(
        "document_opposition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("recorded_by", sa.String(length=256), nullable=False),
        sa.Column("recorded_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(length=256), nullable=True),
        sa.Column("lifted_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["document_entry.id"],
            name=op.f("fk_document_opposition_document_id_document_entry"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_opposition")),
    )
    with op.batch_alter_table("document_opposition", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_document_opposition_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "document_dmp_export",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["document_entry.id"],
            name=op.f("fk_document_dmp_export_document_id_document_entry"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_dmp_export")),
        sa.UniqueConstraint("document_id", name=op.f("uq_document_dmp_export_document_id")),
    )
    with op.batch_alter_table("document_dmp_export", schema=None) as batch_op:
        batch_op.create_index(
            "ix_document_dmp_export_due", ["status", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("document_dmp_export")
    with op.batch_alter_table("document_opposition", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_opposition_patient_id"))

    op.drop_table("document_opposition")
    with op.batch_alter_table("document_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_document_entry_submission_set")
        batch_op.drop_index("ix_document_entry_patient_date")

    op.drop_table("document_entry")
    with op.batch_alter_table("document_submission_set", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_submission_set_patient_id"))

    op.drop_table("document_submission_set")
    with op.batch_alter_table("document_access", schema=None) as batch_op:
        batch_op.drop_index("ix_document_access_patient_reader")

    op.drop_table("document_access")
    with op.batch_alter_table("identity_patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_patient_merged_into_id"))
