"""``enrs directory import``: the Annuaire Santé activity file loaded, its next extraction
applied as a difference, and what a bad file does (nothing applied, or its bad lines
reported and the rest loaded). The files are written here line by line in the published
format (``../shared/reference/directory.md``); ``bench/directory_data.py`` makes large ones."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.live_server import enrs_command

from enrs.directory import imports
from enrs.directory import service as directory_service
from enrs.directory.identifiers import luhn_key
from enrs.directory.models import (
    Activity,
    Import,
    Mailbox,
    Professional,
    Qualification,
    Structure,
)
from enrs.directory.national import ACTIVITY_COLUMNS, FINESS_COLUMNS
from enrs.kit.db import Database


def rpps(n: int) -> str:
    body = f"1{n:09d}"
    return f"{body}{luhn_key(body)}"


def finess(n: int, department: str = "97") -> str:
    body = f"{department}{n:06d}"
    return f"{body}{luhn_key(body)}"


def line(person: int, **values: str) -> str:
    """One activity line of professional ``person`` (a doctor in Fort-de-France, by default);
    ``values`` override columns by their header names (``postal``, ``dept``, ``street``,
    ``site`` are short names for the site's postal code, department, street and FINESS)."""
    number = values.pop("number", rpps(person))
    row = dict.fromkeys(ACTIVITY_COLUMNS, "")
    row |= {
        "Type d'identifiant PP": "8",
        "Identifiant PP": number,
        "Identification nationale PP": f"8{number}",
        "Code civilité d'exercice": "DR",
        "Libellé civilité d'exercice": "Docteur",
        "Nom d'exercice": f"NOM{person}",
        "Prénom d'exercice": "Marie",
        "Code profession": "10",
        "Libellé profession": "Médecin",
        "Code catégorie professionnelle": "C",
        "Libellé catégorie professionnelle": "Civil",
        "Code type savoir-faire": "S",
        "Libellé type savoir-faire": "Spécialité ordinale",
        "Code savoir-faire": "SM54",
        "Libellé savoir-faire": "Médecine générale",
        "Code mode exercice": "L",
        "Libellé mode exercice": "Libéral, indépendant, artisan, commerçant",
        "Identifiant technique de la structure": f"S{person:06d}",
        "Raison sociale site": f"CABINET DU DR NOM{person}",
        "Numéro Voie (coord. structure)": "12",
        "Libellé type de voie (coord. structure)": "Rue",
        "Libellé Voie (coord. structure)": values.pop("street", "Victor Hugo"),
        "Code postal (coord. structure)": values.pop("postal", "97200"),
        "Code commune (coord. structure)": "97209",
        "Libellé commune (coord. structure)": "Fort-de-France",
        "Code Département (structure)": values.pop("dept", "972"),
        "Numéro FINESS site": values.pop("site", ""),
    }
    row |= values
    return "|".join(row.values()) + "|\n"


HEADER = "|".join(ACTIVITY_COLUMNS) + "|\n"


def write(path: Path, *lines: str, encoding: str = "utf-8") -> Path:
    path.write_text(HEADER + "".join(lines), encoding=encoding, newline="")
    return path


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def run(db: Database, path: Path, **options: object) -> imports.Outcome:
    [source] = imports.sources(path)
    return imports.import_file(db, source, **options)  # type: ignore[arg-type]


def people(db: Database) -> dict[str, tuple[str, bool]]:
    with db.transaction(write=False) as session:
        rows = session.execute(
            select(Professional.id_nat_ps, Professional.family, Professional.active)
        )
        return {national: (family, active) for national, family, active in rows}


def activities(db: Database) -> dict[tuple[str, str], bool]:
    with db.transaction(write=False) as session:
        rows = session.execute(select(Activity.id_nat_ps, Activity.address_line, Activity.active))
        return {(national, address): active for national, address, active in rows}


def test_an_extraction_then_the_next_one_applied_as_a_difference(
    db: Database, tmp_path: Path
) -> None:
    first = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1),
        line(1, **{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}, site=finess(1)),
        line(2),
        line(3),
        line(4),
    )
    done = run(db, first)
    assert done.error is None and done.rejected == 0 and done.lines == 5
    assert done.counts["directory_professional"] == {
        "new": 4,
        "changed": 0,
        "unchanged": 0,
        "gone": 0,
    }
    assert done.counts["directory_activity"]["new"] == 5
    # The same file again: nothing changes.
    again = run(db, first)
    assert again.counts["directory_professional"] == {
        "new": 0,
        "changed": 0,
        "unchanged": 4,
        "gone": 0,
    }
    assert again.counts["directory_activity"] == {"new": 0, "changed": 0, "unchanged": 5, "gone": 0}
    # The next day: 1 moved (changed activity), 2 renamed, 4 gone, 5 new.
    second = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612020000.txt",
        line(1, street="Schoelcher"),
        line(1, **{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}, site=finess(1)),
        line(2, **{"Nom d'exercice": "NOUVEAU"}),
        line(3),
        line(5),
    )
    nextday = run(db, second, removal_limit=None)  # 1 of 4 gone: over the default limit
    assert nextday.error is None
    assert nextday.counts["directory_professional"] == {
        "new": 1,
        "changed": 1,
        "unchanged": 2,
        "gone": 1,
    }
    assert nextday.counts["directory_activity"] == {
        "new": 1,
        "changed": 1,
        "unchanged": 3,
        "gone": 1,
    }
    found = people(db)
    assert found[f"8{rpps(4)}"] == ("NOM4", False)  # gone: inactive, not deleted
    assert found[f"8{rpps(2)}"] == ("NOUVEAU", True)
    assert activities(db)[(f"8{rpps(1)}", "12 Rue Schoelcher")] is True
    # Back in a later extraction: active again.
    assert run(db, first, removal_limit=None).counts["directory_professional"]["changed"] == 2
    assert people(db)[f"8{rpps(4)}"] == ("NOM4", True)
    with db.transaction(write=False) as session:
        runs = session.scalars(select(Import).order_by(Import.id)).all()
    assert [r.status for r in runs] == ["done"] * 4 and runs[0].kind == "activities"


