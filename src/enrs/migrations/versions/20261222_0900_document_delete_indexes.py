"""documents: indexes on the columns that reference a document (its replacing version, an
opposition), which deleting a document checks

Revision ID: 20261222_0900
Revises: 20261221_0900
Create Date: 2026-12-22 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261222_0900"
down_revision: str | None = "20261221_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without them, the foreign keys' check scans the table once per document deleted (the
    # retention job): 0.4 s per 40 documents of a 16,000-document registry on SQLite.
    op.create_index("ix_document_entry_replaces", "document_entry", ["replaces_id"])
    op.create_index("ix_document_opposition_document", "document_opposition", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_document_opposition_document", table_name="document_opposition")
    op.drop_index("ix_document_entry_replaces", table_name="document_entry")
