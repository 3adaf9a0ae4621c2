"""imaging: the storage tier of each instance's bytes

``imaging_instance.storage_tier``: ``warm`` (every instance archived so far) or ``cold`` once
``enrs imaging retention run`` has moved its blob to the cheaper tier.

Revision ID: 20261217_0400
Revises: 20261216_0500
Create Date: 2026-12-17 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261217_0400"
down_revision: str | None = "20261216_0500"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("imaging_instance") as batch:
        batch.add_column(
            sa.Column("storage_tier", sa.String(length=8), server_default="warm", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("imaging_instance") as batch:
        batch.drop_column("storage_tier")
