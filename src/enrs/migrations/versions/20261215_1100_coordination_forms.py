"""coordination: evaluation forms (QuestionnaireResponse)

Revision ID: 20261215_1100
Revises: 20261215_1000
Create Date: 2026-12-15 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import enrs.kit.db

revision: str = "20261215_1100"
down_revision: str | None = "20261215_1000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "coordination_form_response",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("questionnaire", sa.String(length=64), nullable=False),
        sa.Column("questionnaire_version", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("answers", sa.Text(), nullable=False),
        sa.Column("score_hundredths", sa.Integer(), nullable=True),
        sa.Column("author_key", sa.String(length=256), nullable=False),
        sa.Column("author_display", sa.String(length=256), nullable=False),
        sa.Column("author_rpps", sa.String(length=16), nullable=True),
        sa.Column("authored_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", enrs.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coordination_form_response")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_coordination_form_response_resource_id")),
    )
    with op.batch_alter_table("coordination_form_response", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_coordination_form_response_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_coordination_form_response_questionnaire"),
            ["questionnaire"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("coordination_form_response", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coordination_form_response_questionnaire"))
        batch_op.drop_index(batch_op.f("ix_coordination_form_response_patient_id"))

    op.drop_table("coordination_form_response")
