"""identity source record: the demographic record as a facility fed it (prefixes, suffixes,
every address and telecom, marital status, multiple birth, contacts, language, general
practitioner, managing organisation), returned to PDQ and PDQm consumers

Revision ID: 20261204_1100
Revises: 20261204_1000
Create Date: 2026-12-04 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_1100"
down_revision: str | None = "20261204_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE (SQLite 3.35+ drops a column in place): a batch operation would rebuild the
# table on SQLite and lose the triggers of the change log (20261204_0300).


def upgrade() -> None:
    op.add_column("identity_source", sa.Column("record", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("identity_source", "record")
