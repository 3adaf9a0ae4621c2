"""The SQL rendering of the matching definition (DuckDB dialect), so that Splink trains the
model and scans the whole registry with exactly the levels real-time matching uses.

Both sides read one row per identity of the registry frame (``identity.registry_frame``),
whose columns are the definition's registry columns (text never NULL: ``''``) and its derived
features marked ``frame``; a level reads another derived feature through its SQL, written into
the condition. Splink tries a comparison's levels in order and takes the first that holds, as
the Python scorer does. ``tests/identity/test_sql_levels.py`` checks, pair by pair, that SQL
and Python give the same labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from enrs.identity.matching.definition import COMPARISONS, FEATURES
from enrs.identity.matching.rules import (
    SQL_FUNCTIONS,
    Column,
    Comparison,
    Derived,
    Feature,
    Side,
    render_sql,
)


@dataclass(frozen=True)
class SqlLevel:
    label: str
    condition: str  # "ELSE" for the last level
    is_null: bool = False


def _level_column(feature: Feature, side: Side | None) -> str:
    """A feature of one side of a pair: its frame column, or its SQL."""
    if side is None:
        raise ValueError(f"feature {feature.name!r} without a side in a condition")
    if isinstance(feature, Column) or (isinstance(feature, Derived) and feature.frame):
        return f"{feature.name}_{side}"
    assert isinstance(feature, Derived)
    return render_sql(feature.expr, _level_column, side)


def sql_levels(
    comparisons: Sequence[Comparison] = COMPARISONS,
) -> dict[str, tuple[SqlLevel, ...]]:
    """Each comparison's levels as Splink ``sql_condition``\\ s."""
    return {
        comp.name: tuple(
            SqlLevel(
                lvl.label,
                "ELSE" if lvl.condition is None else render_sql(lvl.condition, _level_column, None),
                lvl.null,
            )
            for lvl in comp.levels
        )
        for comp in comparisons
    }


SQL_LEVELS: dict[str, tuple[SqlLevel, ...]] = sql_levels()


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Our functions that the SQL rendering calls (``rules.SQL_FUNCTIONS``), on ``con``
    (once: a connection that has them is left as it is)."""
    known = {
        row[0] for row in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()
    }
    for name, function, returns in SQL_FUNCTIONS:
        if name not in known:
            con.create_function(name, function, ["VARCHAR"], returns, side_effects=False)


def feature_sql(feature: Feature, side: Side | None = None) -> str:
    """SQL of one identity's ``feature`` over the frame's registry columns."""
    if isinstance(feature, Column):
        return feature.name
    assert isinstance(feature, Derived)
    return f"({render_sql(feature.expr, feature_sql, None)})"


def frame_query(raw: str, keep: Sequence[str], features: Sequence[Feature] = FEATURES) -> str:
    """The registry frame: from the table ``raw`` (one row per identity, a column per registry
    column of the definition), the columns ``keep`` (SQL select items), the registry columns
    (text coalesced to ``''``) and each derived feature marked ``frame``."""
    columns = [
        f"coalesce({f.name}, '') AS {f.name}" if f.text else f.name
        for f in features
        if isinstance(f, Column)
    ]
    derived = [
        f"{feature_sql(f)} AS {f.name}" for f in features if isinstance(f, Derived) and f.frame
    ]
    inner = ",\n        ".join([*keep, *columns])
    outer = ",\n    ".join(["*", *derived])
    return f"SELECT\n    {outer}\nFROM (\n    SELECT\n        {inner}\n    FROM {raw}\n)"


# Candidate pairs for a registry-wide scan: the keys real-time blocking uses
# (``identity.repository.candidates``), written as Splink blocking rules; plus the same INS.
BLOCKING_RULES: tuple[str, ...] = (
    "l.birth_date = r.birth_date",
    "l.birth_date = r.birth_date_swapped",
    "l.birth_name = r.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.used_name <> '' AND l.used_name = r.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "r.used_name <> '' AND r.used_name = l.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.used_name <> '' AND l.used_name = r.used_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.birth_name <> '' AND l.birth_name = r.birth_name AND l.first_given = r.first_given",
    "l.birth_name <> '' AND l.first_given = r.birth_name AND l.birth_name = r.first_given",
    "l.birth_name_phonetic <> '' AND l.birth_name_phonetic = r.birth_name_phonetic"
    " AND abs(l.birth_year - r.birth_year) <= 1",
    "l.given_phonetic <> '' AND l.given_phonetic = r.given_phonetic"
    " AND l.birth_name_phonetic = r.birth_name_phonetic",
    "l.given_phonetic <> '' AND l.given_phonetic = r.birth_name_phonetic"
    " AND l.birth_name_phonetic = r.given_phonetic",
    "l.phone <> '' AND l.phone = r.phone",
    "l.address <> '' AND l.address = r.address AND l.postal_code = r.postal_code",
    "l.ins <> '' AND l.ins = r.ins",
)
