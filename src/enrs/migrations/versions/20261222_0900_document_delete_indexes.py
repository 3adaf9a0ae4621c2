"""documents: indexes on the columns that reference a document (its replacing version, an
opposition), which deleting a document checks

Revision ID: 20261222_0900
Revises: 20261221_0900
Create Date: 2026-12-22 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261222_0900"
down_revision: str | None = "20261221_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
INDEXES = (  # name, table, the column that names a document
    ("ix_document_entry_replaces", "document_entry", "replaces_id"),
    ("ix_document_opposition_document", "document_opposition", "document_id"),
)


def upgrade() -> None:
    # Without them, the foreign keys' check scans the table once per document deleted (the
    # retention job): 0.4 s per 40 documents of a 16,000-document registry on SQLite. Partial:
    # most rows name no document, and SQLite's planner judges an index of NULLs useless.
    for name, table, column in INDEXES:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, table, [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
