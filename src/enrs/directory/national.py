"""The national files the directory imports, as published, read line by line.

Each :class:`FileKind` knows its file from its first lines, its delimiter and encoding, and
turns one line into rows of its targets (:mod:`.models`' tables) or a :class:`LineError`
saying why the line is refused. Formats: ``../shared/reference/directory.md``.

- **Activities** (``PS_LibreAcces_Personne_activite_*.txt``, Annuaire Santé): ``|``, a header
  row, a trailing ``|`` on every line, UTF-8 (older files Latin-1: see
  :class:`LineDecoder`). Columns are found by their header names, not their positions. One
  line per activity: the professional's columns give a ``directory_professional`` row, the
  rest a ``directory_activity`` row. The RPPS number's key is checked; so is the FINESS of
  the site, when there is one.
- **Savoir-faire** (``PS_LibreAcces_SavoirFaire_*.txt``) and **diplomas and authorisations**
  (``PS_LibreAcces_Dipl_AutExerc_*.txt``): same conventions, one row per line, kept for the
  professionals the directory holds (from the activity file, imported first).
- **MSSanté mailboxes** (``Extraction_Correspondance_MSSante_*.txt``): same conventions, one
  mailbox per line (its address, lower case, its key), filtered by its structure's postal code.
- **FINESS establishments** (``etalab-cs1100507-stock-*.csv``): ``;``, Windows-1252, a first
  metadata line, then ``structureet`` lines (32 fields; a name holding ``"`` is quoted
  CSV-style) and ``geolocalisation`` lines, whose coordinates (Lambert 93, or the overseas UTM
  zones, named by their EPSG code) are converted to WGS84 by ``pyproj``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from enrs.directory.identifiers import finess_error, rpps_error
from enrs.kit.fhir.search_params import normalize_text

Row = dict[str, Any]


class LineError(ValueError):
    """A line refused: the import reports it with its number and loads the rest."""


class FileError(ValueError):
    """A file that cannot be imported at all (unknown kind, wrong header, truncated): nothing
    of it is applied."""


def digest(values: Sequence[str]) -> str:
    """A 32-hex-digit digest of ``values`` (the content hash and the keys)."""
    return hashlib.blake2b("\x1f".join(values).encode(), digest_size=16).hexdigest()


# ----------------------------------------------------------------------- departments

# FINESS writes the overseas departments 9A…9F; the Annuaire Santé, and a region, 971…976.
FINESS_OVERSEAS = {"9A": "971", "9B": "972", "9C": "973", "9D": "974", "9E": "975", "9F": "976"}


def department_of_postal_code(postal_code: str) -> str:
    """The department of a French postal code (``97200`` → ``972``; Corsica ``20``)."""
    code = postal_code.strip()
    if len(code) != 5 or not code.isdigit():
        return ""
    return code[:3] if code.startswith("97") or code.startswith("98") else code[:2]


def parse_departments(text: str) -> frozenset[str]:
    """``--departments 971,972`` → the set of department codes (``2A``/``2B`` as given)."""
    codes = {c.strip().upper() for c in text.split(",") if c.strip()}
    bad = [c for c in codes if not re.fullmatch(r"\d{2,3}|2A|2B", c)]
    if bad:
        raise ValueError(f"not department codes: {', '.join(sorted(bad))}")
    return frozenset(codes)


def in_departments(department: str, postal_code: str, wanted: frozenset[str] | None) -> bool:
    if wanted is None:
        return True
    code = department.strip().upper() or department_of_postal_code(postal_code)
    code = FINESS_OVERSEAS.get(code, code)
    if code.isdigit() and len(code) == 1:
        code = "0" + code
    return code in wanted or (code in ("2A", "2B") and "20" in wanted)


# ----------------------------------------------------------------------- line decoding


@dataclass
class LineDecoder:
    """Decodes the lines of one file: ``encoding`` as declared; a UTF-8 file whose first
    non-ASCII line is not UTF-8 is read as Latin-1 from then on (older extractions), and says
    so in :attr:`notes`; a later line that does not decode is refused. In a Windows-1252
    file, a line that is valid UTF-8 is read as UTF-8 (noted once)."""

    encoding: str
    notes: list[str] = field(default_factory=list)
    _settled: bool = False

    def decode(self, raw: bytes, number: int) -> str:
        if raw.isascii():
            return raw.decode("ascii")
        if self.encoding == "cp1252":  # valid UTF-8 there is UTF-8: cp1252 text never is
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if not self.notes:
                    self.notes.append(f"line {number}: UTF-8 in a Windows-1252 file, read as such")
                return text
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            if self.encoding == "utf-8" and not self._settled:
                self.encoding, self._settled = "latin-1", True
                self.notes.append(f"line {number}: not UTF-8; the file is read as Latin-1")
                return raw.decode("latin-1")
            raise LineError(f"not {self.encoding} (byte {exc.start + 1})") from None
        self._settled = True
        return text


# ----------------------------------------------------------------------- file kinds


@dataclass(frozen=True)
class FileKind:
    """One kind of national file."""

    name: str
    delimiter: str
    encoding: str
    targets: tuple[str, ...]  # the tables it feeds, in the order they are applied
    recognises: Callable[[list[str]], bool]  # its first lines (decoded leniently)
    reader: Callable[[str], LineReader]  # from its header line


class LineReader:
    """Reads the lines after the header: :meth:`rows` gives ``(target, row)`` pairs for a
    line's fields (``[]`` for a line to skip), or raises :class:`LineError`."""

    def rows(self, fields: list[str], wanted: frozenset[str] | None) -> list[tuple[str, Row]]:
        raise NotImplementedError


