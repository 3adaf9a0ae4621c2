"""outbound queue: notification destinations, their messages, the fan-out cursor

The cursor starts at the last event already in the outbox: what happened before the upgrade
is not notified.

Revision ID: 20261204_0900
Revises: 20261204_0700
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_0900"
down_revision: str | None = "20261204_0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

START_CURSOR = (
    "INSERT INTO outbound_cursor (name, last_event_id) "
    "SELECT 'fanout', COALESCE(MAX(id), 0) FROM event_outbox"
)


def upgrade() -> None:
    op.create_table(
        "outbound_destination",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("transport", sa.String(length=8), nullable=False),
        sa.Column("endpoint", sa.String(length=512), nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("start_event_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_destination")),
        sa.UniqueConstraint("name", name=op.f("uq_outbound_destination_name")),
    )
    op.create_table(
        "outbound_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("destination_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.String(length=256), nullable=False),
        sa.Column("patient_ref", sa.String(length=64), nullable=True),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["destination_id"],
            ["outbound_destination.id"],
            name=op.f("fk_outbound_message_destination_id_outbound_destination"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_message")),
    )
    op.create_index(
        "ix_outbound_message_queue",
        "outbound_message",
        ["destination_id", "status", "id"],
        unique=False,
    )
    op.create_table(
        "outbound_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_outbound_cursor")),
    )
    op.execute(START_CURSOR)


def downgrade() -> None:
    op.drop_table("outbound_cursor")
    op.drop_index("ix_outbound_message_queue", table_name="outbound_message")
    op.drop_table("outbound_message")
    op.drop_table("outbound_destination")
