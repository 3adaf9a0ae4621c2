"""coordination: care plans, their goals and activities

Revision ID: 20261215_1000
Revises: 20261215_0900
Create Date: 2026-12-15 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261215_1000"
down_revision: str | None = "20261215_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_care_plan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("template", sa.String(length=256), nullable=True),
        sa.Column("author_key", sa.String(length=256), nullable=False),
        sa.Column("author_display", sa.String(length=256), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_care_plan_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_care_plan")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_care_plan_resource_id")),
    )
    with op.batch_alter_table("coordination_care_plan", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_care_plan_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_care_plan_team_id"), ["team_id"], unique=False
        )

    op.create_table(
        "coordination_plan_activity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("performer_role", sa.String(length=128), nullable=True),
        sa.Column("scheduled_start", sa.Date(), nullable=True),
        sa.Column("scheduled_end", sa.Date(), nullable=True),
        sa.Column("goal_ids", sa.String(length=512), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["coordination_care_plan.id"],
            name=op.f("fk_coordination_plan_activity_plan_id_coordination_care_plan"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["coordination_task.id"],
            name=op.f("fk_coordination_plan_activity_task_id_coordination_task"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_plan_activity")),
    )
    with op.batch_alter_table("coordination_plan_activity", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_plan_activity_plan_id"), ["plan_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_plan_activity_task_id"), ["task_id"], unique=False
        )

    op.create_table(
        "coordination_plan_goal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("lifecycle_status", sa.String(length=24), nullable=False),
        sa.Column("achievement_status", sa.String(length=24), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["coordination_care_plan.id"],
            name=op.f("fk_coordination_plan_goal_plan_id_coordination_care_plan"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_plan_goal")),
    )
    with op.batch_alter_table("coordination_plan_goal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_plan_goal_plan_id"), ["plan_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("coordination_plan_goal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_plan_goal_plan_id"))

    op.drop_table("coordination_plan_goal")
    with op.batch_alter_table("coordination_plan_activity", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_plan_activity_task_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_plan_activity_plan_id"))

    op.drop_table("coordination_plan_activity")
    with op.batch_alter_table("coordination_care_plan", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_care_plan_team_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_care_plan_patient_id"))

    op.drop_table("coordination_care_plan")