def test_an_extraction_that_would_remove_too_much_is_refused(db: Database, tmp_path: Path) -> None:
    full = write(tmp_path / "full.txt", *(line(n) for n in range(1, 11)))
    assert run(db, full).error is None
    partial = write(tmp_path / "partial.txt", *(line(n) for n in range(1, 6)))
    refused = run(db, partial)
    assert refused.error is not None and "5 of 10" in refused.error
    assert all(active for _, active in people(db).values())  # nothing applied
    allowed = run(db, partial, removal_limit=None)
    assert allowed.error is None and allowed.counts["directory_professional"]["gone"] == 5


def test_bad_lines_are_reported_and_the_rest_loaded(db: Database, tmp_path: Path) -> None:
    wrong_key = rpps(3)[:-1] + str((int(rpps(3)[-1]) + 1) % 10)
    path = write(
        tmp_path / "bad.txt",
        line(1),
        "8|12|short line\n",
        line(3, number=wrong_key),
        line(4, site="970000000"),
        line(5, **{"Identification nationale PP": "899999999999"}),
        line(6),
    )
    done = run(db, path)
    assert done.error is None and done.lines == 6 and done.rejected == 4
    assert done.rejections[0] == "line 3: 3 fields, 52 expected"
    assert done.rejections[1].startswith("line 4: RPPS") and "key" in done.rejections[1]
    assert done.rejections[2].startswith("line 5: Numéro FINESS site: FINESS 970000000")
    assert done.rejections[3].startswith("line 6: Identification nationale PP")
    assert set(people(db)) == {f"8{rpps(1)}", f"8{rpps(6)}"}


