"""The registry as a DuckDB table, for the bulk jobs (``enrs identity train`` and
``enrs identity dedup``): one row per active source identity with the normalised columns the
matching definition reads (``matching/definition.py``), streamed out of SQLite or PostgreSQL
in batches through Arrow, and the derived features the definition puts in the frame computed
by DuckDB from their SQL rendering (``matching/sql_levels.frame_query``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import select

from enrs.identity.matching.definition import COLUMNS
from enrs.identity.matching.sql_levels import frame_query, register_functions
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.kit.db import Database

S = SourceIdentity

_ARROW = {"text": pa.string(), "date": pa.date32()}

# The definition's registry columns, read from their SourceIdentity attribute (the name a
# stored row gives them), between the identity's ids and the columns the jobs keep.
_RAW = pa.schema(
    [
        ("id", pa.int64()),
        ("patient_id", pa.int64()),
        *((c.name, _ARROW[c.kind]) for c in COLUMNS),
        ("ins", pa.string()),
        ("attributes", pa.string()),
    ]
)

_SELECT = (
    select(S.id, S.patient_id, *(getattr(S, c.row) for c in COLUMNS), S.ins, S.attributes)
    .join(RegionalPatient, RegionalPatient.id == S.patient_id)
    .where(S.active.is_(True), RegionalPatient.active.is_(True))
    .order_by(S.id)
)

_KEEP = ("id", "patient_id", "coalesce(ins, '') AS ins", "coalesce(attributes, '') AS attributes")

# given: the first names as stored (``|``-separated, each normalised); the frame adds the
# definition's derived columns (given_names, first_given, birth_year, birth_date_swapped…).
_DERIVED = "CREATE OR REPLACE TABLE identities AS\n{query}"


def _derive(con: duckdb.DuckDBPyConnection, raw: str) -> None:
    register_functions(con)
    con.execute(_DERIVED.format(query=frame_query(raw, _KEEP)))


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
        _derive(con, "enrs_raw_rows")
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
    _derive(con, "identities_raw")
    con.execute("DROP TABLE identities_raw")
    return total