ACTIVITY_COLUMNS = (
    "Type d'identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Code civilité d'exercice",
    "Libellé civilité d'exercice",
    "Code civilité",
    "Libellé civilité",
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
    "Code mode exercice",
    "Libellé mode exercice",
    "Numéro SIRET site",
    "Numéro SIREN site",
    "Numéro FINESS site",
    "Numéro FINESS établissement juridique",
    "Identifiant technique de la structure",
    "Raison sociale site",
    "Enseigne commerciale site",
    "Complément destinataire (coord. structure)",
    "Complément point géographique (coord. structure)",
    "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. structure)",
    "Code type de voie (coord. structure)",
    "Libellé type de voie (coord. structure)",
    "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)",
    "Bureau cedex (coord. structure)",
    "Code postal (coord. structure)",
    "Code commune (coord. structure)",
    "Libellé commune (coord. structure)",
    "Code pays (coord. structure)",
    "Libellé pays (coord. structure)",
    "Téléphone (coord. structure)",
    "Téléphone 2 (coord. structure)",
    "Télécopie (coord. structure)",
    "Adresse e-mail (coord. structure)",
    "Code Département (structure)",
    "Libellé Département (structure)",
    "Ancien identifiant de la structure",
    "Autorité d'enregistrement",
    "Code secteur d'activité",
    "Libellé secteur d'activité",
    "Code section tableau pharmaciens",
    "Libellé section tableau pharmaciens",
)
# directory_professional column ← file column
PROFESSIONAL_FIELDS = {
    "id_type": "Type d'identifiant PP",
    "number": "Identifiant PP",
    "id_nat_ps": "Identification nationale PP",
    "practice_civility_code": "Code civilité d'exercice",
    "practice_civility": "Libellé civilité d'exercice",
    "civility_code": "Code civilité",
    "civility": "Libellé civilité",
    "family": "Nom d'exercice",
    "given": "Prénom d'exercice",
}
ACTIVITY_FIELDS = {
    "id_nat_ps": "Identification nationale PP",
    "profession_code": "Code profession",
    "profession": "Libellé profession",
    "category_code": "Code catégorie professionnelle",
    "category": "Libellé catégorie professionnelle",
    "skill_type_code": "Code type savoir-faire",
    "skill_type": "Libellé type savoir-faire",
    "skill_code": "Code savoir-faire",
    "skill": "Libellé savoir-faire",
    "mode_code": "Code mode exercice",
    "mode": "Libellé mode exercice",
    "siret": "Numéro SIRET site",
    "siren": "Numéro SIREN site",
    "finess_site": "Numéro FINESS site",
    "finess_ej": "Numéro FINESS établissement juridique",
    "structure_id": "Identifiant technique de la structure",
    "site_name": "Raison sociale site",
    "site_sign": "Enseigne commerciale site",
    "addressee": "Complément destinataire (coord. structure)",
    "cedex": "Bureau cedex (coord. structure)",
    "postal_code": "Code postal (coord. structure)",
    "commune_code": "Code commune (coord. structure)",
    "city": "Libellé commune (coord. structure)",
    "country_code": "Code pays (coord. structure)",
    "country": "Libellé pays (coord. structure)",
    "phone": "Téléphone (coord. structure)",
    "phone2": "Téléphone 2 (coord. structure)",
    "fax": "Télécopie (coord. structure)",
    "email": "Adresse e-mail (coord. structure)",
    "department_code": "Code Département (structure)",
    "department": "Libellé Département (structure)",
    "former_structure_id": "Ancien identifiant de la structure",
    "registration_authority": "Autorité d'enregistrement",
    "sector_code": "Code secteur d'activité",
    "sector": "Libellé secteur d'activité",
    "pharmacist_section_code": "Code section tableau pharmaciens",
    "pharmacist_section": "Libellé section tableau pharmaciens",
}
ADDRESS_PARTS = (
    "Complément point géographique (coord. structure)",
    "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. structure)",
    "Libellé type de voie (coord. structure)",
    "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)",
)
# What identifies an activity from one extraction to the next (the rest is its content).
ACTIVITY_KEY = (
    "id_nat_ps",
    "profession_code",
    "category_code",
    "skill_type_code",
    "skill_code",
    "mode_code",
    "structure_id",
    "siret",
    "finess_site",
    "sector_code",
    "pharmacist_section_code",
)
MAX_FIELD = 512


