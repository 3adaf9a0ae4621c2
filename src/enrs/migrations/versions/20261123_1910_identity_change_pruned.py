"""identity change log kept short by its own triggers (SQLite), whoever writes identities

Revision ID: 20261123_1910
Revises: 20261123_1900
Create Date: 2026-11-23 19:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261123_1910"
down_revision: str | None = "20261123_1900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOGGED = "INSERT INTO identity_change (source_id) VALUES (NEW.id);"
# The last 10 000 entries are kept: enough for any read ahead still waiting for its turn.
PRUNED = "DELETE FROM identity_change WHERE seq <= (SELECT max(seq) FROM identity_change) - 10000;"


def _replace(*, prune: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    body = f"BEGIN {LOGGED} {PRUNED if prune else ''} END"
    for event, name in (
        ("INSERT", "identity_source_insert_logged"),
        ("UPDATE", "identity_source_update_logged"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON identity_source {body}")


def upgrade() -> None:
    _replace(prune=True)


def downgrade() -> None:
    _replace(prune=False)
