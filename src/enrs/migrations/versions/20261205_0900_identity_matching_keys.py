"""identity matching keys: French phonetic keys of the birth name and first first name, the
address, city, phone and e-mail as compared, for blocking and as evidence for the cell, and the
order of birth of a multiple birth

Revision ID: 20261205_0900
Revises: 20261204_1100
Create Date: 2026-12-05 09:00:00
"""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "20261205_0900"
down_revision: str | None = "20261204_1100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("p_birth_name", 64),
    ("p_first_given", 64),
    ("n_address", 256),
    ("n_city", 128),
    ("n_phone", 16),
    ("n_email", 256),
    ("birth_order", 2),
)
_INDEXES = (
    ("ix_identity_source_phonetic_year", ["p_birth_name", "birth_year"]),
    ("ix_identity_source_phonetic_given", ["p_first_given", "p_birth_name"]),
    ("ix_identity_source_phone", ["n_phone"]),
    ("ix_identity_source_address", ["n_address", "postal_code"]),
)
_BATCH = 5_000


def _first(telecom: str | None, system: str) -> str | None:
    for item in json.loads(telecom) if telecom else []:
        if item.get("system") == system and item.get("value"):
            return str(item["value"])
    return None


def _json(text: str | None) -> dict[str, Any] | None:
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _backfill() -> None:
    # The normalisations of the application (identity.traits), as the feed computes them.
    from enrs.identity.record import birth_order
    from enrs.identity.traits import (
        normalize_address,
        normalize_city,
        normalize_email,
        normalize_phone,
        phonetic,
    )

    conn = op.get_bind()
    table = sa.table(
        "identity_source",
        sa.column("id", sa.Integer),
        sa.column("n_birth_name", sa.String),
        sa.column("n_first_given", sa.String),
        sa.column("address_line", sa.String),
        sa.column("city", sa.String),
        sa.column("telecom", sa.Text),
        sa.column("record", sa.Text),
        *(sa.column(name, sa.String) for name, _ in _COLUMNS),
    )
    update = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id"))
        .values({name: sa.bindparam(f"v_{name}") for name, _ in _COLUMNS})
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(
                table.c.id,
                table.c.n_birth_name,
                table.c.n_first_given,
                table.c.address_line,
                table.c.city,
                table.c.telecom,
                table.c.record,
            )
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        values = []
        for row_id, name, given, address, city, telecom, record in rows:
            keys = {
                "p_birth_name": phonetic(name or ""),
                "p_first_given": phonetic(given or ""),
                "n_address": normalize_address(address),
                "n_city": normalize_city(city),
                "n_phone": normalize_phone(_first(telecom, "phone")),
                "n_email": normalize_email(_first(telecom, "email")),
                "birth_order": birth_order(_json(record)),
            }
            values.append({"row_id": row_id, **{f"v_{k}": v or None for k, v in keys.items()}})
        conn.execute(update, values)
        last = rows[-1][0]


# Plain ALTER TABLE (no batch operation: on SQLite it would rebuild the table and lose the
# change log's triggers, 20261204_0300).


def upgrade() -> None:
    for name, length in _COLUMNS:
        op.add_column("identity_source", sa.Column(name, sa.String(length), nullable=True))
    _backfill()
    for name, columns in _INDEXES:
        op.create_index(name, "identity_source", columns)


def downgrade() -> None:
    for name, _ in _INDEXES:
        op.drop_index(name, table_name="identity_source")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("identity_source", name)
