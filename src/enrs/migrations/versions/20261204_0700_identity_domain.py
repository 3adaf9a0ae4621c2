"""identity domains: the assigning authorities the admin registered

Identities are written and queried only in registered domains. Every authority already in use
(fed identities, clients' and MLLP senders' bindings) is registered by this migration, without
a namespace or a name, so that an upgraded server refuses nothing it accepted before.

Revision ID: 20261204_0700
Revises: 20261204_0300
Create Date: 2026-12-04 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261204_0700"
down_revision: str | None = "20261204_0300"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REGISTER_IN_USE = (
    "INSERT INTO identity_domain (oid, created_at) "
    "SELECT DISTINCT authority, CURRENT_TIMESTAMP FROM ("
    "SELECT authority FROM identity_source UNION "
    "SELECT authority FROM account_client_authority UNION "
    "SELECT authority FROM account_mllp_sender_authority) AS used"
)


def upgrade() -> None:
    op.create_table(
        "identity_domain",
        sa.Column("oid", sa.String(length=64), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("oid", name=op.f("pk_identity_domain")),
        sa.UniqueConstraint("namespace", name=op.f("uq_identity_domain_namespace")),
    )
    op.execute(REGISTER_IN_USE)


def downgrade() -> None:
    op.drop_table("identity_domain")
