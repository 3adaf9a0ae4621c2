"""directory regional: the local identifier (and its system) of the professionals and
structures registered in the regional directory, the code system of a regional profession,
and the counters the local identifiers are drawn from

Revision ID: 20261207_0900
Revises: 20261206_0900
Create Date: 2026-12-07 09:00:00

Columns are added (nullable) and unique *indexes* created, never a table rebuilt: on SQLite a
rebuild of ``directory_professional`` would drop the triggers of its trigram table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261207_0900"
down_revision: str | None = "20261206_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOCAL = ("directory_professional", "directory_structure")


def upgrade() -> None:
    for table in _LOCAL:
        op.add_column(table, sa.Column("local_id", sa.String(length=16), nullable=True))
        op.add_column(table, sa.Column("local_system", sa.String(length=128), nullable=True))
        op.create_index(op.f(f"ix_{table}_local_id"), table, ["local_id"], unique=True)
    op.add_column(
        "directory_activity",
        sa.Column("profession_system", sa.String(length=128), nullable=True),
    )
    counter = op.create_table(
        "directory_local_counter",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_directory_local_counter")),
    )
    op.bulk_insert(
        counter, [{"kind": "professional", "value": 0}, {"kind": "structure", "value": 0}]
    )


def downgrade() -> None:
    op.drop_table("directory_local_counter")
    # ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35): no rebuild, the triggers stay.
    op.drop_column("directory_activity", "profession_system")
    for table in _LOCAL:
        op.drop_index(op.f(f"ix_{table}_local_id"), table_name=table)
        op.drop_column(table, "local_system")
        op.drop_column(table, "local_id")
