"""imaging: teleradiology and second reading (reading groups, their members, reading
requests and their readings)

Revision ID: 20261217_0500
Revises: 20261217_0600
Create Date: 2026-12-17 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261217_0500"
down_revision: str | None = "20261217_0600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "imaging_reading_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_reading_group")),
        sa.UniqueConstraint("name", name=op.f("uq_imaging_reading_group_name")),
    )
    op.create_table(
        "imaging_reading_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("rpps", sa.String(length=11), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["imaging_reading_group.id"],
            name=op.f("fk_imaging_reading_member_group_id_imaging_reading_group"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_reading_member")),
        sa.UniqueConstraint("group_id", "rpps", name=op.f("uq_imaging_reading_member_group_id")),
    )
    with op.batch_alter_table("imaging_reading_member", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_member_group_id"), ["group_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_imaging_reading_member_rpps"), ["rpps"], unique=False)

    op.create_table(
        "imaging_reading_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("requesting_finess", sa.String(length=9), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("document_id", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["imaging_reading_group.id"],
            name=op.f("fk_imaging_reading_request_group_id_imaging_reading_group"),
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["imaging_study.id"],
            name=op.f("fk_imaging_reading_request_study_id_imaging_study"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_reading_request")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_imaging_reading_request_resource_id")),
    )
    with op.batch_alter_table("imaging_reading_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_due_at"), ["due_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_group_id"), ["group_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_requesting_finess"),
            ["requesting_finess"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_state"), ["state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_study_id"), ["study_id"], unique=False
        )

    op.create_table(
        "imaging_reading",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("reader_rpps", sa.String(length=11), nullable=True),
        sa.Column("reader_name", sa.String(length=256), nullable=True),
        sa.Column("claimed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("signed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("conclusion", sa.Text(), nullable=True),
        sa.Column("assessment", sa.String(length=2), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["imaging_reading_request.id"],
            name=op.f("fk_imaging_reading_request_id_imaging_reading_request"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_reading")),
        sa.UniqueConstraint("request_id", "step", name=op.f("uq_imaging_reading_request_id")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_imaging_reading_resource_id")),
    )
    with op.batch_alter_table("imaging_reading", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_reader_rpps"), ["reader_rpps"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_imaging_reading_request_id"), ["request_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_imaging_reading_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("imaging_reading", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_reading_state"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_reader_rpps"))

    op.drop_table("imaging_reading")
    with op.batch_alter_table("imaging_reading_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_study_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_state"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_requesting_finess"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_patient_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_group_id"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_request_due_at"))

    op.drop_table("imaging_reading_request")
    with op.batch_alter_table("imaging_reading_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_imaging_reading_member_rpps"))
        batch_op.drop_index(batch_op.f("ix_imaging_reading_member_group_id"))

    op.drop_table("imaging_reading_member")
    op.drop_table("imaging_reading_group")
