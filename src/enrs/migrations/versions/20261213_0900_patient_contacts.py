"""messaging: the patients' addresses each mailbox wrote to (patients answer, never first)

Revision ID: 20261213_0900
Revises: 20261212_1000
Create Date: 2026-12-13 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261213_0900"
down_revision: str | None = "20261212_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_patient_contact",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("patient", sa.String(length=254), nullable=False),
        sa.Column("first_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mail_mailbox.id"],
            name=op.f("fk_mail_patient_contact_mailbox_id_mail_mailbox"),
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "patient", name=op.f("pk_mail_patient_contact")),
    )


def downgrade() -> None:
    op.drop_table("mail_patient_contact")
