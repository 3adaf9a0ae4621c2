"""The labelled identity generator of the benches: ground truth, INS rules, errors, negatives."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from itertools import combinations
from pathlib import Path

import pytest
from rapidfuzz.distance import OSA
from stdnum.fr import nir

ROOT = str(Path(__file__).resolve().parents[2])  # bench/ is not installed: the repo root
if ROOT not in sys.path:  # is on sys.path under `python -m pytest`, not under `pytest`
    sys.path.insert(0, ROOT)

from bench.identity_data import (  # noqa: E402
    ERROR_TYPES,
    INS_SYSTEM,
    NEGATIVE_KINDS,
    SourceRecord,
    _pools,
    generate,
    main,
    make_nir,
    negative_pairs,
    nir_key,
    pairs_truth,
    strip_accents,
    summary,
)

TRAITS = ("birth_name", "used_name", "given_names", "birth_date", "sex", "birth_place")
SIDE = frozenset({"moved", "status_prov"})  # errors that leave the strict traits alone


@pytest.fixture(scope="module")
def records() -> list[SourceRecord]:
    return list(generate(5000, seed=7))


@pytest.fixture(scope="module")
def clean(records: list[SourceRecord]) -> dict[int, SourceRecord]:
    """The first record of each person: its true traits."""
    first: dict[int, SourceRecord] = {}
    for rec in records:
        first.setdefault(rec.person_id, rec)
    return first


def traits(rec: SourceRecord) -> tuple[object, ...]:
    return tuple(getattr(rec, name) for name in TRAITS)


def test_same_seed_same_records_other_seed_other_records() -> None:
    assert list(generate(300, seed=5)) == list(generate(300, seed=5))
    assert list(generate(300, seed=5)) != list(generate(300, seed=6))


def test_nir_key_matches_the_reference_vectors() -> None:
    for vector in ("295109912611193", "253072B07300470", "253072A07300443", "279035121518989"):
        assert nir_key(vector[:13]) == int(vector[13:])
    assert make_nir("F", date(1953, 7, 1), "2B073", 4) == "253072B07300470"


def test_every_ins_is_valid_and_consistent_with_the_traits(records: list[SourceRecord]) -> None:
    owner: dict[str, int] = {}
    for rec in records:
        assert (rec.ins is not None) == (rec.status in ("RECUP", "QUAL"))
        if rec.ins is None:
            assert rec.ins_system is None
            continue
        assert nir.is_valid(rec.ins) and len(rec.ins) == 15
        assert rec.ins_system == INS_SYSTEM and rec.birth_date and rec.birth_place
        assert rec.ins[0] == {"M": "1", "F": "2"}[rec.sex]
        assert rec.ins[1:5] == f"{rec.birth_date.year % 100:02d}{rec.birth_date.month:02d}"
        assert rec.ins[5:10] == rec.birth_place
        assert owner.setdefault(rec.ins, rec.person_id) == rec.person_id  # one INS, one person
    assert any(r.ins and r.ins[5:7] in ("2A", "2B") for r in records)
    assert any(r.ins and r.ins[5:8] in ("971", "972", "973", "974", "976") for r in records)
    assert any(r.ins and r.ins[5:7] == "99" for r in records)


def test_statuses_attributes_and_the_share_without_ins(records: list[SourceRecord]) -> None:
    assert {r.status for r in records} == {"PROV", "RECUP", "VALI", "QUAL"}
    for rec in records:
        assert rec.attributes <= {"DOUT", "FICT", "HOMA"}
        assert not {"DOUT", "FICT"} <= rec.attributes
        if rec.attributes & {"DOUT", "FICT"}:
            assert rec.status == "PROV"
    with_ins = {r.person_id for r in records if r.ins}
    assert 0.45 < len(with_ins) / len({r.person_id for r in records}) < 0.75
    assert not any(r.ins for r in generate(300, seed=1, no_ins_rate=1.0))


def test_first_record_is_clean_and_ins_records_are_exact(
    records: list[SourceRecord], clean: dict[int, SourceRecord]
) -> None:
    assert all(rec.errors == () for rec in clean.values())
    for rec in records:
        c = clean[rec.person_id]
        if rec.ins or set(rec.errors) <= SIDE:
            assert traits(rec) == traits(c)
        if "moved" not in rec.errors:
            assert (rec.address_line, rec.postal_code, rec.city) == (
                c.address_line,
                c.postal_code,
                c.city,
            )


def test_authority_and_ipp_are_unique(records: list[SourceRecord]) -> None:
    keys = [(r.authority, r.ipp) for r in records]
    assert len(set(keys)) == len(keys)
    assert 25 <= len({r.authority for r in records}) <= 30
    assert all(r.authority.startswith("1.2.250.1.71.4.2.2.") for r in records)


def _swap_hyphen(name: str) -> str:
    return name.replace("-", "\0").replace(" ", "-").replace("\0", " ")


def _neighbour(r: SourceRecord, c: SourceRecord) -> bool:
    assert c.birth_place is not None
    return r.birth_place in _pools().neighbours[c.birth_place]


Check = Callable[[SourceRecord, SourceRecord], bool]
CHECKS: dict[str, Check] = {
    "status_prov": lambda r, c: r.status == "PROV" and r.ins is None,
    "used_name_as_birth_name": lambda r, c: r.birth_name == c.used_name != c.birth_name,
    "used_name_missing": lambda r, c: r.used_name is None and c.used_name is not None,
    "birth_name_typo": lambda r, c: OSA.distance(r.birth_name, c.birth_name) == 1,
    "given_name_typo": lambda r, c: (
        OSA.distance(r.given_names[0], c.given_names[0]) == 1
        and r.given_names[1:] == c.given_names[1:]
    ),
    "given_first_only": lambda r, c: r.given_names == c.given_names[:1] != c.given_names,
    "given_truncated": lambda r, c: (
        r.given_names[0] == c.given_names[0].split("-")[0] and "-" in c.given_names[0]
    ),
    "given_order": lambda r, c: (
        r.given_names != c.given_names and sorted(r.given_names) == sorted(c.given_names)
    ),
    "hyphen_space": lambda r, c: r.birth_name == _swap_hyphen(c.birth_name) != c.birth_name,
    "apostrophe_dropped": lambda r, c: (
        "'" in c.birth_name
        and r.birth_name in (c.birth_name.replace("'", ""), c.birth_name.replace("'", " "))
    ),
    "names_swapped": lambda r, c: (
        (r.birth_name, r.given_names[0]) == (c.given_names[0], c.birth_name)
    ),
    "accents_dropped": lambda r, c: (
        r.birth_name == strip_accents(c.birth_name)
        and r.given_names == tuple(map(strip_accents, c.given_names))
        and (r.birth_name, r.given_names, r.used_name) != (c.birth_name, c.given_names, c.used_name)
    ),
    "case_changed": lambda r, c: (
        r.birth_name == c.birth_name.title()
        and r.given_names == tuple(g.title() for g in c.given_names)
    ),
    "day_month_swap": lambda r, c: (
        c.birth_date is not None
        and r.birth_date == date(c.birth_date.year, c.birth_date.day, c.birth_date.month)
        and c.birth_date.day != c.birth_date.month
    ),
    "date_jan1": lambda r, c: (
        c.birth_date is not None and r.birth_date == date(c.birth_date.year, 1, 1) != c.birth_date
    ),
    "year_off_by_one": lambda r, c: (
        r.birth_date is not None
        and c.birth_date is not None
        and abs(r.birth_date.year - c.birth_date.year) == 1
        and r.birth_date.month == c.birth_date.month
    ),
    "year_digit_typo": lambda r, c: (
        r.birth_date is not None
        and c.birth_date is not None
        and str(r.birth_date.year) == str(c.birth_date.year)[:2] + str(c.birth_date.year)[:1:-1]
        and r.birth_date.year != c.birth_date.year
    ),
    "birth_date_missing": lambda r, c: r.birth_date is None and c.birth_date is not None,
    "birth_place_missing": lambda r, c: r.birth_place is None and c.birth_place is not None,
    "birth_place_neighbour": lambda r, c: r.birth_place != c.birth_place and _neighbour(r, c),
    "sex_missing": lambda r, c: r.sex == "U" and c.sex in ("M", "F"),
    "sex_wrong": lambda r, c: {r.sex, c.sex} == {"M", "F"},
    "moved": lambda r, c: (r.address_line, r.postal_code) != (c.address_line, c.postal_code),
}


def test_every_error_type_has_a_check() -> None:
    assert set(CHECKS) == set(ERROR_TYPES)


@pytest.mark.parametrize("error", ERROR_TYPES)
def test_each_error_occurs_and_is_what_it_says(
    error: str, records: list[SourceRecord], clean: dict[int, SourceRecord]
) -> None:
    having = [r for r in records if error in r.errors]
    alone = [r for r in having if set(r.errors) - SIDE <= {error}]  # no other trait error
    assert len(having) >= 3 and alone, f"{error}: {len(having)} records, {len(alone)} alone"
    for rec in alone:
        c = clean[rec.person_id]
        assert rec is not c and CHECKS[error](rec, c), (error, rec, c)
        if error != "status_prov" and error not in SIDE:
            assert rec.status in ("PROV", "VALI") and rec.ins is None


def test_date_errors_and_place_and_sex_errors_are_exclusive(records: list[SourceRecord]) -> None:
    groups = (
        {"day_month_swap", "date_jan1", "year_off_by_one", "year_digit_typo"},
        {"birth_place_missing", "birth_place_neighbour"},
        {"sex_missing", "sex_wrong"},
    )
    for rec in records:
        for group in groups:
            assert len(group & set(rec.errors)) <= 1


Pair = tuple[SourceRecord, SourceRecord]


def _negatives(clean: dict[int, SourceRecord], kind: str) -> list[Pair]:
    """(the look-alike, the hard negative), from their clean first records."""
    found = [(clean[r.related_to or 0], r) for r in clean.values() if r.negative == kind]
    assert len(found) >= 10, f"only {len(found)} {kind}"
    return found


def test_twins(clean: dict[int, SourceRecord]) -> None:
    twins = _negatives(clean, "twin")
    for a, b in twins:
        assert a.person_id != b.person_id and b.related_to == a.person_id
        assert (a.birth_name, a.birth_date, a.birth_place) == (
            b.birth_name,
            b.birth_date,
            b.birth_place,
        )
        assert (a.address_line, a.postal_code) == (b.address_line, b.postal_code)
        assert a.given_names[0] != b.given_names[0]
    assert any(a.sex == b.sex for a, b in twins) and any(a.sex != b.sex for a, b in twins)
    similar = [(a, b) for a, b in twins if OSA.distance(a.given_names[0], b.given_names[0]) <= 2]
    assert similar  # LÉO / LÉA, LOUIS / LOUISE...


def test_homonyms(records: list[SourceRecord], clean: dict[int, SourceRecord]) -> None:
    for a, b in _negatives(clean, "homonym"):
        assert (a.birth_name, a.given_names[0], a.sex) == (b.birth_name, b.given_names[0], b.sex)
        assert a.birth_date != b.birth_date and a.birth_place != b.birth_place
    assert any("HOMA" in r.attributes for r in records if r.negative == "homonym")


def test_siblings(clean: dict[int, SourceRecord]) -> None:
    for a, b in _negatives(clean, "sibling"):
        assert a.birth_name == b.birth_name and a.address_line == b.address_line
        assert a.given_names[0] != b.given_names[0]
        assert a.birth_date and b.birth_date and abs((a.birth_date - b.birth_date).days) >= 400


def test_parent_and_child_with_the_same_first_name(clean: dict[int, SourceRecord]) -> None:
    for a, b in _negatives(clean, "parent_child"):
        assert (a.given_names[0], a.sex, a.address_line) == (
            b.given_names[0],
            b.sex,
            b.address_line,
        )
        assert b.birth_name in (a.birth_name, a.used_name)
        assert a.birth_date and b.birth_date
        assert 25 * 365 <= (b.birth_date - a.birth_date).days <= 40 * 365


def test_husband_and_wife(clean: dict[int, SourceRecord]) -> None:
    for a, b in _negatives(clean, "spouse"):
        assert (a.sex, b.sex) == ("M", "F") and b.used_name == a.birth_name != b.birth_name
        assert (a.address_line, a.city) == (b.address_line, b.city)


def test_dubious_and_fictive_identities(records: list[SourceRecord]) -> None:
    fictive = [r for r in records if "FICT" in r.attributes]
    assert fictive and any("DOUT" in r.attributes for r in records)
    assert any(r.birth_name in ("INCONNU", "X", "ANONYME", "PATIENT", "SOUS X") for r in fictive)
    per_person: dict[int, int] = defaultdict(int)
    for rec in fictive:
        per_person[rec.person_id] += 1
        assert rec.status == "PROV" and rec.ins is None
    assert set(per_person.values()) == {1}


def test_pairs_truth_and_negative_pairs() -> None:
    recs = list(generate(400, seed=3))
    expected = {
        (i, j)
        for i, j in combinations(range(len(recs)), 2)
        if recs[i].person_id == recs[j].person_id
    }
    assert pairs_truth(recs) == expected and expected
    negatives = negative_pairs(recs)
    assert set(negatives) == set(NEGATIVE_KINDS)
    for kind, pairs in negatives.items():
        for i, j in pairs:
            assert i < j and recs[i].person_id != recs[j].person_id
            assert kind in (recs[i].negative, recs[j].negative)


def test_summary_counts(records: list[SourceRecord]) -> None:
    stats = summary(records)
    assert stats["records"] == len(records)
    assert stats["persons"] == 5000 == len({r.person_id for r in records})
    assert all(stats["errors"][e] > 0 for e in ERROR_TYPES)
    assert all(stats["negatives"][k] > 0 for k in NEGATIVE_KINDS)
    assert sum(stats["status"].values()) == len(records)


def test_options() -> None:
    recs = list(generate(200, seed=2, records_per_person=(2, 2), fictive_rate=0.0))
    per_person: dict[int, int] = defaultdict(int)
    for rec in recs:
        per_person[rec.person_id] += 1
    assert set(per_person.values()) == {2}
    assert not any(r.errors for r in generate(300, seed=2, error_rate=0.0))
    assert not any(r.negative for r in generate(300, seed=2, negative_rates={}))
    with pytest.raises(ValueError, match="unknown"):
        list(generate(10, error_probs={"no_such_error": 0.5}))


def test_cli_writes_json_lines_and_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ids.jsonl"
    assert main(["--persons", "50", "--seed", "1", "--out", str(out), "--stats"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [r.as_dict() for r in generate(50, seed=1)]
    assert all(isinstance(r["attributes"], list) for r in rows)
    assert all(r["birth_date"] is None or date.fromisoformat(r["birth_date"]) for r in rows)
    assert json.loads(capsys.readouterr().err)["persons"] == 50
