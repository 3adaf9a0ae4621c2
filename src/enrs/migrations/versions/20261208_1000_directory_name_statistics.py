"""directory name statistics on PostgreSQL: a histogram of 1 000 folded names instead of 100,
so that the planner's estimate of ``name:contains`` (``LIKE '%…%'``, judged on the histogram)
stays near the truth: with 100 names a substring one professional in a hundred bears is often
found in none, estimated at a few hundred rows, and all its matches read and sorted instead
of the first page read in key order

Revision ID: 20261208_1000
Revises: 20261208_0900
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261208_1000"
down_revision: str | None = "20261208_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("n_family", "n_given")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in _COLUMNS:
            op.execute(f"ALTER TABLE directory_professional ALTER {column} SET STATISTICS 1000")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in _COLUMNS:
            op.execute(f"ALTER TABLE directory_professional ALTER {column} SET STATISTICS -1")
