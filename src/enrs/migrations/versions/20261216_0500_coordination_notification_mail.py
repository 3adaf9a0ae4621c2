"""coordination: the professionals' notifications also by MSSanté mail

``coordination_notification_mail``: a professional's choice (RPPS, address, since when);
``coordination_notification.mailed_at``: when a notification was handed to the mail server.
Nobody has chosen mail at the upgrade: nothing already notified is mailed.

Revision ID: 20261216_0500
Revises: 20261216_0400
Create Date: 2026-12-16 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from enrs.kit.db import UTCDateTime

revision: str = "20261216_0500"
down_revision: str | None = "20261216_0400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_notification_mail",
        sa.Column("rpps", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("since", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rpps", name=op.f("pk_coordination_notification_mail")),
    )
    with op.batch_alter_table("coordination_notification") as batch:
        batch.add_column(sa.Column("mailed_at", UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_coordination_notification_unmailed",
        "coordination_notification",
        ["rpps", "mailed_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_coordination_notification_unmailed", table_name="coordination_notification")
    with op.batch_alter_table("coordination_notification") as batch:
        batch.drop_column("mailed_at")
    op.drop_table("coordination_notification_mail")
