"""messaging: traffic per mailbox and month (indicators), national directory publication

Revision ID: 20261212_1000
Revises: 20261212_0900
Create Date: 2026-12-12 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261212_1000"
down_revision: str | None = "20261212_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_traffic",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("received", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mail_mailbox.id"],
            name=op.f("fk_mail_traffic_mailbox_id_mail_mailbox"),
        ),
        sa.PrimaryKeyConstraint("month", "mailbox_id", name=op.f("pk_mail_traffic")),
    )
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.drop_column("published")
    op.drop_table("mail_traffic")
