"""identity change log (SQLite: filled by triggers on identity_source)

Revision ID: 20261123_1700
Revises: 20261123_1146
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261123_1700"
down_revision: str | None = "20261123_1146"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_change",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_identity_change")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER identity_source_insert_logged AFTER INSERT ON identity_source "
            "BEGIN INSERT INTO identity_change (source_id) VALUES (NEW.id); END"
        )
        op.execute(
            "CREATE TRIGGER identity_source_update_logged AFTER UPDATE ON identity_source "
            "BEGIN INSERT INTO identity_change (source_id) VALUES (NEW.id); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS identity_source_insert_logged")
        op.execute("DROP TRIGGER IF EXISTS identity_source_update_logged")
    op.drop_table("identity_change")
