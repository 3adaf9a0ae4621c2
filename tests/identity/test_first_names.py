"""The French first-name frequencies shipped as package data (INSEE, « Fichier des prénoms »)."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest

from enrs.identity.matching import first_names
from enrs.identity.traits import normalize_name

REAL_NAMES = ["MATHYS", "MATHIS", "NICOLAS", "LEA", "LENA", "JEAN PIERRE", "MARIE", "MATHYSS"]
# Typos a facility makes, checked absent from the INSEE file (MATHYSS is not: 157 births).
TYPOS = ["INCOLAS", "NCIOLAS", "NICOALS", "MATHYSSS", "MTAHIS", "LNEA", "JEAN PIERE", "ZZZZZZ"]


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_first_names_are_known(name: str) -> None:
    assert first_names.count(name) > 0
    assert 0.0 < first_names.frequency(name) < 1.0


@pytest.mark.parametrize("name", TYPOS)
def test_typos_are_unknown(name: str) -> None:
    assert first_names.count(name) == 0
    assert first_names.frequency(name) == 0.0


def test_counts_match_the_insee_file() -> None:
    """Births 1900–2021, both sexes, accented and plain spellings merged (nat2021.csv)."""
    assert first_names.count("MATHIS") == 85_438
    assert first_names.count("MATHYS") == 27_826
    assert first_names.count("NICOLAS") == 405_697
    assert first_names.count("LEA") == 211_322  # LÉA 204 365 + LEA 6 933 + LÈA 24
    assert first_names.count("MARIE") == 2_259_123


def test_common_names_weigh_less_than_rare_ones() -> None:
    assert first_names.count("NICOLAS") > 10 * first_names.count("MATHYS")
    assert first_names.frequency("MATHIS") > first_names.frequency("MATHYS")
    assert first_names.frequency("MARIE") > first_names.frequency("NICOLAS")
    assert 0.02 < first_names.frequency("MARIE") < 0.04


def test_names_are_normalised_before_lookup() -> None:
    assert first_names.count("Léna") == first_names.count("LENA") == first_names.count(" lena ")
    assert first_names.count("Léna") == 66_618  # LÉNA, LENA, LÈNA and LËNA merged
    assert first_names.count("jean-pierre") == first_names.count("JEAN PIERRE") > 100_000
    assert first_names.count("Jean-Pierre") == first_names.count("jean  pierre")
    assert first_names.count("") == 0


def test_compound_name_is_looked_up_whole() -> None:
    """``JEAN PIERRE`` is its own entry: not the sum, nor the count, of ``JEAN`` and ``PIERRE``."""
    whole = first_names.count("JEAN PIERRE")
    assert 0 < whole < first_names.count("JEAN")
    assert whole != first_names.count("PIERRE")


def test_total_is_the_sum_of_the_file() -> None:
    total = first_names.total()
    assert 80_000_000 < total < 100_000_000
    assert total == 85_705_195
    assert f"total births {total}" in first_names.source()
    assert "INSEE" in first_names.source()
    assert "Licence Ouverte" in first_names.source()
    assert sum(first_names.frequency(n) for n in ("MARIE", "JEAN", "PIERRE")) < 1.0


def test_data_file_layout() -> None:
    """Sorted ``NAME<TAB>COUNT`` lines, normalised keys, no INSEE placeholder."""
    raw = resources.files("enrs.identity.matching").joinpath("first_names_fr.tsv.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    assert lines[0].startswith("# source: INSEE")
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    names = [name for name, _ in rows]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert 30_000 < len(names) < 40_000
    assert all(int(births) >= 20 for _, births in rows)
    assert all(name == normalize_name(name) for name in names)  # LÆTITIA keeps its Æ
    assert not any("_PRENOMS_RARES" in name or "-" in name for name in names)
