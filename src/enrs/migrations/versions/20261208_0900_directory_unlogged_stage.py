"""directory stage tables unlogged on PostgreSQL: what an import stages is written once,
read once by its apply and cleared; it needs no write-ahead log (a crash empties them, and
the import is run again)

Revision ID: 20261208_0900
Revises: 20261207_1100
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261208_0900"
down_revision: str | None = "20261207_1100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGES = (
    "directory_professional_stage",
    "directory_activity_stage",
    "directory_structure_stage",
    "directory_qualification_stage",
    "directory_diploma_stage",
    "directory_mailbox_stage",
    "directory_structure_position_stage",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _STAGES:
            op.execute(f"ALTER TABLE {table} SET UNLOGGED")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _STAGES:
            op.execute(f"ALTER TABLE {table} SET LOGGED")
