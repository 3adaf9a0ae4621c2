"""messaging: the facility software's MLLP endpoint of an applicative (APP) mailbox

Revision ID: 20261212_0900
Revises: 20261211_0900
Create Date: 2026-12-12 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261212_0900"
down_revision: str | None = "20261211_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mllp_endpoint", sa.String(length=262), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mail_mailbox", schema=None) as batch_op:
        batch_op.drop_column("mllp_endpoint")
