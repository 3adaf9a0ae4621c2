"""identity: the death's day an identity's facility gave (PID-29, Patient.deceasedDateTime)

Revision ID: 20261220_0900
Revises: 20261219_0900
Create Date: 2026-12-20 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261220_0900"
down_revision: str | None = "20261219_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No record fed so far kept a death (PID-29 and deceased[x] were not read): nothing to fill.
    # Plain ALTER TABLE (no batch copy of the table, which would drop its triggers on SQLite).
    op.add_column("identity_source", sa.Column("death_date", sa.Date(), nullable=True))
    op.create_index("ix_identity_source_death_date", "identity_source", ["death_date"])


def downgrade() -> None:
    op.drop_index("ix_identity_source_death_date", table_name="identity_source")
    op.drop_column("identity_source", "death_date")
