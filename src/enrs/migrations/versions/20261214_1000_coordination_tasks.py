"""coordination: tasks of the care circles

Revision ID: 20261214_1000
Revises: 20261214_0900
Create Date: 2026-12-14 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261214_1000"
down_revision: str | None = "20261214_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("owner_kind", sa.String(length=16), nullable=False),
        sa.Column("owner_rpps", sa.String(length=16), nullable=True),
        sa.Column("owner_finess", sa.String(length=16), nullable=True),
        sa.Column("owner_role", sa.String(length=128), nullable=True),
        sa.Column("owner_display", sa.String(length=256), nullable=False),
        sa.Column("requester_key", sa.String(length=256), nullable=False),
        sa.Column("requester_display", sa.String(length=256), nullable=False),
        sa.Column("due_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_task_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_task")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_task_resource_id")),
    )
    with op.batch_alter_table("coordination_task", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_task_owner_finess"), ["owner_finess"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_task_owner_rpps"), ["owner_rpps"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_task_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_coordination_task_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coordination_task", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_task_team_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_task_patient_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_task_owner_rpps"))
        batch_op.drop_index(batch_op.f("ix_coordination_task_owner_finess"))

    op.drop_table("coordination_task")
