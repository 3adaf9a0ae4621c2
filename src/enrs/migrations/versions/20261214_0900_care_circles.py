"""coordination: care circles, members and consents

Revision ID: 20261214_0900
Revises: 20261213_1000
Create Date: 2026-12-14 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261214_0900"
down_revision: str | None = "20261213_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_care_team",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_care_team")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_care_team_resource_id")),
    )
    with op.batch_alter_table("coordination_care_team", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_care_team_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "coordination_consent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=True),
        sa.Column("finess", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("recorded_by", sa.String(length=256), nullable=False),
        sa.Column("recorded_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_consent_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_consent")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_consent_resource_id")),
    )
    with op.batch_alter_table("coordination_consent", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_consent_team_id"), ["team_id"], unique=False
        )

    op.create_table(
        "coordination_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=True),
        sa.Column("finess", sa.String(length=16), nullable=True),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("period_start", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_end", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("added_by", sa.String(length=256), nullable=False),
        sa.Column("joined_by", sa.String(length=16), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_member_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_member")),
    )
    with op.batch_alter_table("coordination_member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coordination_member_finess"), ["finess"], unique=False)
        batch_op.create_index(batch_op.f("ix_coordination_member_rpps"), ["rpps"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_coordination_member_team_id"), ["team_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("coordination_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_member_team_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_member_rpps"))
        batch_op.drop_index(batch_op.f("ix_coordination_member_finess"))

    op.drop_table("coordination_member")
    with op.batch_alter_table("coordination_consent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_consent_team_id"))

    op.drop_table("coordination_consent")
    with op.batch_alter_table("coordination_care_team", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_care_team_patient_id"))

    op.drop_table("coordination_care_team")