class HeaderReader(LineReader):
    """A file whose header row names its columns, each line ending with a trailing
    delimiter: columns found by name (others tolerated), every line as wide as the header."""

    def __init__(self, header: list[str], needed: Iterable[str]) -> None:
        names = [h.strip() for h in header]
        if names and names[-1] == "":
            names.pop()  # the trailing delimiter
        missing = [name for name in needed if name not in names]
        if missing:
            raise FileError(f"header: column(s) missing: {', '.join(missing)}")
        self.width = len(names)
        self.at = {name: i for i, name in enumerate(names)}

    def values(self, fields: list[str]) -> list[str]:
        """The line's fields, stripped; :class:`LineError` for a line of another width."""
        if len(fields) == self.width + 1 and fields[-1] == "":
            fields.pop()
        if len(fields) != self.width:
            raise LineError(f"{len(fields)} fields, {self.width} expected")
        values = [f.strip() for f in fields]
        if any(len(v) > MAX_FIELD for v in values):
            raise LineError(f"a field is longer than {MAX_FIELD} characters")
        return values


class ActivityReader(HeaderReader):
    def __init__(self, header: list[str]) -> None:
        super().__init__(header, ACTIVITY_COLUMNS)
        at = self.at
        self.professional = [(col, at[name]) for col, name in PROFESSIONAL_FIELDS.items()]
        self.activity = [(col, at[name]) for col, name in ACTIVITY_FIELDS.items()]
        self.address = [at[name] for name in ADDRESS_PARTS]
        self.last_person = ""  # the professional of the previous line, checked already

    def rows(self, fields: list[str], wanted: frozenset[str] | None) -> list[tuple[str, Row]]:
        values = self.values(fields)
        act = {col: values[i] for col, i in self.activity}
        if not in_departments(act["department_code"], act["postal_code"], wanted):
            return []
        rows: list[tuple[str, Row]] = []
        if act["id_nat_ps"] != self.last_person:  # a professional's lines follow each other
            person = {col: values[i] for col, i in self.professional}
            _check_professional(person)
            person["n_family"] = normalize_text(person["family"])
            person["n_given"] = normalize_text(person["given"])
            person["content_hash"] = digest([person[c] for c in PROFESSIONAL_FIELDS])
            rows.append(("directory_professional", person))
        if act["finess_site"] and (error := finess_error(act["finess_site"])):
            raise LineError(f"Numéro FINESS site: {error}")
        self.last_person = act["id_nat_ps"]
        act["address_line"] = " ".join(values[i] for i in self.address if values[i])
        act["n_city"] = normalize_text(act["city"])
        act["content_hash"] = digest(list(act.values()))
        act["activity_key"] = digest([act[c] for c in ACTIVITY_KEY])
        rows.append(("directory_activity", act))
        return rows


def _check_professional(person: Row) -> None:
    kind, number, national = person["id_type"], person["number"], person["id_nat_ps"]
    if not national or national != f"{kind}{number}":
        raise LineError(f"Identification nationale PP {national!r} is not {kind!r} + {number!r}")
    if kind == "8" and (error := rpps_error(number)):
        raise LineError(error)
    if kind not in ("0", "8"):
        raise LineError(f"Type d'identifiant PP {kind!r}: 8 (RPPS) or 0 (ADELI) expected")


