"""coordination: the shared agenda (appointments, schedules, slots, feeds)

Revision ID: 20261215_0900
Revises: 20261214_1100
Create Date: 2026-12-15 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261215_0900"
down_revision: str | None = "20261214_1100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_agenda_feed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_agenda_feed")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_coordination_agenda_feed_token_hash")),
        sa.UniqueConstraint("user_id", name=op.f("uq_coordination_agenda_feed_user_id")),
    )
    op.create_table(
        "coordination_schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=False),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_schedule")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_schedule_resource_id")),
        sa.UniqueConstraint("rpps", name=op.f("uq_coordination_schedule_rpps")),
    )
    op.create_table(
        "coordination_slot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["coordination_schedule.id"],
            name=op.f("fk_coordination_slot_schedule_id_coordination_schedule"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_slot")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_slot_resource_id")),
    )
    with op.batch_alter_table("coordination_slot", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_slot_schedule_id"), ["schedule_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_slot_start_at"), ["start_at"], unique=False
        )

    op.create_table(
        "coordination_appointment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("patient_status", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("start_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("slot_id", sa.Integer(), nullable=True),
        sa.Column("created_by_key", sa.String(length=256), nullable=False),
        sa.Column("created_by_display", sa.String(length=256), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["slot_id"],
            ["coordination_slot.id"],
            name=op.f("fk_coordination_appointment_slot_id_coordination_slot"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_appointment_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_appointment")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_appointment_resource_id")),
    )
    with op.batch_alter_table("coordination_appointment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_slot_id"), ["slot_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_start_at"), ["start_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_team_id"), ["team_id"], unique=False
        )

    op.create_table(
        "coordination_appointment_participant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=True),
        sa.Column("finess", sa.String(length=16), nullable=True),
        sa.Column("display", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["coordination_appointment.id"],
            name="fk_coordination_appointment_participant",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_appointment_participant")),
    )
    with op.batch_alter_table("coordination_appointment_participant", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_participant_appointment_id"),
            ["appointment_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_participant_finess"), ["finess"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_appointment_participant_rpps"), ["rpps"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("coordination_appointment_participant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_participant_rpps"))
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_participant_finess"))
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_participant_appointment_id"))

    op.drop_table("coordination_appointment_participant")
    with op.batch_alter_table("coordination_appointment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_team_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_start_at"))
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_slot_id"))
        batch_op.drop_index(batch_op.f("ix_coordination_appointment_patient_id"))

    op.drop_table("coordination_appointment")
    with op.batch_alter_table("coordination_slot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_slot_start_at"))
        batch_op.drop_index(batch_op.f("ix_coordination_slot_schedule_id"))

    op.drop_table("coordination_slot")
    op.drop_table("coordination_schedule")
    op.drop_table("coordination_agenda_feed")
