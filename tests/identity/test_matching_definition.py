"""One definition of the comparisons (``matching/definition.py``): the Python scorer and the
SQL (Splink's levels, the registry frame) are rendered from it, so a change to a level there
is a change to both, and the per-identity features are the same in Python and in DuckDB."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from typing import Any

import duckdb
import pytest
from tests.identity.test_sql_levels import MODEL, _frame, _row

from enrs.identity.matching import definition as d
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel
from enrs.identity.matching.rules import (
    PY_HELPERS,
    Comparison,
    Derived,
    Level,
    PyRenderer,
    either_null,
    else_level,
    eq,
    first,
    one_edit,
    prefix_either,
    render_sql,
    same,
    split,
    words,
)
from enrs.identity.matching.scorer import (
    StoredTraits,
    compile_features,
    compile_scorer,
    row_of,
    scorer_source,
)
from enrs.identity.matching.sql_levels import SQL_LEVELS, SqlLevel, feature_sql, sql_levels
from enrs.identity.registry_frame import load_rows

# A father and his son: same names, same birthday, 30 years apart (a one-digit typo of the
# year, which the definition does not count as one when the years are 15 or more apart).
FATHER = ("DUPONT", None, ("Jean",), date(1958, 4, 12), "M", "97209", "97200")
SON = ("DUPONT", None, ("Jean",), date(1988, 4, 12), "M", "97209", "97200")


def _without_the_years_apart_rule() -> tuple[Comparison, ...]:
    """The definition with birth_date's ``one_digit`` level broken: any one-digit typo."""
    broken = tuple(
        dataclasses.replace(
            lvl,
            condition=one_edit(d.birth_ymd.l, d.birth_ymd.r)
            | (eq(d.YEARS_APART, 1) & same(d.birth_month) & same(d.birth_day)),
        )
        if lvl.label == "one_digit"
        else lvl
        for lvl in d.BIRTH_DATE.levels
    )
    birth_date = dataclasses.replace(d.BIRTH_DATE, levels=broken)
    return tuple(birth_date if c is d.BIRTH_DATE else c for c in d.COMPARISONS)


def _sql_labels(con: duckdb.DuckDBPyConnection, levels: tuple[SqlLevel, ...]) -> list[str]:
    """Each pair of the frame ``identities`` (l.id < r.id) labelled by ``levels``, as Splink
    does: the first condition that holds, over the columns suffixed ``_l`` and ``_r``."""
    cols = [row[0] for row in con.execute("DESCRIBE identities").fetchall()]
    sides = ", ".join(f"l.{c} AS {c}_l, r.{c} AS {c}_r" for c in cols)
    *tests, last = levels
    case = " ".join(f"WHEN {lvl.condition} THEN '{lvl.label}'" for lvl in tests)
    sql = (
        f"SELECT CASE {case} ELSE '{last.label}' END FROM (SELECT {sides} "  # noqa: S608
        "FROM identities l JOIN identities r ON l.id < r.id) ORDER BY id_l, id_r"
    )
    return [row[0] for row in con.execute(sql).fetchall()]


def test_breaking_a_level_in_the_definition_changes_both_renderings() -> None:
    (father_row, father), (son_row, son) = _row(1, *FATHER), _row(2, *SON)
    con = duckdb.connect()
    load_rows(con, [father_row, son_row])
    broken = _without_the_years_apart_rule()

    def python(comparisons: tuple[Comparison, ...]) -> str:
        score = compile_scorer(MODEL, comparisons)(row_of(father))(row_of(son))
        return score.levels["birth_date"]

    assert python(d.COMPARISONS) == "else"
    assert _sql_labels(con, SQL_LEVELS["birth_date"]) == ["else"]
    assert python(broken) == "one_digit"
    assert _sql_labels(con, sql_levels(broken)["birth_date"]) == ["one_digit"]
    # and the real-time matcher is the definition's: the pair is not linked
    assert EmbeddedMatcher(MODEL).score(father, son).levels["birth_date"] == "else"
    con.close()


def test_the_swap_is_one_rule_read_by_both_name_comparisons() -> None:
    """``SWAPPED`` appears in the levels of ``name`` and ``given``, in Python and in SQL."""
    (a_row, a), (b_row, b) = (
        _row(1, "DUPONT", None, ("Jean",), date(1950, 3, 2), "M", None, None),
        _row(2, "JEAN", None, ("Dupont",), date(1950, 3, 2), "M", None, None),
    )
    con = duckdb.connect()
    load_rows(con, [a_row, b_row])
    python = EmbeddedMatcher(MODEL).score(a, b).levels
    assert (python["name"], python["given"]) == ("swapped", "swapped")
    assert _sql_labels(con, SQL_LEVELS["name"]) == _sql_labels(con, SQL_LEVELS["given"])
    assert _sql_labels(con, SQL_LEVELS["name"]) == ["swapped"]
    source = scorer_source(MODEL)
    # one rule, rendered once per comparison that reads it
    swap = "(l_first_given == r_birth_name) and (l_birth_name == r_first_given)"
    assert source.count(swap) == 2
    con.close()


