"""messaging: the national trust list in force and the last attempt to import one

Revision ID: 20261213_1000
Revises: 20261213_0900
Create Date: 2026-12-13 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261213_1000"
down_revision: str | None = "20261213_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "mail_trust_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generated", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=2048), nullable=False),
        sa.Column("imported_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempted_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_trust_list")),
    )
    # The one row, there from the start so that an import can lock it.
    op.bulk_insert(table, [{"id": 1, "source": "", "outcome": "", "detail": ""}])


def downgrade() -> None:
    op.drop_table("mail_trust_list")
