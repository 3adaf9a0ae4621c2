"""identity other identifiers: the numbers a facility gives besides its IPP and the INS, kept
when their domain is registered

Revision ID: 20261204_1000
Revises: 20261204_0900
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_1000"
down_revision: str | None = "20261204_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE: a batch operation would rebuild the table on SQLite and lose the
    # triggers of the change log (20261204_0300).
    op.add_column("identity_source", sa.Column("other_identifiers", sa.Text(), nullable=True))
    op.create_table(
        "identity_other_identifier",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("type_code", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["identity_source.id"],
            name=op.f("fk_identity_other_identifier_source_id_identity_source"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_other_identifier")),
        sa.UniqueConstraint(
            "source_id",
            "system",
            "value",
            name=op.f("uq_identity_other_identifier_source_id"),
        ),
    )
    op.create_index(
        op.f("ix_identity_other_identifier_source_id"),
        "identity_other_identifier",
        ["source_id"],
        unique=False,
    )
    op.create_index(
        "ix_identity_other_identifier_key",
        "identity_other_identifier",
        ["system", "value"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_identity_other_identifier_key", table_name="identity_other_identifier")
    op.drop_index(
        op.f("ix_identity_other_identifier_source_id"), table_name="identity_other_identifier"
    )
    op.drop_table("identity_other_identifier")
    op.drop_column("identity_source", "other_identifiers")
