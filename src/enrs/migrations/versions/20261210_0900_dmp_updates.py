"""DMP feed: what the export row sends (register, update, deprecate) and the version of the
document the DMP holds (corrections and withdrawals reach the DMP by ITI-57)

Revision ID: 20261210_0900
Revises: 20261209_0900
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261210_0900"
down_revision: str | None = "20261209_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("document_dmp_export", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("operation", sa.String(length=16), server_default="register", nullable=False)
        )
        batch_op.add_column(sa.Column("dmp_version", sa.Integer(), nullable=True))
    # a document sent before holds its first version in the DMP
    op.execute("UPDATE document_dmp_export SET dmp_version = 1 WHERE status = 'sent'")


def downgrade() -> None:
    with op.batch_alter_table("document_dmp_export", schema=None) as batch_op:
        batch_op.drop_column("dmp_version")
        batch_op.drop_column("operation")
