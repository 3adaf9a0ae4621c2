"""identity change log restored (SQLite): the write turn reads again only what changed

Without it the MLLP listener read every candidate a second time inside the SQLite write turn;
profiled on a 1 000 000-identity registry that re-read was the feed's regression (422 to about
270 identities/s, docs/benchmarks.md). Same table and triggers as 20261123_1910.

Revision ID: 20261204_0300
Revises: 20261203_2045
Create Date: 2026-12-04 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_0300"
down_revision: str | None = "20261203_2045"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = (
    ("INSERT", "identity_source_insert_logged"),
    ("UPDATE", "identity_source_update_logged"),
)
LOGGED = "INSERT INTO identity_change (source_id) VALUES (NEW.id);"
# The last 10 000 entries are kept: enough for any read ahead still waiting for its turn.
PRUNED = "DELETE FROM identity_change WHERE seq <= (SELECT max(seq) FROM identity_change) - 10000;"


def upgrade() -> None:
    op.create_table(
        "identity_change",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_identity_change")),
    )
    if op.get_bind().dialect.name == "sqlite":
        for event, name in TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON identity_source "
                f"BEGIN {LOGGED} {PRUNED} END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for _, name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("identity_change")