def _ps_file(first: list[str], marker: str) -> bool:
    """An Annuaire Santé file whose header holds ``marker`` (ASCII: a Latin-1 header too)."""
    return bool(first) and first[0].startswith("Type d'identifiant PP|") and marker in first[0]


ACTIVITIES = FileKind(
    name="activities",
    delimiter="|",
    encoding="utf-8",
    targets=("directory_professional", "directory_activity"),
    recognises=lambda first: _ps_file(first, "|Code mode exercice|"),
    reader=lambda header: ActivityReader(header.split("|")),
)


class MappedReader(HeaderReader):
    """A ``|`` file with a header row: one row of ``target`` per line, its columns found by
    their header names (``fields``: table column ← file column), its key a digest of
    ``key`` columns (or the ``key`` column itself when it is one), ``check`` run on it."""

    def __init__(
        self,
        header: list[str],
        target: str,
        fields: dict[str, str],
        key: tuple[str, ...],
        key_column: str,
        check: Callable[[Row, frozenset[str] | None], bool],
    ) -> None:
        super().__init__(header, fields.values())
        self.columns = [(col, self.at[name]) for col, name in fields.items()]
        self.target, self.key, self.key_column, self.check = target, key, key_column, check

    def rows(self, fields: list[str], wanted: frozenset[str] | None) -> list[tuple[str, Row]]:
        values = self.values(fields)
        row = {col: values[i] for col, i in self.columns}
        if not self.check(row, wanted):
            return []
        row["content_hash"] = digest(list(row.values()))
        if self.key_column not in row:
            row[self.key_column] = digest([row[c] for c in self.key])
        return [(self.target, row)]


PERSON_FIELDS = {
    "id_type": "Type d'identifiant PP",
    "number": "Identifiant PP",
    "id_nat_ps": "Identification nationale PP",
}


def _person_row(row: Row, wanted: frozenset[str] | None) -> bool:
    _check_professional(row)
    del row["id_type"], row["number"]  # the professional's, from the activity file
    return True


QUALIFICATIONS = FileKind(
    name="savoir-faire",
    delimiter="|",
    encoding="utf-8",
    targets=("directory_qualification",),
    recognises=lambda first: (
        _ps_file(first, "|Code type savoir-faire|") and "|Code mode exercice|" not in first[0]
    ),
    reader=lambda header: MappedReader(
        header.split("|"),
        "directory_qualification",
        PERSON_FIELDS
        | {
            "profession_code": "Code profession",
            "profession": "Libellé profession",
            "category_code": "Code catégorie professionnelle",
            "category": "Libellé catégorie professionnelle",
            "skill_type_code": "Code type savoir-faire",
            "skill_type": "Libellé type savoir-faire",
            "skill_code": "Code savoir-faire",
            "skill": "Libellé savoir-faire",
        },
        ("id_nat_ps", "skill_type_code", "skill_code"),
        "qualification_key",
        _person_row,
    ),
)
DIPLOMAS = FileKind(
    name="diplomas",
    delimiter="|",
    encoding="utf-8",
    targets=("directory_diploma",),
    recognises=lambda first: _ps_file(first, "|Code type dipl"),
    reader=lambda header: MappedReader(
        header.split("|"),
        "directory_diploma",
        PERSON_FIELDS
        | {
            "diploma_type_code": "Code type diplôme obtenu",
            "diploma_type": "Libellé type diplôme obtenu",
            "diploma_code": "Code diplôme obtenu",
            "diploma": "Libellé diplôme obtenu",
            "authorisation_type_code": "Code type autorisation",
            "authorisation_type": "Libellé type autorisation",
            "discipline_code": "Code discipline autorisation",
            "discipline": "Libellé discipline autorisation",
        },
        (
            "id_nat_ps",
            "diploma_type_code",
            "diploma_code",
            "authorisation_type_code",
            "discipline_code",
        ),
        "diploma_key",
        _person_row,
    ),
)
MAILBOX_KINDS = frozenset({"PER", "ORG", "APP", "CAB"})
MAILBOX_FIELDS = {
    "kind": "Type de BAL",
    "address": "Adresse BAL",
    "id_nat_ps": "Identification nationale PP",
    "structure_id_type": "Type identifiant structure",
    "structure_id": "Identification Structure",
    "service": "Service de rattachement",
    "civility": "Civilité d'exercice",
    "family": "Nom d'exercice",
    "given": "Prénom d'exercice",
    "category_code": "Catégorie profession",
    "category": "Libellé de catégorie profession",
    "profession_code": "Code Profession",
    "profession": "Libellé Profession",
    "skill_code": "Code savoir-faire",
    "skill": "Libellé savoir-faire",
    "dematerialisation": "Dématérialisation",
    "structure_name": "Raison Sociale structure BAL",
    "structure_sign": "Enseigne commerciale structure BAL",
    "routing": "L6LIGNEACHEMINEMENT structure BAL",
    "postal_code": "Code postal structure BAL",
    "department": "Département structure BAL",
    "country": "Pays structure BAL",
}
MAILBOX_STREET = (
    "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL",
    "L4NUMEROVOIE structure BAL",
    "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL",
    "L4LIBELLEVOIE structure BAL",
    "L5LIEUDITMENTION structure BAL",
)
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class MailboxReader(MappedReader):
    """The MSSanté extraction: one mailbox per line, its address (lower case) its key; kept
    in the departments asked for by its structure's postal code."""

    def __init__(self, header: list[str]) -> None:
        fields = MAILBOX_FIELDS | {f"street{i}": name for i, name in enumerate(MAILBOX_STREET)}
        super().__init__(header, "directory_mailbox", fields, (), "address", self._mailbox)

    @staticmethod
    def _mailbox(row: Row, wanted: frozenset[str] | None) -> bool:
        row["address"] = row["address"].lower()
        if not _ADDRESS.match(row["address"]):
            raise LineError(f"Adresse BAL {row['address']!r} is not a mail address")
        if row["kind"] not in MAILBOX_KINDS:
            raise LineError(f"Type de BAL {row['kind']!r}: PER, ORG, APP or CAB expected")
        street = [row.pop(f"street{i}") for i in range(len(MAILBOX_STREET))]
        row["address_line"] = " ".join(part for part in street if part)
        return in_departments("", row["postal_code"], wanted)


