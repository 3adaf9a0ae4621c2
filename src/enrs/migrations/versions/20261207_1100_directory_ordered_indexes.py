"""directory ordered indexes: the name and commune indexes end with the key, so that a
search by a name's or commune's start reads its first page in index order

Revision ID: 20261207_1100
Revises: 20261207_1000
Create Date: 2026-12-07 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261207_1100"
down_revision: str | None = "20261207_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, old index, its columns, new index, its columns)
_CHANGES = (
    ("directory_professional", "ix_directory_professional_n_family", ["n_family"],
     "ix_directory_professional_family", ["n_family", "id"]),
    ("directory_activity", "ix_directory_activity_profession_city",
     ["profession_code", "n_city"], "ix_directory_activity_profession_city",
     ["profession_code", "n_city", "id"]),
    ("directory_activity", "ix_directory_activity_city", ["n_city"],
     "ix_directory_activity_city", ["n_city", "id"]),
)  # fmt: skip


def upgrade() -> None:
    for table, old, _, new, columns in _CHANGES:
        op.drop_index(old, table_name=table)
        op.create_index(new, table, columns, unique=False)


def downgrade() -> None:
    for table, old, old_columns, new, _ in reversed(_CHANGES):
        op.drop_index(new, table_name=table)
        op.create_index(old, table, old_columns, unique=False)
