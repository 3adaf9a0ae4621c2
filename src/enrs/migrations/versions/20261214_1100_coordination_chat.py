"""coordination: chat threads, messages, read marks

Revision ID: 20261214_1100
Revises: 20261214_1000
Create Date: 2026-12-14 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261214_1100"
down_revision: str | None = "20261214_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_thread",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["coordination_care_team.id"],
            name=op.f("fk_coordination_thread_team_id_coordination_care_team"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_thread")),
        sa.UniqueConstraint("team_id", "topic", name=op.f("uq_coordination_thread_team_id")),
    )
    with op.batch_alter_table("coordination_thread", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_thread_team_id"), ["team_id"], unique=False
        )

    op.create_table(
        "coordination_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(length=256), nullable=False),
        sa.Column("sender_name", sa.String(length=256), nullable=False),
        sa.Column("sender_rpps", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("mentions", sa.Text(), nullable=False),
        sa.Column("sent_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["coordination_thread.id"],
            name=op.f("fk_coordination_message_thread_id_coordination_thread"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_message")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_message_resource_id")),
    )
    with op.batch_alter_table("coordination_message", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_message_thread_id"), ["thread_id"], unique=False
        )

    op.create_table(
        "coordination_read_mark",
        sa.Column("thread_id", sa.Integer(), nullable=False),
        sa.Column("reader", sa.String(length=256), nullable=False),
        sa.Column("reader_name", sa.String(length=256), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("read_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["coordination_thread.id"],
            name=op.f("fk_coordination_read_mark_thread_id_coordination_thread"),
        ),
        sa.PrimaryKeyConstraint("thread_id", "reader", name=op.f("pk_coordination_read_mark")),
    )


def downgrade() -> None:
    op.drop_table("coordination_read_mark")
    with op.batch_alter_table("coordination_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_message_thread_id"))

    op.drop_table("coordination_message")
    with op.batch_alter_table("coordination_thread", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_thread_team_id"))

    op.drop_table("coordination_thread")
