"""audit chain head in one round trip (PostgreSQL: a function that locks, then reads it)

Revision ID: 20261123_1900
Revises: 20261123_1700
Create Date: 2026-11-23 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261123_1900"
down_revision: str | None = "20261123_1700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A VOLATILE PL/pgSQL function takes a new snapshot for each statement (READ COMMITTED): the
# head is read after the lock is granted, so it is the last one committed by the previous
# holder of the lock.
FUNCTION = """
CREATE FUNCTION audit_chain_head(lock_key bigint)
RETURNS TABLE (head_seq bigint, head_hash varchar)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY
        SELECT a.seq, CAST(a.hash AS varchar) FROM audit_record AS a ORDER BY a.seq DESC LIMIT 1;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_chain_head(bigint)")
