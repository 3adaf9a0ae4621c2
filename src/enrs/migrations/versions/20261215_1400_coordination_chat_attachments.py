"""coordination: a chat message's attachment filed in the patient's record

Revision ID: 20261215_1400
Revises: 20261215_1200
Create Date: 2026-12-15 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261215_1400"
down_revision: str | None = "20261215_1200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordination_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("document_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("attachment_title", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("attachment_type", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coordination_message", schema=None) as batch_op:
        batch_op.drop_column("attachment_type")
        batch_op.drop_column("attachment_title")
        batch_op.drop_column("document_id")