MAILBOXES = FileKind(
    name="mssante",
    delimiter="|",
    encoding="utf-8",
    targets=("directory_mailbox",),
    recognises=lambda first: bool(first) and first[0].startswith("Type de BAL|"),
    reader=lambda header: MailboxReader(header.split("|")),
)

FINESS_COLUMNS = (
    "section",
    "nofinesset",
    "nofinessej",
    "rs",
    "rslongue",
    "complrs",
    "compldistrib",
    "numvoie",
    "typvoie",
    "voie",
    "compvoie",
    "lieuditbp",
    "commune",
    "departement",
    "libdepartement",
    "ligneacheminement",
    "telephone",
    "telecopie",
    "categetab",
    "libcategetab",
    "categagretab",
    "libcategagretab",
    "siret",
    "codeape",
    "codemft",
    "libmft",
    "codesph",
    "libsph",
    "dateouv",
    "dateautor",
    "maj",
    "numuai",
)
# directory_structure column ← FINESS field
STRUCTURE_FIELDS = {
    "finess": "nofinesset",
    "finess_ej": "nofinessej",
    "name": "rs",
    "long_name": "rslongue",
    "name_complement": "complrs",
    "addressee": "compldistrib",
    "department": "libdepartement",
    "phone": "telephone",
    "fax": "telecopie",
    "category_code": "categetab",
    "category": "libcategetab",
    "category_group_code": "categagretab",
    "category_group": "libcategagretab",
    "siret": "siret",
    "ape_code": "codeape",
    "pricing_code": "codemft",
    "pricing": "libmft",
    "sph_code": "codesph",
    "sph": "libsph",
    "opened_on": "dateouv",
    "authorised_on": "dateautor",
    "source_updated_on": "maj",
    "uai": "numuai",
}
_STREET = ("numvoie", "typvoie", "voie", "compvoie", "lieuditbp")
_ROUTING = re.compile(r"^(\d{5})\s*(.*)$")
# The projections ``sourcecoordet`` names: ``…,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)`` in
# recent files, ``…,V2.2,UTM_N20`` in older ones (WGS84 UTM zones: within a metre of the
# local RGAF09, RGFG95, RGR92 and RGM04 realisations).
EPSG_CODES = frozenset({2154, 5490, 2972, 2975, 4471, 32620, 32622, 32740, 32738})
PROJECTIONS = {
    "LAMBERT_93": 2154,
    "LAMBERT93": 2154,
    "UTM_N20": 32620,
    "UTM_N22": 32622,
    "UTM_S40": 32740,
    "UTM_S38": 32738,
}
_EPSG = re.compile(r"EPSG:(\d{4,5})")


