"""coordination: the professionals' notifications of their care circles' events

The portal's notifications are written by a consumer of the event outbox with its own cursor
(``coordination-inbox``), which starts at the last event already in the outbox: what happened
before the upgrade is not notified. The subscriptions of software are outbound destinations
(no table of their own).

Revision ID: 20261215_1200
Revises: 20261215_1100
Create Date: 2026-12-15 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261215_1200"
down_revision: str | None = "20261215_1100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

START_CURSOR = (
    "INSERT INTO outbound_cursor (name, last_event_id) "
    "SELECT 'coordination-inbox', COALESCE(MAX(id), 0) FROM event_outbox"
)


def upgrade() -> None:
    op.create_table(
        "coordination_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("rpps", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("patient_rri", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("focus", sa.String(length=128), nullable=True),
        sa.Column("facility", sa.String(length=16), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("read_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_notification")),
        sa.UniqueConstraint("event_id", "rpps", name=op.f("uq_coordination_notification_event_id")),
    )
    op.create_index(
        "ix_coordination_notification_inbox",
        "coordination_notification",
        ["rpps", "read_at", "id"],
    )
    op.execute(START_CURSOR)


def downgrade() -> None:
    op.execute("DELETE FROM outbound_cursor WHERE name = 'coordination-inbox'")
    op.drop_index("ix_coordination_notification_inbox", table_name="coordination_notification")
    op.drop_table("coordination_notification")
