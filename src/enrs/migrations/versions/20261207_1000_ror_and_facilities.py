"""ror and facilities: each structure's units (Location) with their capacity and its offers
of care (HealthcareService); the member facility (FINESS) owning each identity domain,
system client and MLLP sender

Revision ID: 20261207_1000
Revises: 20261207_0900
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261207_1000"
down_revision: str | None = "20261207_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNED = ("identity_domain", "account_client", "account_mllp_sender")


def upgrade() -> None:
    op.create_table(
        "directory_unit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("structure_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(), nullable=False),
        sa.Column("capacity_updated_at", enrs.kit.db.UTCDateTime(), nullable=True),
        sa.Column("capacity_updated_by", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(
            ["structure_id"],
            ["directory_structure.id"],
            name=op.f("fk_directory_unit_structure_id_directory_structure"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_unit")),
    )
    with op.batch_alter_table("directory_unit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_unit_structure_id"), ["structure_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_directory_unit_updated_at"), ["updated_at"], unique=False
        )
    op.create_table(
        "directory_capacity",
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("nature", sa.String(length=4), nullable=False),
        sa.Column("status", sa.String(length=4), nullable=False),
        sa.Column("gender", sa.String(length=4), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["directory_unit.id"],
            name=op.f("fk_directory_capacity_unit_id_directory_unit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "unit_id", "nature", "status", "gender", name=op.f("pk_directory_capacity")
        ),
    )
    op.create_table(
        "directory_service",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("structure_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("field_code", sa.String(length=8), nullable=False),
        sa.Column("field", sa.String(length=256), nullable=False),
        sa.Column("activity_code", sa.String(length=16), nullable=False),
        sa.Column("activity", sa.String(length=256), nullable=False),
        sa.Column("care_mode_code", sa.String(length=8), nullable=False),
        sa.Column("care_mode", sa.String(length=256), nullable=False),
        sa.Column("age_low", sa.Integer(), nullable=True),
        sa.Column("age_high", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["structure_id"],
            ["directory_structure.id"],
            name=op.f("fk_directory_service_structure_id_directory_structure"),
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["directory_unit.id"],
            name=op.f("fk_directory_service_unit_id_directory_unit"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_service")),
    )
    with op.batch_alter_table("directory_service", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_service_activity_code"), ["activity_code"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_directory_service_structure_id"), ["structure_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_directory_service_unit_id"), ["unit_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_directory_service_updated_at"), ["updated_at"], unique=False
        )
    for table in _OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("finess", sa.String(length=16), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_finess"), ["finess"], unique=False)


def downgrade() -> None:
    for table in _OWNED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_finess"))
            batch_op.drop_column("finess")
    op.drop_table("directory_service")
    op.drop_table("directory_capacity")
    op.drop_table("directory_unit")
