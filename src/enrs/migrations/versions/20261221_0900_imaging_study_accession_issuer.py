"""imaging: the accession number's assigning authority (Issuer of Accession Number Sequence)

Revision ID: 20261221_0900
Revises: 20261220_0900
Create Date: 2026-12-21 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261221_0900"
down_revision: str | None = "20261220_0900"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Studies archived so far did not keep it: NULL, the PatientID's issuer standing for it.
    op.add_column("imaging_study", sa.Column("accession_issuer", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("imaging_study", "accession_issuer")