def test_a_file_cut_short_or_with_a_wrong_header_applies_nothing(
    db: Database, tmp_path: Path
) -> None:
    assert run(db, write(tmp_path / "ok.txt", line(1), line(2))).error is None
    text = HEADER + line(1) + line(3) + line(4)
    cut = tmp_path / "cut.txt"
    cut.write_text(text[: len(text) - len(line(4)) // 2], encoding="utf-8")
    truncated = run(db, cut)
    assert truncated.error == "line 4: the file ends in the middle of a line"
    assert set(people(db)) == {f"8{rpps(1)}", f"8{rpps(2)}"}  # as before
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(HEADER.replace("Code profession|", "Code prof|") + line(3), encoding="utf-8")
    refused = run(db, wrong)
    assert refused.error == "header: column(s) missing: Code profession"
    unknown = tmp_path / "other.csv"
    unknown.write_text("a;b;c\n1;2;3\n", encoding="utf-8")
    assert "not a national file" in (run(db, unknown).error or "")
    assert set(people(db)) == {f"8{rpps(1)}", f"8{rpps(2)}"}
    with db.transaction(write=False) as session:
        statuses = session.scalars(select(Import.status).order_by(Import.id)).all()
    assert statuses == ["done", "failed", "failed", "failed"]


def test_latin1_and_zipped_files_and_a_department_filter(db: Database, tmp_path: Path) -> None:
    old = write(
        tmp_path / "old.txt",
        line(1, **{"Nom d'exercice": "HÉLÈNE"}),
        line(2, postal="75011", dept="75"),
        line(3, postal="97110", dept="971"),
        line(4, postal="97310", dept=""),  # no department: its postal code says 973
        encoding="latin-1",
    )
    done = run(db, old, departments=frozenset({"971", "972", "973", "974"}))
    assert done.error is None and done.left_out == 1
    assert done.notes == ["line 1: not UTF-8; the file is read as Latin-1"]
    assert people(db)[f"8{rpps(1)}"] == ("HÉLÈNE", True)
    assert f"8{rpps(2)}" not in people(db)
    archive = tmp_path / "PS_LibreAcces.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("PS_LibreAcces_Personne_activite_202612020000.txt", HEADER + line(7))
    [member] = imports.sources(archive)
    assert member.name == "PS_LibreAcces.zip:PS_LibreAcces_Personne_activite_202612020000.txt"
    zipped = imports.import_file(db, member, removal_limit=None)
    assert zipped.error is None and zipped.counts["directory_professional"]["new"] == 1


def test_the_command_prints_a_summary_and_fails_on_a_bad_file(
    database_url: str, tmp_path: Path
) -> None:
    good = write(tmp_path / "good.txt", line(1), "bad\n", line(2))
    cut = tmp_path / "cut.txt"
    cut.write_text(HEADER + line(3)[:40], encoding="utf-8")
    env = {"ENRS_DATABASE_URL": database_url, "ENRS_DATA_DIR": str(tmp_path / "var")}
    done = subprocess.run(
        enrs_command("directory", "import", "--quiet", str(good), str(cut)),
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "good.txt: activities, 3 lines" in done.stdout
    assert "line 3: 1 fields, 52 expected" in done.stdout
    assert "professional: 2 new, 0 changed, 0 unchanged, 0 gone" in done.stdout
    assert "Error: line 2: the file ends in the middle of a line" in done.stderr
    assert "Error: 1 file(s) not applied" in done.stderr


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}


# ----------------------------------------------------------------------- FINESS


def structure(number: str, **values: str) -> str:
    """A ``structureet`` line (the CHU of Martinique, by default)."""
    row = dict.fromkeys(FINESS_COLUMNS, "")
    row |= {
        "section": "structureet",
        "nofinesset": number,
        "rs": "CHU DE MARTINIQUE",
        "rslongue": "CENTRE HOSPITALIER UNIVERSITAIRE DE MARTINIQUE",
        "voie": "LA MEYNARD",
        "typvoie": "RTE",
        "commune": "209",
        "departement": "9B",
        "libdepartement": "MARTINIQUE",
        "ligneacheminement": "97200 FORT DE FRANCE",
        "categetab": "101",
        "libcategetab": "Centre Hospitalier Régional (C.H.R.)",
        "dateouv": "1983-01-01",
    }
    row |= values
    return ";".join(row.values()) + "\n"


def position(number: str, x: float, y: float, projection: str) -> str:
    """A ``geolocalisation`` line; ``projection`` as older files name it (``UTM_N20``), or a
    recent file's whole ``sourcecoordet`` (``2,ATLASANTE,…,EPSG:…``)."""
    source = (
        projection if "EPSG" in projection else f"1,ATLASANTE,100,IGN,BD_ADRESSE,V2.2,{projection}"
    )
    return f"geolocalisation;{number};{x};{y};{source};2024-01-02\n"


ANTILLES = "2,ATLASANTE,96,BAN,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)"  # a recent file's


def test_finess_establishments_with_their_position(db: Database, tmp_path: Path) -> None:
    chu, paris, reunion, bad, clinic = finess(1), finess(2, "75"), finess(3), finess(4), finess(5)
    bad = bad[:-1] + str((int(bad[-1]) + 1) % 10)
    lines = [
        "finess;etalab;95;2024-01-18\n",
        structure(chu),
        structure(paris, rs="HOPITAL PARIS", departement="75", commune="056",
                  ligneacheminement="75004 PARIS"),
        structure(reunion, rs="CHU SUD REUNION", departement="9D", commune="416",
                  ligneacheminement="97410 ST PIERRE"),
        structure(bad),
        structure(clinic, rs='"CLINIQUE ""ST PAUL""; SITE A"'),
        position(chu, 708963.33, 1617190.19, ANTILLES),
        position(paris, 652296.97, 6861636.36, "LAMBERT_93"),
        position(reunion, 338777.85, 7689248.56, "UTM_S40"),
        f"geolocalisation;{chu};1;2;GPS;2024-01-02\n",
    ]  # fmt: skip
    path = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    path.write_bytes("".join(lines).encode("cp1252"))
    done = run(db, path, departments=frozenset({"971", "972", "973", "974"}))
    assert done.error is None and done.kind == "finess", done
    assert done.left_out == 1 and done.rejected == 2
    assert done.rejections[0].startswith(f"line 5: nofinesset: FINESS {bad}")
    assert (
        done.rejections[1] == "line 10: sourcecoordet 'GPS' names no projection this import knows"
    )
    assert done.counts["directory_structure"]["new"] == 3
    assert done.counts["directory_structure_position"] == {"changed": 2}
    with db.transaction(write=False) as session:
        found = {s.finess: s for s in session.scalars(select(Structure))}
    assert set(found) == {chu, reunion, clinic}
    assert found[clinic].name == 'CLINIQUE "ST PAUL"; SITE A'
    assert (found[chu].department_code, found[chu].commune_code) == ("972", "97209")
    assert (found[chu].postal_code, found[chu].city) == ("97200", "FORT DE FRANCE")
    assert found[chu].category == "Centre Hospitalier Régional (C.H.R.)"
    assert found[chu].address_line == "RTE LA MEYNARD"
    assert abs(found[chu].latitude - 14.62) < 2e-5 and abs(found[chu].longitude + 61.06) < 2e-5
    assert abs(found[reunion].latitude + 20.89) < 1e-5
    assert abs(found[reunion].longitude - 55.45) < 1e-5
    # The same file again: unchanged, positions too.
    again = run(db, path, departments=frozenset({"971", "972", "973", "974"}))
    assert again.counts["directory_structure"]["unchanged"] == 3
    assert again.counts["directory_structure_position"] == {"changed": 0}


# ------------------------------------------------------------ savoir-faire, diplomas, MSSanté


def ps_file(path: Path, columns: list[str], *rows: dict[str, str]) -> Path:
    """An Annuaire Santé file of ``columns`` (header row, trailing ``|``)."""
    lines = ["|".join(columns) + "|\n"]
    lines += ["|".join(row.get(c, "") for c in columns) + "|\n" for row in rows]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def person(n: int) -> dict[str, str]:
    return {
        "Type d'identifiant PP": "8",
        "Identifiant PP": rpps(n),
        "Identification nationale PP": f"8{rpps(n)}",
        "Nom d'exercice": f"NOM{n}",
        "Prénom d'exercice": "Marie",
    }


SKILL_COLUMNS = [*person(0), "Code profession", "Libellé profession",
                 "Code catégorie professionnelle", "Libellé catégorie professionnelle",
                 "Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire",
                 "Libellé savoir-faire"]  # fmt: skip
DIPLOMA_COLUMNS = [*person(0), "Code type diplôme obtenu", "Libellé type diplôme obtenu",
                   "Code diplôme obtenu", "Libellé diplôme obtenu", "Code type autorisation",
                   "Libellé type autorisation", "Code discipline autorisation",
                   "Libellé discipline autorisation"]  # fmt: skip
MAILBOX_COLUMNS = ["Type de BAL", "Adresse BAL", "Type Identifiant PP", "Identifiant PP",
                   "Identification nationale PP", "Type identifiant structure",
                   "Identification Structure", "Service de rattachement", "Civilité d'exercice",
                   "Nom d'exercice", "Prénom d'exercice", "Catégorie profession",
                   "Libellé de catégorie profession", "Code Profession", "Libellé Profession",
                   "Code savoir-faire", "Libellé savoir-faire", "Dématérialisation",
                   "Raison Sociale structure BAL", "Enseigne commerciale structure BAL",
                   "L2COMPLEMENTLOCALISATION structure BAL",
                   "L3COMPLEMENTDISTRIBUTION structure BAL", "L4NUMEROVOIE structure BAL",
                   "L4COMPLEMENTNUMEROVOIE structure BAL", "NL4TYPEVOIE structure BAL",
                   "L4LIBELLEVOIE structure BAL", "L5LIEUDITMENTION structure BAL",
                   "L6LIGNEACHEMINEMENT structure BAL", "Code postal structure BAL",
                   "Département structure BAL", "Pays structure BAL"]  # fmt: skip


def test_savoir_faire_diplomas_and_mailboxes(db: Database, tmp_path: Path) -> None:
    assert run(db, write(tmp_path / "act.txt", line(1), line(2))).error is None
    skill = {
        "Code profession": "10",
        "Libellé profession": "Médecin",
        "Code type savoir-faire": "S",
        "Libellé type savoir-faire": "Spécialité ordinale",
    }
    general = {"Code savoir-faire": "SM54", "Libellé savoir-faire": "Médecine générale"}
    qualified = {"Code savoir-faire": "SM26", "Libellé savoir-faire": "Qualifié en MG"}
    skills = ps_file(
        tmp_path / "PS_LibreAcces_SavoirFaire_202612010000.txt",
        SKILL_COLUMNS,
        person(1) | skill | general,
        person(1) | skill | qualified,
        person(9) | skill | general,  # not in the directory
    )
    done = run(db, skills)
    assert done.kind == "savoir-faire" and done.error is None
    assert done.counts["directory_qualification"] == {
        "new": 2,
        "changed": 0,
        "unchanged": 0,
        "gone": 0,
        "outside": 1,
    }
    diploma = {
        "Code type diplôme obtenu": "DE",
        "Libellé type diplôme obtenu": "Diplôme d'Etat français",
        "Code diplôme obtenu": "DE09",
        "Libellé diplôme obtenu": "DE Docteur en médecine",
    }
    diplomas = ps_file(
        tmp_path / "PS_LibreAcces_Dipl_AutExerc_202612010000.txt",
        DIPLOMA_COLUMNS,
        person(2) | diploma,
    )
    assert run(db, diplomas).counts["directory_diploma"]["new"] == 1
    mine = person(1) | {
        "Type de BAL": "PER",
        "Adresse BAL": "Marie.Nom1@medecin.mssante.fr",
        "Type Identifiant PP": "8",
        "Code postal structure BAL": "97200",
        "L4NUMEROVOIE structure BAL": "12",
        "L4LIBELLEVOIE structure BAL": "Rue Victor Hugo",
    }
    desk = {
        "Type de BAL": "ORG",
        "Adresse BAL": "secretariat@chu-martinique.mssante.fr",
        "Identification Structure": CHU_FINESS,
        "Code postal structure BAL": "97200",
    }
    broken = {"Type de BAL": "PER", "Adresse BAL": "not an address"}
    paris = {"Type de BAL": "ORG", "Adresse BAL": "accueil@hopital.paris.mssante.fr"}
    paris["Code postal structure BAL"] = "75004"
    mailboxes = ps_file(
        tmp_path / "Extraction_Correspondance_MSSante_202612010000.txt",
        MAILBOX_COLUMNS,
        mine,
        desk,
        broken | {"Code postal structure BAL": "97200"},
        paris,
    )
    boxes = run(db, mailboxes, departments=frozenset({"972"}))
    assert boxes.kind == "mssante" and boxes.rejected == 1 and boxes.left_out == 1
    assert boxes.rejections == ["line 4: Adresse BAL 'not an address' is not a mail address"]
    assert boxes.counts["directory_mailbox"]["new"] == 2
    with db.transaction(write=False) as session:
        found = {m.address: m for m in session.scalars(select(Mailbox))}
        codes = select(Qualification.skill_code).order_by(Qualification.skill_code)
        skills_of = session.scalars(codes).all()
    assert found["marie.nom1@medecin.mssante.fr"].address_line == "12 Rue Victor Hugo"
    assert found["marie.nom1@medecin.mssante.fr"].id_nat_ps == f"8{rpps(1)}"
    assert skills_of == ["SM26", "SM54"]


CHU_FINESS = finess(1)


def test_who_the_directory_lists_for_a_first_external_login(db: Database, tmp_path: Path) -> None:
    social = {"Code profession": "41", "Libellé profession": "Assistant de service social",
              "Code savoir-faire": "", "Libellé savoir-faire": ""}  # fmt: skip
    nurse = {"Code profession": "60", "Libellé profession": "Infirmier"}
    first = write(tmp_path / "a.txt", line(1), line(2), line(4, **social),
                  line(5, **social), line(5, **nurse, site=finess(1)))  # fmt: skip
    assert run(db, first).error is None
    with db.transaction(write=False) as session:
        # Their professions decide their first rights: a social worker only, "social".
        worker = directory_service.listed_rpps(session, rpps(4))
        assert worker is not None and worker.default_roles == ("social",)
        both = directory_service.listed_rpps(session, rpps(5))
        assert both is not None and both.default_roles == ("professional",)
    with db.transaction(write=False) as session:
        listed = directory_service.listed_rpps(session, rpps(1))
        assert listed is not None and listed.display_name == "Dr Marie NOM1"
        assert listed.professions == ("Médecin",) and listed.default_roles == ("professional",)
        assert directory_service.listed_rpps(session, rpps(3)) is None
    assert run(db, write(tmp_path / "b.txt", line(2)), removal_limit=None).error is None
    with db.transaction(write=False) as session:  # gone from the national file: no longer
        assert directory_service.listed_rpps(session, rpps(1)) is None