def projection_of(source: str) -> int | None:
    """The EPSG code of the projection a FINESS ``sourcecoordet`` names."""
    if (named := _EPSG.search(source)) and int(named.group(1)) in EPSG_CODES:
        return int(named.group(1))
    words = source.upper().replace(" ", "_")
    return next((epsg for name, epsg in PROJECTIONS.items() if name in words), None)


@cache
def _to_wgs84(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True)


class FinessReader(LineReader):
    """``structureet`` and ``geolocalisation`` lines of the FINESS establishment file."""

    def __init__(self, first_line: str) -> None:
        self.first_line = first_line

    def rows(self, fields: list[str], wanted: frozenset[str] | None) -> list[tuple[str, Row]]:
        if any('"' in f for f in fields):  # a quoted name ("…"), maybe holding a ";"
            fields = next(csv.reader([";".join(fields)], delimiter=";"))
        section = fields[0].strip()
        if section == "structureet":
            return self._structure(fields, wanted)
        if section == "geolocalisation":
            return self._position(fields)
        raise LineError(f"section {section!r}: structureet or geolocalisation expected")

    def _structure(self, fields: list[str], wanted: frozenset[str] | None) -> list[tuple[str, Row]]:
        if len(fields) != len(FINESS_COLUMNS):
            raise LineError(f"{len(fields)} fields, {len(FINESS_COLUMNS)} expected (structureet)")
        got = {name: value.strip() for name, value in zip(FINESS_COLUMNS, fields, strict=True)}
        row: Row = {col: got[name] for col, name in STRUCTURE_FIELDS.items()}
        for label, number in (("nofinesset", row["finess"]), ("nofinessej", row["finess_ej"])):
            if (number or label == "nofinesset") and (error := finess_error(number)):
                raise LineError(f"{label}: {error}")
        department = got["departement"].upper()
        department = FINESS_OVERSEAS.get(department, department)
        routing = _ROUTING.match(got["ligneacheminement"])
        row["postal_code"], row["city"] = routing.groups() if routing else ("", "")
        if not in_departments(department, row["postal_code"], wanted):
            return []
        row["department_code"] = department
        commune = got["commune"]
        row["commune_code"] = f"{department[:2]}{commune}" if commune else ""
        row["address_line"] = " ".join(got[k] for k in _STREET if got[k])
        row["n_name"] = normalize_text(row["name"])
        row["n_city"] = normalize_text(row["city"])
        if any(len(str(v)) > MAX_FIELD for v in row.values()):
            raise LineError(f"a field is longer than {MAX_FIELD} characters")
        row["content_hash"] = digest([str(v) for v in row.values()])
        return [("directory_structure", row)]

    def _position(self, fields: list[str]) -> list[tuple[str, Row]]:
        if len(fields) < 5:
            raise LineError(f"{len(fields)} fields, at least 5 expected (geolocalisation)")
        number, x, y, source = (f.strip() for f in fields[1:5])
        if error := finess_error(number):
            raise LineError(f"nofinesset: {error}")
        if not x and not y:
            return []
        epsg = projection_of(source)
        if epsg is None:
            raise LineError(f"sourcecoordet {source!r} names no projection this import knows")
        try:
            lon, lat = _to_wgs84(epsg).transform(float(x), float(y))
        except ValueError:
            raise LineError(f"coordinates {x!r}, {y!r} are not numbers") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise LineError(f"coordinates {x!r}, {y!r} fall outside the projection")
        position = {"finess": number, "latitude": lat, "longitude": lon, "position_source": source}
        return [("directory_structure_position", position)]


FINESS = FileKind(
    name="finess",
    delimiter=";",
    encoding="cp1252",
    targets=("directory_structure", "directory_structure_position"),
    recognises=lambda first: (
        (bool(first) and first[0].lower().startswith("finess;"))
        or (len(first) > 1 and first[1].startswith(("structureet;", "geolocalisation;")))
    ),
    reader=FinessReader,
)

KINDS = (ACTIVITIES, QUALIFICATIONS, DIPLOMAS, MAILBOXES, FINESS)


def recognise(first_lines: list[str]) -> FileKind:
    """The kind of a file from its first lines, else :class:`FileError`."""
    for kind in KINDS:
        if kind.recognises(first_lines):
            return kind
    seen = first_lines[0][:80] if first_lines else "(empty)"
    raise FileError(f"not a national file this import knows (first line: {seen!r})")
