"""messaging: the operator's mailboxes, their delegations, the MSSanté trust space

Revision ID: 20261211_0900
Revises: 20261210_0900
Create Date: 2026-12-11 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261211_0900"
down_revision: str | None = "20261210_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_mailbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("rpps", sa.String(length=11), nullable=True),
        sa.Column("finess", sa.String(length=9), nullable=True),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("liste_rouge", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_mailbox")),
        sa.UniqueConstraint("address", name=op.f("uq_mail_mailbox_address")),
    )
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_mailbox_rpps"), ["rpps"], unique=False)
        batch_op.create_index(batch_op.f("ix_mail_mailbox_finess"), ["finess"], unique=False)
    op.create_table(
        "mail_delegation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("delegate", sa.String(length=254), nullable=False),
        sa.Column("may_send", sa.Boolean(), nullable=False),
        sa.Column("created_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mail_mailbox.id"],
            name=op.f("fk_mail_delegation_mailbox_id_mail_mailbox"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_delegation")),
        sa.UniqueConstraint("mailbox_id", "delegate", name=op.f("uq_mail_delegation_mailbox_id")),
    )
    with op.batch_alter_table("mail_delegation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mail_delegation_mailbox_id"), ["mailbox_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_mail_delegation_delegate"), ["delegate"], unique=False)
    op.create_table(
        "mail_trusted_domain",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("operator_dn", sa.String(length=1024), nullable=False),
        sa.Column("updated", sa.String(length=32), nullable=False),
        sa.Column("imported_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mail_trusted_domain")),
    )


def downgrade() -> None:
    op.drop_table("mail_trusted_domain")
    with op.batch_alter_table("mail_delegation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_delegation_delegate"))
        batch_op.drop_index(batch_op.f("ix_mail_delegation_mailbox_id"))
    op.drop_table("mail_delegation")
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_mailbox_finess"))
        batch_op.drop_index(batch_op.f("ix_mail_mailbox_rpps"))
    op.drop_table("mail_mailbox")
