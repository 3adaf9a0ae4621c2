"""feeders bound to their assigning authorities: MLLP senders (known by MSH-4), and the
authorities each system client and each sender may write identities for

Revision ID: 20261203_0805
Revises: 20261123_1910
Create Date: 2026-12-03 08:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261203_0805"
down_revision: str | None = "20261123_1910"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_mllp_sender",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sender_oid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_mllp_sender")),
        sa.UniqueConstraint("sender_oid", name=op.f("uq_account_mllp_sender_sender_oid")),
    )
    op.create_table(
        "account_client_authority",
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["account_client.id"],
            name=op.f("fk_account_client_authority_client_id_account_client"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", "authority", name=op.f("pk_account_client_authority")),
    )
    op.create_table(
        "account_mllp_sender_authority",
        sa.Column("sender_id", sa.String(length=36), nullable=False),
        sa.Column("authority", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["account_mllp_sender.id"],
            name=op.f("fk_account_mllp_sender_authority_sender_id_account_mllp_sender"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "sender_id", "authority", name=op.f("pk_account_mllp_sender_authority")
        ),
    )


def downgrade() -> None:
    op.drop_table("account_mllp_sender_authority")
    op.drop_table("account_client_authority")
    op.drop_table("account_mllp_sender")
