"""The registry as a DuckDB table, for the bulk jobs (``enrs identity train`` and
``enrs identity dedup``): one row per active source identity with the normalised traits the
matching levels read (``matching/sql_levels.py``), streamed out of SQLite or PostgreSQL in
batches through Arrow, the derived columns computed by DuckDB."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import select

from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.kit.db import Database

S = SourceIdentity

_RAW = pa.schema(
    [
        ("id", pa.int64()),
        ("patient_id", pa.int64()),
        ("birth_name", pa.string()),
        ("used_name", pa.string()),
        ("given", pa.string()),
        ("first_given", pa.string()),
        ("birth_date", pa.date32()),
        ("birth_year", pa.int32()),
        ("sex", pa.string()),
        ("birth_place", pa.string()),
        ("postal_code", pa.string()),
        ("ins", pa.string()),
        ("attributes", pa.string()),
    ]
)

_SELECT = (
    select(
        S.id,
        S.patient_id,
        S.n_birth_name,
        S.n_used_name,
        S.n_given_names,
        S.n_first_given,
        S.birth_date,
        S.birth_year,
        S.sex,
        S.birth_place,
        S.postal_code,
        S.ins,
        S.attributes,
    )
    .join(RegionalPatient, RegionalPatient.id == S.patient_id)
    .where(S.active.is_(True), RegionalPatient.active.is_(True))
    .order_by(S.id)
)

# Text columns are never NULL in the frame: the levels test ``<> ''`` as compare.py tests
# falsiness. given_names keeps the first names as stored (``|``-separated, each normalised).
_DERIVED = """
CREATE OR REPLACE TABLE identities AS
SELECT
    id,
    patient_id,
    coalesce(birth_name, '') AS birth_name,
    coalesce(used_name, '') AS used_name,
    CASE WHEN coalesce(given, '') = '' THEN []::VARCHAR[]
         ELSE string_split(given, '|') END AS given_names,
    CASE WHEN coalesce(given, '') = '' THEN []::VARCHAR[]
         ELSE list_filter(string_split(replace(given, '|', ' '), ' '), lambda t: t <> '')
    END AS given_tokens,
    coalesce(first_given, '') AS first_given,
    birth_date,
    coalesce(strftime(birth_date, '%Y%m%d'), '') AS birth_ymd,
    birth_year,
    CASE WHEN day(birth_date) <= 12 AND day(birth_date) <> month(birth_date)
         THEN make_date(year(birth_date), day(birth_date), month(birth_date)) END
        AS birth_date_swapped,
    coalesce(sex, '') AS sex,
    coalesce(birth_place, '') AS birth_place,
    CASE WHEN starts_with(coalesce(birth_place, ''), '97') THEN left(birth_place, 3)
         ELSE left(coalesce(birth_place, ''), 2) END AS birth_department,
    coalesce(postal_code, '') AS postal_code,
    coalesce(ins, '') AS ins,
    coalesce(attributes, '') AS attributes
FROM {raw}
"""


def _batches(db: Database, size: int) -> Iterator[Sequence[Any]]:
    with db.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=size).execute(_SELECT)
        yield from result.partitions(size)


def to_arrow(rows: Sequence[Sequence[Any]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in _RAW]
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, _RAW, strict=True)],
        schema=_RAW,
    )


def load_rows(con: duckdb.DuckDBPyConnection, rows: Sequence[Sequence[Any]]) -> int:
    """Build the frame from rows in the column order of ``_RAW`` (tests and small jobs)."""
    arrow = to_arrow(rows)
    con.register("enrs_raw_rows", arrow)
    try:
        con.execute(_DERIVED.format(raw="enrs_raw_rows"))
    finally:
        con.unregister("enrs_raw_rows")
    return len(rows)


def load_registry(
    db: Database,
    con: duckdb.DuckDBPyConnection,
    *,
    batch: int = 100_000,
) -> int:
    """Copy every active identity of an active regional patient into ``identities``."""
    con.execute("DROP TABLE IF EXISTS identities_raw")
    first = True
    total = 0
    for part in _batches(db, batch):
        arrow = to_arrow(part)
        con.register("enrs_batch", arrow)
        if first:
            con.execute("CREATE TABLE identities_raw AS SELECT * FROM enrs_batch")
            first = False
        else:
            con.execute("INSERT INTO identities_raw SELECT * FROM enrs_batch")
        con.unregister("enrs_batch")
        total += len(part)
    if first:  # empty registry: an empty frame with the right columns
        con.register("enrs_batch", to_arrow([]))
        con.execute("CREATE TABLE identities_raw AS SELECT * FROM enrs_batch")
        con.unregister("enrs_batch")
    con.execute(_DERIVED.format(raw="identities_raw"))
    con.execute("DROP TABLE identities_raw")
    return total
