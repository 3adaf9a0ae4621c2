"""imaging: a study's and an instance's sender may be a system client (STOW-RS)

``imaging_study.sending_aet`` and ``imaging_instance.sending_aet`` hold the sending AE title
(C-STORE) or the storing system client's id (STOW-RS, up to 128 characters): widened from 16.

Revision ID: 20261217_0200
Revises: 20261217_0300
Create Date: 2026-12-17 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261217_0200"
down_revision: str | None = "20261217_0300"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("imaging_study", "imaging_instance")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "sending_aet",
                existing_type=sa.String(length=16),
                type_=sa.String(length=128),
                existing_nullable=False,
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "sending_aet",
                existing_type=sa.String(length=128),
                type_=sa.String(length=16),
                existing_nullable=False,
            )