def _frame_rows() -> list[tuple[Any, ...]]:
    rows, _ = _frame()
    extra = [  # features at their edges
        ("MARTIN", "", ("Jean", "", "Paul"), date(1950, 12, 12), "M", "2A004", "20000"),
        ("MARTIN", "", ("",), date(1950, 1, 1), "", "97101", ""),
        ("MARTIN", "", (), date(987, 4, 12), "F", "", None),
        ("", "", ("Anne Marie", "Rose"), None, "U", None, None),
    ]
    return rows + [_row(len(rows) + k, *case)[0] for k, case in enumerate(extra, start=1)]


def test_features_in_python_are_the_frame_s_in_duckdb() -> None:
    """Every per-identity feature, on every identity: Python (what the scorer computes for
    the probed identity) and DuckDB (the frame's columns, or the SQL a level inlines)."""
    rows = _frame_rows()
    con = duckdb.connect()
    load_rows(con, rows)
    select = ", ".join(f"{feature_sql(f)} AS {f.name}" for f in d.FEATURES)
    in_sql = {
        row[0]: dict(zip([f.name for f in d.FEATURES], row[1:], strict=True))
        for row in con.execute(f"SELECT id, {select} FROM identities").fetchall()  # noqa: S608
    }
    frame = {f.name for f in d.FEATURES if not isinstance(f, Derived) or f.frame}
    cols = [r[0] for r in con.execute("DESCRIBE identities").fetchall()]
    assert frame <= set(cols)
    in_python = compile_features(d.FEATURES)
    for row in rows:
        python = in_python(StoredTraits(*row[2 : 2 + len(d.COLUMNS)]))
        assert python == in_sql[row[0]], row
    assert in_sql[len(rows)]["birth_ymd"] is None
    assert in_sql[len(rows) - 1]["birth_ymd"] == "09870412"
    con.close()


def test_a_level_may_read_a_date_only_after_its_null_level() -> None:
    with pytest.raises(ValueError, match="birth_date"):
        Comparison("year", "", (Level("exact", same(d.birth_year)), else_level()))
    Comparison(
        "year",
        "",
        (
            Level("null", either_null(d.birth_date), null=True),
            Level("exact", same(d.birth_year)),
            else_level(),
        ),
    )


def test_a_model_whose_levels_differ_from_the_definition_is_refused() -> None:
    """At load time, not when a pair first reaches the missing level."""
    data = json.loads(DEFAULT_MODEL.read_text())
    sex = next(c for c in data["comparisons"] if c["name"] == "sex")
    sex["levels"] = [lvl for lvl in sex["levels"] if lvl["label"] != "null"]
    with pytest.raises(ValueError, match="sex"):
        EmbeddedMatcher(MatchModel.from_dict(data))
    data = json.loads(DEFAULT_MODEL.read_text())
    data["comparisons"].append({"name": "fax", "levels": [{"label": "else", "m": 1, "u": 1}]})
    with pytest.raises(ValueError, match="fax"):
        EmbeddedMatcher(MatchModel.from_dict(data))


def test_an_expression_read_twice_by_an_operation_is_computed_once_in_python() -> None:
    """The Python rendering binds a compound argument an operation reads twice to a
    temporary; the values are DuckDB's."""
    exprs = [
        first(split(d.given, "|")),  # read twice, in a conditional: bound before
        prefix_either(words(d.given), words(d.birth_name)),  # bound at its first reading
    ]
    py = PyRenderer(lambda f, side: f"{side}_{f.name}")
    con = duckdb.connect()
    for given, name in [("JEAN|PAUL", "JEAN"), ("", "JEAN PAUL"), ("JEAN PAUL", "JEAN  PAUL")]:
        values = {"l_given": given, "l_birth_name": name}
        sql = ", ".join(
            render_sql(e, lambda f, side: {"given": "$1", "birth_name": "$2"}[f.name], None)
            for e in exprs
        )
        in_sql = con.execute(f"SELECT {sql}", [given, name]).fetchone()
        rendered = [py.render(e, "l") for e in exprs]
        in_python = tuple(eval(r, dict(PY_HELPERS), values) for r in rendered)  # noqa: S307
        assert in_python == in_sql, (given, name)
    assert ":=" in py.render(exprs[0], "l") and ":=" in py.render(exprs[1], "l")
    con.close()


def test_a_tiny_estimate_is_kept_not_rounded_to_zero() -> None:
    """Splink may estimate a rare level's u at 1e-12: the trained model keeps it (a model
    with u = 0 could not be loaded), at six significant digits."""
    from enrs.identity.matching.splink_model import trained_model

    base = json.loads(DEFAULT_MODEL.read_text())
    trained = {
        "comparisons": [
            {
                "output_column_name": "birth_date",
                "comparison_levels": [
                    {"label_for_charts": "one_part", "m_probability": 0.0123456789,
                     "u_probability": 1.23456789e-12},
                ],
            }
        ]
    }  # fmt: skip
    model, _ = trained_model(base, trained, version="t", training={})
    (level,) = [
        lvl
        for c in model["comparisons"]
        if c["name"] == "birth_date"
        for lvl in c["levels"]
        if lvl["label"] == "one_part"
    ]
    assert (level["m"], level["u"]) == (0.0123457, 1.23457e-12)
