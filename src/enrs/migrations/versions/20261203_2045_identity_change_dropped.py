"""identity change log dropped: the read ahead reads the candidates again in the write turn

The log (SQLite triggers on identity_source) let a listener re-read only the identities changed
since it scored ahead; measured on a 1 000 000-identity registry, the triggers cost more than the
reads they saved (docs/benchmarks.md).

Revision ID: 20261203_2045
Revises: 20261203_0805
Create Date: 2026-12-03 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261203_2045"
down_revision: str | None = "20261203_0805"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = ("identity_source_insert_logged", "identity_source_update_logged")
LOGGED = "INSERT INTO identity_change (source_id) VALUES (NEW.id);"
PRUNED = "DELETE FROM identity_change WHERE seq <= (SELECT max(seq) FROM identity_change) - 10000;"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("identity_change")


def downgrade() -> None:
    op.create_table(
        "identity_change",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_identity_change")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for event, name in zip(("INSERT", "UPDATE"), TRIGGERS, strict=True):
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON identity_source "
                f"BEGIN {LOGGED} {PRUNED} END"
            )
