"""The directory extraction generator (``bench/directory_data.py``) writes the real formats.

Every file is read back here with the standard library (``csv``, plain splits) against the
column lists of ``shared/reference/directory.md`` and the public sources the generator names,
never with the generator's own code; real FINESS lines (``data/``) check the reading itself.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from bench import directory_data
from pyproj import Transformer

from enrs.directory.identifiers import valid_finess, valid_rpps

DATA = Path(__file__).parent / "data"
SIZE = 2000

# directory.md: the 52 columns of PS_LibreAcces_Personne_activite, in this order.
ACTIVITY = """Type d'identifiant PP|Identifiant PP|Identification nationale PP|
Code civilité d'exercice|Libellé civilité d'exercice|Code civilité|Libellé civilité|
Nom d'exercice|Prénom d'exercice|
Code profession|Libellé profession|Code catégorie professionnelle|
Libellé catégorie professionnelle|Code type savoir-faire|Libellé type savoir-faire|
Code savoir-faire|Libellé savoir-faire|Code mode exercice|Libellé mode exercice|
Numéro SIRET site|Numéro SIREN site|Numéro FINESS site|Numéro FINESS établissement juridique|
Identifiant technique de la structure|Raison sociale site|Enseigne commerciale site|
Complément destinataire (coord. structure)|Complément point géographique (coord. structure)|
Numéro Voie (coord. structure)|Indice répétition voie (coord. structure)|
Code type de voie (coord. structure)|Libellé type de voie (coord. structure)|
Libellé Voie (coord. structure)|Mention distribution (coord. structure)|
Bureau cedex (coord. structure)|Code postal (coord. structure)|Code commune (coord. structure)|
Libellé commune (coord. structure)|Code pays (coord. structure)|Libellé pays (coord. structure)|
Téléphone (coord. structure)|Téléphone 2 (coord. structure)|Télécopie (coord. structure)|
Adresse e-mail (coord. structure)|Code Département (structure)|
Libellé Département (structure)|Ancien identifiant de la structure|Autorité d'enregistrement|
Code secteur d'activité|Libellé secteur d'activité|Code section tableau pharmaciens|
Libellé section tableau pharmaciens""".replace("|\n", "|").split("|")
SAVOIR_FAIRE = [
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code profession",
    "Libellé profession",
    "Code catégorie professionnelle",
    "Libellé catégorie professionnelle",
    "Code type savoir-faire",
    "Libellé type savoir-faire",
    "Code savoir-faire",
    "Libellé savoir-faire",
]
DIPLOMA = [
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Code type diplôme obtenu",
    "Libellé type diplôme obtenu",
    "Code diplôme obtenu",
    "Libellé diplôme obtenu",
    "Code type autorisation",
    "Libellé type autorisation",
    "Code discipline autorisation",
    "Libellé discipline autorisation",
]
MSSANTE = [
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
]
COL = {name: i for i, name in enumerate(ACTIVITY)}
# Columns of the activity itself (not of the professional): what a modified activity changes.
ACTIVITY_PART = slice(COL["Code profession"], None)
OVERSEAS_EPSG = {"971": "5490", "972": "5490", "973": "2972", "974": "2975", "976": "4471"}
FINESS_OVERSEAS = {"9A": "971", "9B": "972", "9C": "973", "9D": "974", "9F": "976"}


def pipe_rows(path: Path, width: int, encoding: str = "utf-8") -> tuple[list[str], list[list[str]]]:
    """Header and rows of a ``|`` file whose every line ends with ``|`` and has ``width``
    fields; fails on any other line."""
    text = path.read_bytes().decode(encoding)
    assert text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="|", quoting=csv.QUOTE_NONE))
    for n, row in enumerate(rows, 1):
        assert len(row) == width + 1 and row[-1] == "", f"{path.name} line {n}: {row}"
    return rows[0][:-1], [row[:-1] for row in rows[1:]]


def finess_rows(path: Path) -> tuple[str, list[list[str]]]:
    text = path.read_bytes().decode("cp1252")  # strict: fails on a byte cp1252 does not have
    first, _, rest = text.partition("\n")
    return first, list(csv.reader(io.StringIO(rest, newline=""), delimiter=";"))


def files(man: directory_data.Manifest) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(man.outdir.iterdir())}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> directory_data.Manifest:
    return directory_data.generate(tmp_path_factory.mktemp("first"), SIZE, seed=1)


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> directory_data.Manifest:
    out = tmp_path_factory.mktemp("second")
    return directory_data.generate(out, SIZE, seed=2, extraction_of=1, changes=0.1)


def test_the_reading_here_reads_real_finess_lines() -> None:
    first_line, rows = finess_rows(DATA / "finess_excerpt_cs1100502.csv")
    assert re.fullmatch(r"finess;etalab;\d+;\d{4}-\d{2}-\d{2}", first_line)
    assert [len(r) for r in rows] == [32] * 14
    assert all(valid_finess(r[1]) and valid_finess(r[2]) for r in rows)
    assert rows[9][3] == 'LIEU DE VIE "MAVOUNA MEMA 1"'  # a quoted field


def test_activity_file_has_the_52_columns_and_valid_identifiers(
    first: directory_data.Manifest,
) -> None:
    path = first.paths["activities"]
    assert re.fullmatch(r"PS_LibreAcces_Personne_activite_\d{12}\.txt", path.name)
    header, rows = pipe_rows(path, 52)
    assert header == ACTIVITY
    assert len(rows) == SIZE == first.activities
    for row in rows:
        kind, number, national = row[0], row[1], row[2]
        assert national == kind + number
        if kind == "8":
            assert valid_rpps(number), row
        else:
            assert kind == "0" and len(number) == 9, row
        finess = row[COL["Numéro FINESS site"]]
        assert not finess or valid_finess(finess), row
        ej = row[COL["Numéro FINESS établissement juridique"]]
        assert not ej or valid_finess(ej), row
    # One line per activity, a key per line: the same structure twice for one professional
    # would be two lines of one activity.
    keys = Counter((r[2], r[COL["Identifiant technique de la structure"]]) for r in rows)
    assert max(keys.values()) == 1


def test_activity_file_has_realistic_proportions(first: directory_data.Manifest) -> None:
    _, rows = pipe_rows(first.paths["activities"], 52)
    per_professional = Counter(r[2] for r in rows)
    assert len(per_professional) == first.professionals
    assert 1.2 < SIZE / len(per_professional) < 1.45
    assert max(per_professional.values()) >= 3
    professions = Counter(r[COL["Code profession"]] for r in rows)
    assert {code for code, _ in professions.most_common(2)} == {"60", "10"}  # nurses, doctors
    labels = {r[COL["Code profession"]]: r[COL["Libellé profession"]] for r in rows}
    assert labels["10"] == "Médecin" and labels["60"] == "Infirmier"
    assert labels.get("96", "Psychomotricien") == "Psychomotricien"  # TRE_G15
    departments = Counter(r[COL["Code Département (structure)"]] for r in rows)
    overseas = sum(n for code, n in departments.items() if code.startswith("97"))
    assert 0 < overseas < 0.1 * SIZE
    site = slice(COL["Numéro SIRET site"], COL["Autorité d'enregistrement"])
    empty = [r for r in rows if not any(r[site])]
    assert 0.02 * SIZE < len(empty) < 0.08 * SIZE
    assert all(per_professional[r[2]] == 1 for r in empty)
    assert len(empty) == first.activities_without_structure
    assert {"8", "0"} <= {r[0] for r in rows}
    generalists = {r[COL["Code savoir-faire"]] for r in rows if r[COL["Code profession"]] == "10"}
    assert {"SM26", "SM54"} <= generalists


def test_activities_name_establishments_of_the_finess_file(first: directory_data.Manifest) -> None:
    _, rows = pipe_rows(first.paths["activities"], 52)
    _, finess = finess_rows(first.paths["finess"])
    establishments = {r[1] for r in finess if r[0] == "structureet"}
    named = [r[COL["Numéro FINESS site"]] for r in rows if r[COL["Numéro FINESS site"]]]
    assert len(named) > 0.3 * SIZE
    assert set(named) <= establishments
    assert len(named) == first.activities_with_finess


def test_finess_file_is_cp1252_with_a_geolocalisation_per_establishment(
    first: directory_data.Manifest,
) -> None:
    path = first.paths["finess"]
    assert re.fullmatch(r"etalab-cs1100507-stock-\d{8}-\d{4}\.csv", path.name)
    first_line, rows = finess_rows(path)
    assert re.fullmatch(r"finess;etalab;\d+;\d{4}-\d{2}-\d{2}", first_line)
    structures = [r for r in rows if r[0] == "structureet"]
    geos = {r[1]: r for r in rows if r[0] == "geolocalisation"}
    assert len(structures) + len(geos) == len(rows)
    assert len(structures) == first.establishments == len(geos)
    assert rows.index(structures[-1]) < min(rows.index(g) for g in geos.values())
    data = path.read_bytes()
    assert b";\n" in data  # structureet lines end with the empty numuai
    assert "é".encode("cp1252") in data and "é".encode() not in data  # not UTF-8
    to_wgs84 = {
        epsg: Transformer.from_crs(int(epsg), 4326, always_xy=True)
        for epsg in ("2154", *OVERSEAS_EPSG.values())
    }
    for row in structures:
        assert len(row) == 32, row
        assert valid_finess(row[1]) and valid_finess(row[2]), row
        department = FINESS_OVERSEAS.get(row[13], row[13])
        geo = geos[row[1]]
        assert len(geo) == 6, geo
        epsg = OVERSEAS_EPSG.get(department, "2154")
        assert f"EPSG:{epsg} " in geo[4], geo
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", geo[5])
        assert row[28] <= row[30] <= first_line[-10:], row  # opened, updated, extraction date
        lon, lat = to_wgs84[epsg].transform(float(geo[2]), float(geo[3]))
        if department.startswith("97"):
            assert row[1][:2] in ("97", "98") and row[13] in FINESS_OVERSEAS, row
            assert -22 < lat < 17 and (-62 < lon < -51 or 44 < lon < 56), (row, lat, lon)
        else:
            assert 41 < lat < 51.5 and -5.5 < lon < 10, (row, lat, lon)
        assert re.fullmatch(r"\d{5} [A-Z0-9' -]+", row[15]), row[15]  # "CP CITY"
        postal = row[15][:5]
        assert postal.startswith(
            department
            if department[0] == "9"
            else department[:2].replace("2A", "20").replace("2B", "20")
        ), row


def test_savoir_faire_diploma_and_mssante_files(first: directory_data.Manifest) -> None:
    _, activities = pipe_rows(first.paths["activities"], 52)
    professionals = {r[2] for r in activities}
    header, sf = pipe_rows(first.paths["savoir_faire"], 13)
    assert header == SAVOIR_FAIRE
    assert {r[2] for r in sf} <= professionals
    assert 0.35 < len(sf) / len(professionals) < 0.8
    assert {"S", "C"} <= {r[9] for r in sf}
    header, diplomas = pipe_rows(first.paths["diplomas"], 13)
    assert header == DIPLOMA
    assert {r[2] for r in diplomas} <= professionals
    assert 0.8 < len(diplomas) / len(professionals) < 1.2
    header, mss = pipe_rows(first.paths["mssante"], 31)
    assert header == MSSANTE
    kinds = Counter(r[0] for r in mss)
    assert set(kinds) == {"PER", "ORG", "APP"}
    assert 0.3 < kinds["PER"] / len(professionals) < 0.7
    assert {r[4] for r in mss if r[0] == "PER"} <= professionals
    addresses = [r[1] for r in mss]
    assert len(set(addresses)) == len(addresses)
    assert all(re.fullmatch(r"[a-z0-9.-]+@[a-z0-9.-]+\.mssante\.fr", a) for a in addresses)
    assert len(mss) == first.mssante_lines
    assert (len(sf), len(diplomas)) == (first.savoir_faire_lines, first.diploma_lines)


def test_same_seed_same_bytes_other_seed_other_bytes(
    tmp_path: Path, first: directory_data.Manifest
) -> None:
    again = directory_data.generate(tmp_path / "again", SIZE, seed=1)
    assert files(again) == files(first)
    other = directory_data.generate(tmp_path / "other", SIZE, seed=3)
    assert other.paths["activities"].read_bytes() != first.paths["activities"].read_bytes()
    assert other.paths["finess"].read_bytes() != first.paths["finess"].read_bytes()


def test_next_extraction_counts_match_a_comparison_of_the_files(
    first: directory_data.Manifest, second: directory_data.Manifest
) -> None:
    diff = second.diff
    assert diff is not None and first.diff is None
    _, before = pipe_rows(first.paths["activities"], 52)
    _, after = pipe_rows(second.paths["activities"], 52)
    lines_before = {"|".join(r) for r in before}
    lines_after = {"|".join(r) for r in after}
    assert len(lines_before) == len(before) and len(lines_after) == len(after)
    people_before: dict[str, set[str]] = defaultdict(set)
    people_after: dict[str, set[str]] = defaultdict(set)
    for rows, people in ((before, people_before), (after, people_after)):
        for r in rows:
            people[r[2]].add("|".join(r))
    both = people_before.keys() & people_after.keys()
    assert diff.professionals_new == len(people_after.keys() - people_before.keys()) > 0
    assert diff.professionals_gone == len(people_before.keys() - people_after.keys()) > 0
    changed = {p for p in both if people_before[p] != people_after[p]}
    assert diff.professionals_changed == len(changed) > 0
    assert diff.professionals_unchanged == len(both) - len(changed)
    assert sum(diff.changes_by_kind.values()) == diff.professionals_changed
    assert diff.activity_lines_added == len(lines_after - lines_before)
    assert diff.activity_lines_removed == len(lines_before - lines_after)

    def activities(rows: list[list[str]]) -> dict[tuple[str, str], tuple[str, ...]]:
        key = COL["Identifiant technique de la structure"]
        return {(r[2], r[key]): tuple(r[ACTIVITY_PART]) for r in rows}

    a, b = activities(before), activities(after)
    assert diff.activities_added == len(b.keys() - a.keys()) > 0
    assert diff.activities_removed == len(a.keys() - b.keys()) > 0
    assert diff.activities_modified == sum(a[k] != b[k] for k in a.keys() & b.keys()) > 0
    assert second.activities == len(after)
    # The FINESS file is the same but for its date.
    _, finess_before = finess_rows(first.paths["finess"])
    _, finess_after = finess_rows(second.paths["finess"])
    assert [r[:-1] for r in finess_before if r[0] == "structureet"] == [
        r[:-1] for r in finess_after if r[0] == "structureet"
    ]


def test_bad_lines_have_too_few_columns_where_said(tmp_path: Path) -> None:
    man = directory_data.generate(tmp_path, SIZE, seed=4, bad_lines=3)
    assert len(man.bad_line_numbers) == 3
    lines = man.paths["activities"].read_text(encoding="utf-8").splitlines()
    short = [n for n, line in enumerate(lines, 1) if len(line.split("|")) != 53]
    assert short == man.bad_line_numbers
    assert all(len(lines[n - 1].split("|")) < 30 for n in short)
    assert man.activities == SIZE - 3


def test_truncate_cuts_a_line_without_final_newline(tmp_path: Path) -> None:
    man = directory_data.generate(tmp_path, SIZE, seed=4, truncate=True)
    data = man.paths["activities"].read_bytes()
    assert not data.endswith(b"\n")
    lines = data.decode("utf-8").split("\n")
    assert len(lines) == man.truncated_line
    assert len(lines) < SIZE / 2 + 10
    assert 1 < len(lines[-1].split("|")) < 53
    assert all(len(line.split("|")) == 53 for line in lines[:-1])


def test_wrong_headers(tmp_path: Path) -> None:
    renamed = directory_data.generate(tmp_path / "r", SIZE, seed=4, wrong_header="renamed")
    header, _ = pipe_rows(renamed.paths["activities"], 52)
    assert "Numéro FINESS site" not in header and "Numero FINESS site" in header
    assert [h for h in header if h != "Numero FINESS site"] == [
        h for h in ACTIVITY if h != "Numéro FINESS site"
    ]
    missing = directory_data.generate(tmp_path / "m", SIZE, seed=4, wrong_header="missing")
    header, rows = pipe_rows(missing.paths["activities"], 51)
    assert header == [h for h in ACTIVITY if h != "Code profession"]
    assert len(rows) == SIZE


def test_zips_hold_the_files(tmp_path: Path) -> None:
    man = directory_data.generate(tmp_path / "z", SIZE, seed=4, zip_files=True)
    assert re.fullmatch(r"PS_LibreAcces_\d{12}\.zip", man.paths["ps_zip"].name)
    with zipfile.ZipFile(man.paths["ps_zip"]) as z:
        assert z.testzip() is None
        names = sorted(z.namelist())
        assert names == sorted(
            man.paths[k].name for k in ("activities", "savoir_faire", "diplomas")
        )
        for key in ("activities", "savoir_faire", "diplomas"):
            assert z.read(man.paths[key].name) == man.paths[key].read_bytes()
    with zipfile.ZipFile(man.paths["mssante_zip"]) as z:
        assert z.namelist() == [man.paths["mssante"].name]
    only = directory_data.generate(tmp_path / "o", SIZE, seed=4, zip_only=True)
    assert not any(p.suffix == ".txt" for p in only.outdir.iterdir())
    again = directory_data.generate(tmp_path / "z2", SIZE, seed=4, zip_files=True)
    assert again.paths["ps_zip"].read_bytes() == man.paths["ps_zip"].read_bytes()


def test_latin1_extraction(tmp_path: Path) -> None:
    man = directory_data.generate(tmp_path, SIZE, seed=4, encoding="latin-1")
    data = man.paths["activities"].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    header, rows = pipe_rows(man.paths["activities"], 52, encoding="latin-1")
    assert header == ACTIVITY
    assert len(rows) == SIZE
    pipe_rows(man.paths["savoir_faire"], 13, encoding="latin-1")
    pipe_rows(man.paths["mssante"], 31)  # MSSanté stays UTF-8


def test_command_line_prints_the_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert directory_data.main([str(out), "--activities", "500", "--bad-lines", "2"]) == 0
    printed = capsys.readouterr().out
    assert "activity lines 498" in printed and "bad lines (1-based):" in printed


def test_newer_role_columns_and_older_coordinate_sources(tmp_path: Path) -> None:
    man = directory_data.generate(tmp_path, SIZE, seed=4, role_columns=True, geo_style="legacy")
    header, rows = pipe_rows(man.paths["activities"], 56)
    assert header == [
        *ACTIVITY,
        "Code rôle",
        "Libellé rôle",
        "Code genre activité",
        "Libellé genre activité",
    ]
    assert len(rows) == SIZE
    _, finess = finess_rows(man.paths["finess"])
    sources = Counter(r[4].rsplit(",", 1)[1] for r in finess if r[0] == "geolocalisation")
    assert "LAMBERT_93" in sources and set(sources) <= {
        "LAMBERT_93",
        "UTM_N20",
        "UTM_N22",
        "UTM_S40",
        "UTM_S38",
    }
