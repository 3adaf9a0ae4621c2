"""FHIR search engine: parsing of every type/modifier/prefix, and real filtering on SQLite + PG."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from enrs.kit.db import UTCDateTime
from enrs.kit.errors import BadRequest
from enrs.kit.fhir import (
    DateValue,
    NumberValue,
    ParsedSearch,
    ReferenceValue,
    SearchParam,
    SearchSpec,
    SearchStatements,
    StringValue,
    TokenValue,
    apply_search,
    count_stmt,
    normalize_text,
    parse_search,
    search_total,
    split_page,
    token_clause,
)
from enrs.kit.fhir.search_params import NOTHING, Shape, escape_like
from enrs.kit.fhir.search_values import (
    parse_date,
    parse_number,
    parse_reference,
    parse_token,
    split_unescaped,
    unescape,
)

GENDER = "http://hl7.org/fhir/administrative-gender"
INS = "urn:oid:1.2.250.1.213.1.4.8"
PARIS = ZoneInfo("Europe/Paris")

md = sa.MetaData()
patient = sa.Table(
    "fhirtest_patient",
    md,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("family", sa.String(100)),
    sa.Column("family_norm", sa.String(100)),
    sa.Column("given", sa.String(100)),
    sa.Column("gender", sa.String(20)),
    sa.Column("birth_date", sa.Date),
    sa.Column("active", sa.Boolean),
    sa.Column("last_updated", UTCDateTime()),
    sa.Column("seen_naive", sa.DateTime()),
    sa.Column("period_start", sa.DateTime(timezone=True)),
    sa.Column("period_end", sa.DateTime(timezone=True)),
    sa.Column("org_id", sa.String(64)),
    sa.Column("rank", sa.Integer),
    sa.Column("weight", sa.Numeric(6, 2)),
    sa.Column("profile_url", sa.String(200)),
)
identifier = sa.Table(
    "fhirtest_identifier",
    md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("patient_id", sa.String(64), sa.ForeignKey("fhirtest_patient.id"), nullable=False),
    sa.Column("system", sa.String(200)),
    sa.Column("value", sa.String(100), nullable=False),
)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


ROWS: list[dict[str, Any]] = [
    {
        "id": "p1",
        "family": "Dupont",
        "given": "Jean",
        "gender": "male",
        "birth_date": date(1980, 5, 3),
        "active": True,
        "last_updated": _utc(2024, 5, 3, 10, 0, 0),
        "seen_naive": datetime(2024, 5, 3, 10, 0, 0),
        "period_start": _utc(2024, 1, 1, 0, 0),
        "period_end": _utc(2024, 1, 31, 0, 0),
        "org_id": "org1",
        "rank": 10,
        "weight": Decimal("70.50"),
        "profile_url": "http://example.org/fhir/StructureDefinition/fr-patient",
    },
    {
        "id": "p2",
        "family": "Durand",
        "given": "Hélène",
        "gender": "female",
        "birth_date": date(1990, 12, 31),
        "active": False,
        # 2024-05-04 01:30 in Paris.
        "last_updated": _utc(2024, 5, 3, 23, 30, 0),
        "seen_naive": datetime(2024, 5, 3, 23, 30, 0),
        "period_start": _utc(2024, 3, 1, 0, 0),
        "period_end": None,
        "org_id": "org2",
        "rank": 100,
        "weight": Decimal("55.00"),
        "profile_url": "http://example.org/fhir/StructureDefinition/other",
    },
    {
        "id": "p3",
        "family": "Lefèvre",
        "given": "Zoé",
        "gender": "female",
        "birth_date": date(2001, 1, 1),
        "active": None,
        "last_updated": _utc(2024, 6, 1, 0, 0, 0),
        "seen_naive": datetime(2024, 6, 1, 0, 0, 0),
        "period_start": None,
        "period_end": None,
        "org_id": None,
        "rank": None,
        "weight": None,
        "profile_url": None,
    },
    {
        "id": "p4",
        "family": "Dupont-Moretti",
        "given": "Éric",
        "gender": "other",
        "birth_date": date(1961, 4, 20),
        "active": True,
        "last_updated": _utc(2023, 12, 31, 23, 59, 59),
        "seen_naive": datetime(2023, 12, 31, 23, 59, 59),
        "period_start": _utc(2023, 6, 1, 0, 0),
        "period_end": _utc(2024, 2, 15, 0, 0),
        "org_id": "org1",
        "rank": 101,
        "weight": Decimal("80.00"),
        "profile_url": None,
    },
    {
        "id": "p5",
        "family": "Du_ont",
        "given": "Max",
        "gender": None,
        "birth_date": None,
        "active": False,
        "last_updated": _utc(2024, 5, 2, 12, 0, 0),
        "seen_naive": datetime(2024, 5, 2, 12, 0, 0),
        "period_start": None,
        "period_end": None,
        "org_id": None,
        "rank": 99,
        "weight": None,
        "profile_url": None,
    },
]
IDENTIFIERS: list[dict[str, Any]] = [
    {"patient_id": "p1", "system": INS, "value": "180058012345678"},
    {"patient_id": "p1", "system": "urn:oid:1.2.3", "value": "IPP-1"},
    {"patient_id": "p2", "system": INS, "value": "290127512345678"},
    {"patient_id": "p3", "system": None, "value": "IPP-1"},
]


def _identifier(v: TokenValue) -> ColumnElement[bool]:
    """A callable mapping: token over a child table, through EXISTS."""
    return sa.exists().where(
        identifier.c.patient_id == patient.c.id,
        token_clause(v, identifier.c.value, identifier.c.system),
    )


def _ins_only(v: StringValue) -> ColumnElement[bool]:
    return patient.c.given == v.text


def _family_starts(v: StringValue) -> Shape:
    folded = escape_like(normalize_text(v.text))
    return Shape("starts", (folded,), lambda b: patient.c.family_norm.startswith(b[0], escape="/"))


def _sex(v: TokenValue) -> Shape:
    if v.code == "none":
        return NOTHING
    return Shape("code", (v.code,), lambda b: patient.c.gender == b[0])


SPEC = SearchSpec(
    resource_type="Patient",
    params={
        "_id": SearchParam.token(patient.c.id),
        "_lastUpdated": SearchParam.date(patient.c.last_updated),
        "family": SearchParam.string(
            patient.c.family, normalized=[patient.c.family_norm], doc="Family name"
        ),
        "name": SearchParam.string(patient.c.family, patient.c.given),
        "given": SearchParam.string(patient.c.given),
        "gender": SearchParam.token(patient.c.gender, fixed_system=GENDER),
        "birthdate": SearchParam.date(patient.c.birth_date),
        "seen": SearchParam.date(patient.c.seen_naive),
        "period": SearchParam.date(patient.c.period_start, end=patient.c.period_end),
        "active": SearchParam.token(patient.c.active),
        "identifier": SearchParam.token(match=_identifier),
        "organization": SearchParam.reference(patient.c.org_id, targets=["Organization"]),
        "rank": SearchParam.number(patient.c.rank),
        "weight": SearchParam.number(patient.c.weight),
        "profile": SearchParam.uri(patient.c.profile_url),
        "given-exact": SearchParam.string(match=_ins_only),
        "family-starts": SearchParam.string(shape=_family_starts),
        "sex": SearchParam.token(shape=_sex),
    },
    sorts={
        "family": patient.c.family,
        "birthdate": patient.c.birth_date,
        "_lastUpdated": patient.c.last_updated,
    },
    default_sort="-_lastUpdated",
    tiebreaker=patient.c.id,
    includes=frozenset({"Patient:organization"}),
    timezone=UTC,
)


PG_ADMIN_URL = os.environ.get(
    "ENRS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(  # both backends every run; PostgreSQL is skipped when no server answers
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    admin: sa.Engine | None = None
    name = f"enrs_fhir_test_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("fhirsearch") / "search.db"
        eng = sa.create_engine(f"sqlite:///{path}")
    else:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            admin.dispose()
            pytest.skip(f"PostgreSQL not available: {exc.orig}")
        eng = sa.create_engine(admin.url.set(database=name))
    md.create_all(eng)
    with eng.begin() as conn:
        rows = [{**r, "family_norm": normalize_text(str(r["family"]))} for r in ROWS]
        conn.execute(patient.insert(), rows)
        conn.execute(identifier.insert(), IDENTIFIERS)
    yield eng
    eng.dispose()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def search(engine: sa.Engine, query: list[tuple[str, str]], *, strict: bool = False) -> list[str]:
    parsed = parse_search(SPEC, query, strict=strict, base_url="https://enrs.example/fhir")
    with engine.connect() as conn:
        rows = conn.execute(apply_search(sa.select(patient.c.id), parsed)).scalars().all()
    page, _ = split_page(rows, parsed)
    return page


def items_of(query: str) -> list[tuple[str, str]]:
    pairs = [part.split("=", 1) for part in query.split("&")] if query else []
    return [(name, value) for name, value in pairs]


def ids(engine: sa.Engine, query: str, **kw: bool) -> set[str]:
    return set(search(engine, items_of(query), **kw))


# ------------------------------------------------------------------ value parsing units


def test_escaping_split_and_unescape() -> None:
    assert split_unescaped(r"a,b\,c,d", ",") == ["a", r"b\,c", "d"]
    assert unescape(r"b\,c\|d\$e\\f") == r"b,c|d$e\f"
    assert split_unescaped(r"sys\|x|code|more", "|", maxsplit=1) == [r"sys\|x", "code|more"]


def test_token_forms() -> None:
    assert parse_token("male") == TokenValue(None, "male")
    assert parse_token(f"{GENDER}|male") == TokenValue(GENDER, "male")
    assert parse_token("|male") == TokenValue("", "male")
    assert parse_token(f"{INS}|") == TokenValue(INS, None)
    assert parse_token(r"a\|b") == TokenValue(None, "a|b")
    with pytest.raises(ValueError):
        parse_token("|")


@pytest.mark.parametrize(
    ("raw", "precision", "lower", "upper"),
    [
        ("2024", "year", _utc(2024, 1, 1), _utc(2025, 1, 1)),
        ("2024-12", "month", _utc(2024, 12, 1), _utc(2025, 1, 1)),
        ("2024-02", "month", _utc(2024, 2, 1), _utc(2024, 3, 1)),
        ("2024-05-03", "day", _utc(2024, 5, 3), _utc(2024, 5, 4)),
        ("2024-05-03T10:00", "minute", _utc(2024, 5, 3, 10), _utc(2024, 5, 3, 10, 1)),
        ("2024-05-03T10:00:00Z", "second", _utc(2024, 5, 3, 10), _utc(2024, 5, 3, 10, 0, 1)),
        (
            "2024-05-03T10:00:00.5+02:00",
            "fraction",
            _utc(2024, 5, 3, 8, 0, 0) + timedelta(milliseconds=500),
            _utc(2024, 5, 3, 8, 0, 0) + timedelta(milliseconds=600),
        ),
        # "+" not percent-encoded in the query string arrives as a space.
        ("2024-05-03T10:00:00 02:00", "second", _utc(2024, 5, 3, 8), _utc(2024, 5, 3, 8, 0, 1)),
        (
            "2024-05-03T10:00:00-05:30",
            "second",
            _utc(2024, 5, 3, 15, 30),
            _utc(2024, 5, 3, 15, 30, 1),
        ),
    ],
)
def test_date_ranges(raw: str, precision: str, lower: datetime, upper: datetime) -> None:
    value = parse_date(raw, UTC)
    assert value.prefix == "eq"
    assert value.precision == precision
    assert value.lower == lower
    assert value.upper == upper


def test_date_prefixes_and_default_timezone() -> None:
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
        assert parse_date(f"{prefix}2024-05", UTC).prefix == prefix
    local = parse_date("2024-05-03", PARIS)
    assert local.lower.astimezone(UTC) == _utc(2024, 5, 2, 22, 0)


@pytest.mark.parametrize(
    "raw",
    ["", "24", "2024-13", "2024-02-30", "2024-05-03T25:00", "2024-05-03T10", "xx2024",
     "2024-05-03Z", "2024-05-03T10:00+24:00", "today", "2024/05/03"],
)  # fmt: skip
def test_date_invalid(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_date(raw, UTC)


def test_number_implicit_range() -> None:
    assert parse_number("100") == NumberValue("eq", Decimal(100), Decimal("99.5"), Decimal("100.5"))
    value = parse_number("gt1.50")
    assert (value.prefix, value.lower, value.upper) == ("gt", Decimal("1.495"), Decimal("1.505"))
    assert parse_number("1e2").lower == Decimal(50)
    for bad in ("abc", "1,5", "", "ge", "NaN", "1e"):
        with pytest.raises(ValueError):
            parse_number(bad)


def test_reference_forms() -> None:
    targets = ["Patient"]
    assert parse_reference("Patient/123", None, targets, None) == ReferenceValue("Patient", "123")
    assert parse_reference("123", None, targets, None) == ReferenceValue("Patient", "123")
    assert parse_reference("123", "Patient", targets, None) == ReferenceValue("Patient", "123")
    base = "https://enrs.example/fhir"
    assert parse_reference(f"{base}/Patient/1", None, targets, base) == ReferenceValue(
        "Patient", "1"
    )
    assert parse_reference("Patient/1/_history/3", None, targets, None) == ReferenceValue(
        "Patient", "1"
    )
    assert parse_reference("https://other.example/fhir/Patient/1", None, targets, base) is None
    assert parse_reference("1", None, ["Patient", "Group"], None) == ReferenceValue(None, "1")
    for bad in ("Practitioner/1", "Patient/", "Patient/a b", "patient/1", "a/b/c"):
        with pytest.raises(ValueError):
            parse_reference(bad, None, targets, None)
    with pytest.raises(ValueError):
        parse_reference("Patient/1", "Group", ["Patient", "Group"], None)


def test_normalize_text() -> None:
    assert normalize_text("Hélène LEFÈVRE-Œuvray") == "helene lefevre-oeuvray"
    assert normalize_text("Straße") == "strasse"


# ------------------------------------------------------------ parse_search validation


def _parse(query: list[tuple[str, str]], strict: bool = False) -> ParsedSearch:
    return parse_search(SPEC, query, strict=strict)


def test_result_parameters_defaults_and_clamp() -> None:
    parsed = _parse([])
    assert (parsed.count, parsed.offset, parsed.total, parsed.want_total) == (
        20,
        0,
        "accurate",
        True,
    )
    assert _parse([("_count", "1000")]).count == 100
    assert _parse([("_count", "9" * 40)]).count == 100
    assert _parse([("_count", "0")]).count == 0
    assert _parse([("_offset", "40")]).offset == 40
    assert _parse([("_total", "none")]).want_total is False


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ([("_count", "-1")], "'_count'"),
        ([("_count", "ten")], "'_count'"),
        ([("_count", "1.5")], "'_count'"),
        ([("_offset", "-20")], "'_offset'"),
        ([("_offset", "abc")], "'_offset'"),
        ([("_offset", "100001")], "must not exceed"),
        ([("_count", "5"), ("_count", "6")], "only once"),
        ([("_sort", "given")], "cannot sort on 'given'"),
        ([("_sort", "family,-nope")], "'nope'"),
        ([("_total", "maybe")], "'_total'"),
        ([("birthdate", "2024-13-01")], "'birthdate'"),
        ([("birthdate", "ge2024,foo")], "'foo'"),
        ([("rank", "ten")], "'rank'"),
        ([("active", "yes")], "expected true or false"),
        ([("organization", "Practitioner/1")], "Organization"),
        ([("family:missing", "maybe")], "family:missing"),
        ([("family:below", "x")], "Modifier ':below'"),
        ([("gender:exact", "male")], "Modifier ':exact'"),
        ([("birthdate:not", "2024")], "Modifier ':not'"),
        ([("identifier:missing", "true")], "Modifier ':missing'"),
        ([("gender", "|")], "'gender'"),
        ([("profile", "not a uri")], "'profile'"),
    ],
)
def test_invalid_inputs_raise_bad_request(query: list[tuple[str, str]], fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        _parse(query)
    assert fragment in info.value.message
    assert info.value.status == 400


def test_unknown_parameters_lenient_and_strict() -> None:
    parsed = _parse([("family", "Dup"), ("foo", "1"), ("subject.name", "x"), ("_summary", "true")])
    assert parsed.ignored == ("foo", "subject.name", "_summary")
    assert parsed.used == (("family", "Dup"),)
    with pytest.raises(BadRequest) as info:
        _parse([("family", "Dup"), ("foo", "1")], strict=True)
    assert "'foo'" in info.value.message and "strict" in info.value.message


def test_presentation_and_empty_parameters_are_skipped() -> None:
    parsed = _parse([("_format", "json"), ("_pretty", "true"), ("family", "")], strict=True)
    assert parsed.used == () and parsed.ignored == () and parsed.clauses == ()


def test_includes_are_allow_listed() -> None:
    parsed = _parse([("_include", "Patient:organization"), ("_include", "Patient:link")])
    assert parsed.includes == ("Patient:organization",)
    assert parsed.ignored == ("_include=Patient:link",)
    with pytest.raises(BadRequest):
        _parse([("_include", "Patient:link")], strict=True)


def test_parsed_values_are_exposed() -> None:
    parsed = _parse([("gender:not", "male,female"), ("birthdate", "ge2000")])
    gender, birth = parsed.params
    assert (gender.name, gender.modifier) == ("gender", "not")
    assert gender.values == (TokenValue(None, "male"), TokenValue(None, "female"))
    assert isinstance(birth.values[0], DateValue)


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        SearchSpec("Patient", {"_count": SearchParam.token(patient.c.id)})
    with pytest.raises(ValueError):
        SearchSpec("Patient", {}, sorts={}, default_sort="family")
    with pytest.raises(ValueError):
        SearchParam.token()
    with pytest.raises(ValueError):
        SearchParam.reference(patient.c.org_id, targets=[])


# ------------------------------------------------------- results against real databases


FILTERS = [
    ("", {"p1", "p2", "p3", "p4", "p5"}),
    # string: case/accent-insensitive starts-with on the normalized column
    ("family=dup", {"p1", "p4"}),
    ("family=LEFEVRE", {"p3"}),
    ("family=lefèv", {"p3"}),
    ("family:exact=Dupont", {"p1"}),
    ("family:exact=dupont", set()),
    ("family:contains=ont", {"p1", "p4", "p5"}),
    ("family:contains=MORE", {"p4"}),
    # LIKE wildcards are literal
    ("family=Du_", {"p5"}),
    ("family:contains=%", set()),
    # string over several columns, OR within a parameter, AND across repeats
    ("name=jean", {"p1"}),
    ("name=dur,max", {"p2", "p5"}),
    ("name=du&name=max", {"p5"}),
    ("given-exact=Zoé", {"p3"}),
    # token
    ("gender=female", {"p2", "p3"}),
    (f"gender={GENDER}|female", {"p2", "p3"}),
    ("gender=http://other|female", set()),
    ("gender=|female", set()),
    (f"gender={GENDER}|", {"p1", "p2", "p3", "p4"}),
    ("gender=male,other", {"p1", "p4"}),
    ("gender:not=male", {"p2", "p3", "p4", "p5"}),
    ("gender:not=male,female", {"p4", "p5"}),
    ("gender:missing=true", {"p5"}),
    ("gender:missing=false", {"p1", "p2", "p3", "p4"}),
    ("_id=p1,p3", {"p1", "p3"}),
    ("active=true", {"p1", "p4"}),
    ("active=false", {"p2", "p5"}),
    ("active:not=true", {"p2", "p3", "p5"}),
    # token through a callable (EXISTS over a child table)
    (f"identifier={INS}|180058012345678", {"p1"}),
    ("identifier=IPP-1", {"p1", "p3"}),
    ("identifier=|IPP-1", {"p3"}),
    (f"identifier={INS}|", {"p1", "p2"}),
    (f"identifier:not={INS}|", {"p3", "p4", "p5"}),
    # date on a Date column (the target is the whole day)
    ("birthdate=1980-05-03", {"p1"}),
    ("birthdate=1980-05", {"p1"}),
    ("birthdate=1980", {"p1"}),
    ("birthdate=ne1980", {"p2", "p3", "p4"}),
    ("birthdate=lt1980-05-03", {"p4"}),
    ("birthdate=le1980-05-03", {"p1", "p4"}),
    ("birthdate=gt1990-12-31", {"p3"}),
    ("birthdate=ge1990-12-31", {"p2", "p3"}),
    ("birthdate=sa1990", {"p3"}),
    ("birthdate=eb1980-05-04", {"p1", "p4"}),
    ("birthdate=ge1970&birthdate=lt2000", {"p1", "p2"}),
    ("birthdate=1980-05-03T10:00:00Z", set()),
    ("birthdate=gt1980-05-03T10:00:00Z", {"p1", "p2", "p3"}),
    ("birthdate=lt1980-05-03T10:00:00Z", {"p1", "p4"}),
    ("birthdate:missing=true", {"p5"}),
    # date on an instant column (UTCDateTime), in UTC
    ("_lastUpdated=2024-05-03", {"p1", "p2"}),
    ("_lastUpdated=2024-05", {"p1", "p2", "p5"}),
    ("_lastUpdated=2024-05-03T10:00:00Z", {"p1"}),
    ("_lastUpdated=2024-05-03T12:00:00+02:00", {"p1"}),
    ("_lastUpdated=2024-05-03T12:00:00 02:00", {"p1"}),
    ("_lastUpdated=gt2024-05-03", {"p3"}),
    ("_lastUpdated=ge2024-05-03", {"p1", "p2", "p3"}),
    ("_lastUpdated=lt2024", {"p4"}),
    ("_lastUpdated=le2024-05-02", {"p4", "p5"}),
    ("_lastUpdated=sa2024-05-03T10:00", {"p2", "p3"}),
    ("_lastUpdated=eb2024-05-03T10:00", {"p4", "p5"}),
    ("_lastUpdated=ne2024-05", {"p3", "p4"}),
    ("_lastUpdated=2023-12-31T23:59:59Z", {"p4"}),
    # naive DateTime column holds UTC
    ("seen=2024-05-03T12:00:00+02:00", {"p1"}),
    ("seen=2024-05-03", {"p1", "p2"}),
    # period (start / end columns, NULL end = ongoing)
    ("period=2024-01", {"p1"}),
    ("period=ge2024-02-01", {"p2", "p4"}),
    ("period=lt2024-01-15", {"p1", "p4"}),
    ("period=gt2024-12", {"p2"}),
    ("period=sa2023-12-31", {"p1", "p2"}),
    ("period=eb2024-02-01", {"p1"}),
    ("period=ne2024-01", {"p2", "p4"}),
    # reference
    ("organization=org1", {"p1", "p4"}),
    ("organization=Organization/org2", {"p2"}),
    ("organization:Organization=org2", {"p2"}),
    ("organization=https://enrs.example/fhir/Organization/org1", {"p1", "p4"}),
    ("organization=https://elsewhere.example/fhir/Organization/org1", set()),
    ("organization:missing=true", {"p3", "p5"}),
    # number
    ("rank=100", {"p2"}),
    ("rank=1e2", {"p2", "p4", "p5"}),
    ("rank=gt99", {"p2", "p4"}),
    ("rank=ge99", {"p2", "p4", "p5"}),
    ("rank=lt99.5", {"p1", "p5"}),
    ("rank=le10", {"p1"}),
    ("rank=ne100", {"p1", "p4", "p5"}),
    ("rank=ap100", {"p2", "p4", "p5"}),
    ("weight=70.5", {"p1"}),
    ("weight=gt60", {"p1", "p4"}),
    # uri
    ("profile=http://example.org/fhir/StructureDefinition/other", {"p2"}),
    ("profile:below=http://example.org/fhir/", {"p1", "p2"}),
    ("profile:missing=true", {"p3", "p4", "p5"}),
    # unknown parameters are ignored
    ("family=dup&unknown=1", {"p1", "p4"}),
    # parameters given by a Shape: the same values bound into a statement built once
    ("family-starts=dup", {"p1", "p4"}),
    ("family-starts=Du_", {"p5"}),
    ("family-starts=d%", set()),
    ("family-starts=dup&birthdate=lt1980-05-03", {"p4"}),
    ("family-starts=dup&birthdate=lt1980", {"p4"}),
    ("family-starts=dup,lef&birthdate=ge1970", {"p1", "p3"}),
    ("family-starts=", {"p1", "p2", "p3", "p4", "p5"}),
    ("sex=female", {"p2", "p3"}),
    ("sex=male,female", {"p1", "p2", "p3"}),
    ("sex:not=male", {"p2", "p3", "p4", "p5"}),
    ("sex:not=male,female", {"p4", "p5"}),
    ("sex=other", {"p4"}),
    ("sex=none", set()),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS)
def test_search_filters(engine: sa.Engine, query: str, expected: set[str]) -> None:
    assert ids(engine, query) == expected


STATEMENTS = SearchStatements(sa.select(patient.c.id))


def test_search_statements_give_the_same_rows(engine: sa.Engine) -> None:
    """Every search of the table again, through statements kept per shape: searches of one
    shape with other values (``birthdate=1980`` then ``=1990``...) each get their own rows."""
    for query, expected in FILTERS:
        items = items_of(query)
        parsed = parse_search(SPEC, items, strict=False, base_url="https://enrs.example/fhir")
        stmt, values = STATEMENTS.search(parsed)
        with engine.connect() as conn:
            rows = conn.execute(stmt, values).scalars().all()
        assert set(split_page(rows, parsed)[0]) == expected, query


def test_a_statement_is_built_once_per_shape(engine: sa.Engine) -> None:
    statements = SearchStatements(sa.select(patient.c.id))

    def run(query: list[tuple[str, str]]) -> tuple[sa.Select[Any], list[str]]:
        stmt, values = statements.search(_parse(query))
        with engine.connect() as conn:
            return stmt, list(conn.execute(stmt, values).scalars())

    first, found = run([("family-starts", "dup"), ("birthdate", "1980")])
    again, other = run([("family-starts", "lef"), ("birthdate", "2001")])
    assert again is first and (found, other) == (["p1"], ["p3"])
    assert run([("family-starts", "dup"), ("birthdate", "lt1980")])[0] is not first
    # the page's size and offset are bound too; a search with a plain clause is built anew
    paged, page = run([("sex", "female"), ("_count", "1"), ("_offset", "1")])
    assert page == ["p2"]  # p3 then p2, by -_lastUpdated
    assert run([("sex", "male"), ("_count", "1"), ("_offset", "0")]) == (paged, ["p1"])
    assert run([("sex", "female"), ("_count", "0")]) == (paged, [])  # the total only
    assert run([("family", "dup")])[0] is not run([("family", "dup")])[0]


def test_sorting_and_tiebreak(engine: sa.Engine) -> None:
    assert search(engine, []) == ["p3", "p2", "p1", "p5", "p4"]  # default -_lastUpdated
    assert search(engine, [("_sort", "family")]) == ["p5", "p1", "p4", "p2", "p3"]
    # NULL birth dates sort last in both directions, on both backends
    assert search(engine, [("_sort", "-birthdate")]) == ["p3", "p2", "p1", "p4", "p5"]
    assert search(engine, [("_sort", "birthdate")]) == ["p4", "p1", "p2", "p3", "p5"]
    assert search(engine, [("_sort", "-family,birthdate")])[:2] == ["p3", "p2"]


def test_approximate_date_widens_the_range(engine: sa.Engine) -> None:
    exact = ids(engine, "_lastUpdated=2024-05-03")
    approx = ids(engine, "_lastUpdated=ap2024-05-03")
    assert exact < approx  # 10% of the distance to now on each side


def test_paging_and_count(engine: sa.Engine) -> None:
    pages: list[list[str]] = []
    offset, has_next = 0, True
    while has_next:
        parsed = _parse([("_sort", "family"), ("_count", "2"), ("_offset", str(offset))])
        with engine.connect() as conn:
            rows = conn.execute(apply_search(sa.select(patient.c.id), parsed)).scalars().all()
            total = conn.execute(count_stmt(sa.select(patient.c.id), parsed)).scalar_one()
        page, has_next = split_page(rows, parsed)
        pages.append(page)
        offset += parsed.count
        assert total == 5
    assert pages == [["p5", "p1"], ["p4", "p2"], ["p3"]]
    parsed = _parse([("gender", "female"), ("_count", "0")])
    with engine.connect() as conn:
        rows = conn.execute(apply_search(sa.select(patient.c.id), parsed)).scalars().all()
        total = conn.execute(count_stmt(sa.select(patient), parsed)).scalar_one()
    assert (rows, total) == ([], 2)
    assert split_page(rows, parsed) == ([], False)


def test_the_total_is_counted_only_when_the_page_does_not_give_it(engine: sa.Engine) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    base = sa.select(patient.c.id)
    for query, total, counted in (
        ([("_count", "2")], 5, True),  # a next page: counted
        ([("_count", "2"), ("_offset", "4")], 5, False),  # the last page: 4 + 1 row
        ([("_count", "10")], 5, False),  # one page holds them all
        ([("family", "zzz")], 0, False),  # nothing found on the first page
        ([("_count", "2"), ("_offset", "8")], 5, True),  # past the end: counted
        ([("_count", "0")], 5, True),  # the total only
        ([("_total", "none")], None, False),
    ):
        parsed = _parse(query)
        statements.clear()
        with Session(engine) as session:
            rows = session.execute(apply_search(base, parsed)).scalars().all()
            page, has_next = split_page(rows, parsed)
            assert search_total(session, base, parsed, page, has_next) == total, query
        assert (len(statements) == 2) == counted, query


def test_orm_mapped_attributes(tmp_path: Path) -> None:
    """Specs may name ORM attributes (InstrumentedAttribute) instead of Core columns."""

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "fhirtest_orm"
        id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
        family: Mapped[str | None] = mapped_column(sa.String(100))
        updated: Mapped[datetime] = mapped_column(UTCDateTime())

    spec = SearchSpec(
        "Patient",
        {"family": SearchParam.string(Row.family), "_lastUpdated": SearchParam.date(Row.updated)},
        sorts={"_lastUpdated": Row.updated},
        default_sort="-_lastUpdated",
        tiebreaker=Row.id,
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'orm.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            [
                Row(id="a", family="Martin", updated=_utc(2024, 1, 1)),
                Row(id="b", family="Martinez", updated=_utc(2024, 2, 1)),
                Row(id="c", family="Bernard", updated=_utc(2024, 3, 1)),
            ]
        )
        session.commit()
        parsed = parse_search(spec, [("family", "mart"), ("_count", "1")], strict=True)
        rows = session.scalars(apply_search(sa.select(Row), parsed)).all()
        page, has_next = split_page(rows, parsed)
        assert [r.id for r in page] == ["b"] and has_next
        assert session.scalar(count_stmt(sa.select(Row), parsed)) == 2
    engine.dispose()
