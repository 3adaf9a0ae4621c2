"""coordination: a care plan's activity names the appointment an applied pathway proposed

Revision ID: 20261219_0900
Revises: 20261218_0800
Create Date: 2026-12-19 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261219_0900"
down_revision: str | None = "20261218_0800"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordination_plan_activity") as batch:
        batch.add_column(sa.Column("appointment_id", sa.Integer(), nullable=True))
        batch.create_index(
            batch.f("ix_coordination_plan_activity_appointment_id"), ["appointment_id"]
        )
        batch.create_foreign_key(
            batch.f("fk_coordination_plan_activity_appointment_id_coordination_appointment"),
            "coordination_appointment",
            ["appointment_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("coordination_plan_activity") as batch:
        batch.drop_constraint(
            batch.f("fk_coordination_plan_activity_appointment_id_coordination_appointment"),
            type_="foreignkey",
        )
        batch.drop_index(batch.f("ix_coordination_plan_activity_appointment_id"))
        batch.drop_column("appointment_id")
