"""The SQL levels Splink runs (bulk jobs) and the Python scorer real-time matching runs, both
rendered from ``matching/definition.py``, must agree pair by pair: same label for every
comparison, same total weight."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date
from typing import Any

import duckdb
import pytest
from bench.identity_data import generate
from splink import DuckDBAPI, Linker

from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.scorer import row_of
from enrs.identity.matching.splink_model import gamma_labels, splink_settings
from enrs.identity.matching.sql_levels import SQL_LEVELS
from enrs.identity.registry_frame import load_rows
from enrs.identity.repository import Candidate
from enrs.identity.traits import (
    normalize_address,
    normalize_city,
    normalize_email,
    normalize_name,
    normalize_phone,
)

MODEL = MatchModel.load()


def _row(
    i: int,
    name: str,
    used: str | None,
    given: tuple[str, ...],
    born: date | None,
    sex: str,
    place: str | None,
    postal: str | None,
    ins: str | None = None,
    address: str | None = None,
    city: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    order: str = "",
) -> tuple[tuple[Any, ...], Traits]:
    n_given = tuple(normalize_name(g) for g in given)
    n_name, n_used = normalize_name(name), normalize_name(used)
    t = Traits(
        n_name,
        n_used,
        n_given,
        born,
        sex,
        place,
        postal,
        ins,
        address=normalize_address(address),
        city=normalize_city(city),
        phone=normalize_phone(phone),
        email=normalize_email(email),
        birth_order=order,
    )
    row = (i, i, *row_of(t), ins, "")  # the frame's columns: the definition's, in order
    return row, t


def _frame() -> tuple[list[tuple[Any, ...]], dict[int, Traits]]:
    records = generate(250, seed=5)  # persons: ~520 records
    rows, traits = [], {}
    for i, r in enumerate(records, start=1):
        row, t = _row(
            i,
            r.birth_name,
            r.used_name,
            r.given_names,
            r.birth_date,
            r.sex,
            r.birth_place,
            r.postal_code,
            r.ins,
            r.address_line,
            r.city,
            r.phone,
            f"{normalize_name(r.given_names[0]).lower()}.{r.person_id}@example.org"
            if r.person_id % 3 == 0
            else None,
        )
        rows.append(row)
        traits[i] = t
    # Cases the generator makes rarely: compound names, missing traits, unknown sex.
    extra = [
        ("DUPONT", None, ("Jean",), date(1950, 3, 2), "M", "97209", "97200"),
        ("DUPONT-MARTIN", None, ("Jean", "Paul"), date(1950, 3, 2), "M", "97209", ""),
        ("MARTIN DUPONT", "DUPONT", ("Jean Paul",), date(1950, 3, 2), "U", None, None),
        ("", None, ("Jean",), date(1950, 3, 2), "M", "2A004", "20000"),
        ("DUPONT", None, (), date(1950, 3, 2), "M", "2A041", "20000"),
        ("DUPONT", None, ("Paul", "Jean"), None, "F", "97101", "97100"),
        ("JEAN", None, ("Dupont",), date(1950, 2, 3), "M", "97209", "97200"),
        ("JEAN", None, ("Dupond",), date(1950, 2, 3), "M", "97209", "97200"),  # and a typo
        # the same address, one letter off; phones one digit apart; a phonetic-only name
        (
            "GAUTHIER",
            None,
            ("Philippe",),
            None,
            "M",
            None,
            "97200",
            None,
            "12 rue Schoelcher",
            "Fort-de-France",
            "0696 12 34 56",
            "p.gauthier@example.org",
        ),
        (
            "GOTIER",
            None,
            ("Filipe",),
            None,
            "M",
            None,
            "97200",
            None,
            "12 r Schoelche",
            "Fort de France",
            "+596 696 12 34 57",
            "P.Gauthier@example.org",
        ),
        # twins, told apart by their order of birth, and one of them again
        *(
            (
                "ROSIER",
                None,
                (given,),
                date(2015, 8, 21),
                "M",
                "97209",
                "97200",
                None,
                None,
                None,
                None,
                None,
                order,
            )
            for given, order in (("Mathis", "1"), ("Mathys", "2"), ("Mathis", "1"))
        ),
    ]
    for k, case in enumerate(extra, start=len(rows) + 1):
        row, t = _row(k, *case)
        rows.append(row)
        traits[k] = t
    return rows, traits


@pytest.fixture(scope="module")
def scored() -> list[tuple[dict[str, str], float, Traits, Traits]]:
    rows, traits = _frame()
    con = duckdb.connect()
    load_rows(con, rows)
    linker = Linker(
        DuckDBAPI(connection=con).register("identities"),
        splink_settings(MODEL, blocking_rules=("1 = 1",), gammas=True),  # every pair
        log_level=logging.ERROR,
    )
    predictions = linker.inference.predict(warning_mode="never")
    names = [c.name for c in MODEL.comparisons]
    labels = {n: gamma_labels(n) for n in names}
    cols = ", ".join(f"gamma_{n}" for n in names)
    out = []
    sql = f"SELECT id_l, id_r, match_weight, {cols} FROM {predictions.physical_name}"  # noqa: S608
    for id_l, id_r, weight, *gammas in con.execute(sql).fetchall():
        levels = {n: labels[n][g] for n, g in zip(names, gammas, strict=True)}
        out.append((levels, weight, traits[id_l], traits[id_r]))
    con.close()
    return out


def test_sql_and_python_levels_agree_pair_by_pair(
    scored: list[tuple[dict[str, str], float, Traits, Traits]],
) -> None:
    matcher = EmbeddedMatcher(MODEL)
    n = len(_frame()[0])
    assert len(scored) == n * (n - 1) // 2  # every pair, once
    for sql_levels, sql_weight, a, b in scored:
        python = matcher.score(a, b)
        assert sql_levels == python.levels, (a, b)
        assert sql_weight == pytest.approx(python.weight, abs=1e-9)


def _stored(t: Traits) -> Candidate:
    """``t`` as blocking reads it (id, patient and attributes do not enter scoring)."""
    return Candidate(0, 0, t.ins, "", *row_of(t))


def test_score_rows_scores_as_score_both_ways(
    scored: list[tuple[dict[str, str], float, Traits, Traits]],
) -> None:
    """``score_rows`` (real time: stored rows, the probe's side worked out once) gives what
    ``score`` (two ``Traits``) gives, on every pair."""
    matcher = EmbeddedMatcher(MODEL)
    seen = Counter()
    for _, _, a, b in scored:
        for x, y in ((a, b), (b, a)):
            (fast,) = matcher.score_rows(x, [_stored(y)])
            reference = matcher.score(x, y)
            assert fast.levels == reference.levels, (x, y)
            assert fast.weight == pytest.approx(reference.weight, abs=1e-9)
            assert fast.auto_link_allowed == reference.auto_link_allowed
            assert fast.strict_weight == pytest.approx(reference.strict_weight, abs=1e-9)
            seen.update(fast.levels.items())
    every = {(c.name, lvl.label) for c in MODEL.comparisons for lvl in c.levels}
    assert every - set(seen) == set()  # "swapped" included: the frame has a swapped pair


def test_the_pairs_reach_every_level(
    scored: list[tuple[dict[str, str], float, Traits, Traits]],
) -> None:
    seen = Counter((name, label) for levels, *_ in scored for name, label in levels.items())
    every = {(name, lvl.label) for name, levels in SQL_LEVELS.items() for lvl in levels}
    assert every - set(seen) == set()


def test_gamma_values_follow_splink_numbering() -> None:
    assert gamma_labels("sex") == {-1: "null", 1: "exact", 0: "else"}
    assert gamma_labels("name")[0] == "else" and gamma_labels("name")[7] == "exact"


def test_a_model_whose_levels_differ_from_sql_is_refused() -> None:
    data = MatchModel.load().__dict__
    comps = list(data["comparisons"])
    sex = comps[3]
    comps[3] = type(sex)(sex.name, sex.levels[:2])
    broken = MatchModel(**{**data, "comparisons": tuple(comps)})
    with pytest.raises(ValueError, match="sex"):
        splink_settings(broken)
