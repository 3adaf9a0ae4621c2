"""The identity server's FHIR queries: PDQm ITI-78 search over the source identities, the PIXm
ITI-83 cross-reference (its parameters; the rule is :mod:`.xref`), and the PDQm ITI-119 match
ranking. What they may find and show is :mod:`.access`'s: only active identities, an INS
only through a qualified identity.

Names are searched through the normalised columns (``n_birth_name``, ``n_used_name``,
``n_given_names``, written with :func:`enrs.identity.traits.normalize_name`: upper case, no
accents, hyphens and apostrophes as spaces), so ``family=helene`` finds ``HÉLÈNE`` on SQLite and
PostgreSQL alike; ``:exact`` compares the names as entered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.identity import access, xref
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.fhir import GENDER_IN, GENDER_SYSTEM, PatientFields, oid_of
from enrs.identity.matching.compare import PairScore, Traits
from enrs.identity.matching.engine import Matcher
from enrs.identity.models import RegionalPatient, SourceIdentity
from enrs.identity.schemas import first_telecom
from enrs.identity.traits import (
    check_ins,
    normalize_address,
    normalize_city,
    normalize_email,
    normalize_name,
    normalize_phone,
)
from enrs.kit.errors import BadRequest, Forbidden, NotFound
from enrs.kit.fhir.search import (
    ParsedSearch,
    SearchParam,
    SearchSpec,
    SearchStatements,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import NOTHING, Shape, escape_like
from enrs.kit.fhir.search_values import StringValue, TokenValue

S = SourceIdentity
P = RegionalPatient
SP = "http://hl7.org/fhir/SearchParameter/"


def _patients_with_rri(rri: str) -> ColumnElement[bool]:
    return S.patient_id.in_(sa.select(P.id).where(P.rri == rri))


def _name_shape(value: StringValue, raw: Sequence[Any], norm: Sequence[Any]) -> Shape:
    if value.modifier == "exact":
        return Shape("exact", (value.text,), lambda v: sa.or_(*(c == v[0] for c in raw)))
    folded = normalize_name(value.text)
    if not folded:
        return NOTHING
    if value.modifier == "contains":
        return Shape(
            "contains",
            (escape_like(folded),),
            lambda v: sa.or_(*(c.contains(v[0], escape="/") for c in norm)),
        )
    return Shape(
        "starts",
        (escape_like(folded),),
        lambda v: sa.or_(*(c.startswith(v[0], escape="/") for c in norm)),
    )


def _family(value: StringValue) -> Shape:
    return _name_shape(value, (S.birth_name, S.used_name), (S.n_birth_name, S.n_used_name))


def _given(value: StringValue) -> Shape:
    """Any of the birth first names (``n_given_names`` is ``|``-separated). The patterns are
    written in Python (a bound value takes no SQL concatenation)."""
    if value.modifier == "exact":
        names, like = S.given_names, escape_like(value.text)
        return Shape(
            "exact",
            (value.text, like + " ", " " + like, f" {like} "),
            lambda v: sa.or_(
                names == v[0],
                names.startswith(v[1], escape="/"),
                names.endswith(v[2], escape="/"),
                names.contains(v[3], escape="/"),
            ),
        )
    folded = normalize_name(value.text)
    if not folded:
        return NOTHING
    norm, like = S.n_given_names, escape_like(folded)
    if value.modifier == "contains":
        return Shape("contains", (like,), lambda v: norm.contains(v[0], escape="/"))
    return Shape(
        "starts",
        (like, "|" + like),
        lambda v: sa.or_(norm.startswith(v[0], escape="/"), norm.contains(v[1], escape="/")),
    )


def _ins(code: Any) -> ColumnElement[bool]:
    """Identities whose INS is ``code`` (upper case, no spaces) and may be trusted
    (``access``, rule 4)."""
    return sa.and_(S.ins == code, access.trusted_ins_clause())


def _identifier(config: IdentityConfig, value: TokenValue) -> Shape:
    """IPP (``urn:oid:{authority}|ipp``), INS (``urn:oid:1.2.250.1.213.1.4.8|…``, a qualified
    identity's), RRI, or a bare value matching any of them."""
    system, code = value.system, value.code
    if system is None:
        assert code is not None
        values = (code, code.replace(" ", "").upper())
        return Shape(
            "any",
            values,
            lambda v: sa.or_(S.ipp == v[0], _ins(v[1]), _patients_with_rri(v[0])),
        )
    if system == config.rri_system:
        if not code:
            return Shape("all", (), lambda _: sa.true())
        return Shape("rri", (code,), lambda v: _patients_with_rri(v[0]))
    oid = oid_of(system)
    if oid is None:
        return NOTHING
    if oid in config.accepted_ins:
        if not code:
            return Shape(
                "ins domain",
                (oid,),
                lambda v: sa.and_(S.ins_system == v[0], access.trusted_ins_clause()),
            )
        values = (oid, code.replace(" ", "").upper())
        return Shape("ins", values, lambda v: sa.and_(S.ins_system == v[0], _ins(v[1])))
    if not code:
        return Shape("domain", (oid,), lambda v: S.authority == v[0])
    return Shape("ipp", (oid, code), lambda v: sa.and_(S.authority == v[0], S.ipp == v[1]))


def _gender(value: TokenValue) -> Shape:
    if value.system not in (None, GENDER_SYSTEM) or value.code not in GENDER_IN:
        return NOTHING
    return Shape("sex", (GENDER_IN[value.code],), lambda v: S.sex == v[0])


def _id(value: TokenValue) -> Shape:
    code = value.code or ""
    if not code.isdigit() or len(code) > 18:
        return NOTHING
    return Shape("id", (int(code),), lambda v: S.id == v[0])


@cache
def pdqm_search(config: IdentityConfig) -> SearchSpec:
    """The ITI-78 search parameters (the RRI namespace and INS OIDs are ``config``'s)."""
    return SearchSpec(
        resource_type="Patient",
        params={
            "_id": SearchParam.token(
                shape=_id, doc="Source identity id", definition=SP + "Resource-id"
            ),
            "family": SearchParam.string(
                shape=_family,
                doc="Birth or used name; accent- and case-insensitive, :exact as entered",
                definition=SP + "individual-family",
            ),
            "given": SearchParam.string(
                shape=_given, doc="Any birth first name", definition=SP + "individual-given"
            ),
            "birthdate": SearchParam.date(
                S.birth_date, doc="Birth date", definition=SP + "individual-birthdate"
            ),
            "gender": SearchParam.token(
                shape=_gender, doc="male | female | unknown", definition=SP + "individual-gender"
            ),
            "identifier": SearchParam.token(
                shape=partial(_identifier, config),
                doc="IPP (urn:oid:{authority}|ipp), INS (urn:oid:1.2.250.1.213.1.4.8|nir) or RRI",
                definition=SP + "Patient-identifier",
            ),
            "address-postalcode": SearchParam.string(
                S.postal_code, doc="Postal code", definition=SP + "individual-address-postalcode"
            ),
            "address-city": SearchParam.string(
                S.city, doc="City", definition=SP + "individual-address-city"
            ),
        },
        sorts={"_id": S.id, "family": S.n_birth_name, "birthdate": S.birth_date},
        default_sort="_id",
        tiebreaker=S.id,
        default_count=20,
        max_count=100,
    )


_READABLE = SearchStatements(access.readable_sources())


@dataclass(frozen=True)
class PdqmPage:
    """One page of ITI-78 results: each source identity with its regional identifier."""

    rows: list[tuple[SourceIdentity, str]]
    parsed: ParsedSearch
    total: int | None
    has_next: bool
    domains: frozenset[str] = frozenset()
    """Identifier domains asked with ``identifier=system|`` (ITI-78 2:3.78.4.1.2.3): only
    identifiers of these systems are to be returned."""


def _requested_domains(parsed: ParsedSearch) -> frozenset[str]:
    return frozenset(
        v.system
        for p in parsed.params
        if p.name == "identifier" and p.modifier is None
        for v in p.values
        if isinstance(v, TokenValue) and v.system and v.code is None
    )


def iti_78_search_patients(
    session: Session,
    config: IdentityConfig,
    items: Sequence[tuple[str, str]],
    *,
    base_url: str,
    strict: bool,
) -> PdqmPage:
    """PDQm ITI-78 over :func:`access.readable_sources`. Raises :class:`BadRequest` (400) for a
    malformed or unsupported parameter (an unknown one only under ``Prefer: handling=strict``),
    :class:`NotFound` (404, "targetSystem not found", ITI-78 case 4) for an identifier domain
    this server does not know."""
    parsed = parse_search(pdqm_search(config), items, strict=strict, base_url=base_url)
    domains = _requested_domains(parsed)
    for system in domains:
        if not known_domain(session, config, system):
            raise NotFound(f"targetSystem not found: {system}")
    stmt, values = _READABLE.search(parsed)
    rows = [(row[0], row[1]) for row in session.execute(stmt, values).all()]
    page, has_next = split_page(rows, parsed)
    total = search_total(session, _READABLE.base, parsed, page, has_next)
    return PdqmPage(page, parsed, total, has_next, domains)


def known_domain(session: Session, config: IdentityConfig, system: str) -> bool:
    """Whether the URI ``system`` names an identifier domain of this server
    (:func:`xref.known_domain`)."""
    oid = oid_of(system)
    return oid is not None and xref.known_domain(session, config, oid)


# --- PIXm ITI-83 -----------------------------------------------------------------------------


def _parse_source_identifier(raw: str | None) -> tuple[str, str]:
    if raw is None or not raw.strip():
        raise BadRequest("the sourceIdentifier parameter is required (system|value)")
    system, sep, value = raw.partition("|")
    if not sep or not system or not value:
        raise BadRequest(f"sourceIdentifier {raw!r} is not of the form system|value")
    return system, value


def _target_domains(session: Session, config: IdentityConfig, raw: Sequence[str]) -> frozenset[str]:
    """The OIDs of the ``targetSystem`` values (repeated or comma-separated); PIXm
    2:3.83.4.2.2.4: 403 ``code-invalid`` "targetSystem not found" when one is not a domain of
    this server."""
    systems = frozenset(s.strip() for item in raw for s in item.split(",") if s.strip())
    domains = set()
    for system in systems:
        oid = oid_of(system)
        if oid is None or not xref.known_domain(session, config, oid):
            raise Forbidden("targetSystem not found", issue_code="code-invalid")
        domains.add(oid)
    return frozenset(domains)


def iti_83_cross_reference(
    session: Session, config: IdentityConfig, raw_source: str | None, raw_targets: Sequence[str]
) -> xref.CrossReference:
    """PIXm ITI-83: the cross-reference (:func:`xref.cross_reference`) of ``sourceIdentifier``
    (``system|value``: an IPP, the RRI or a qualified identity's INS), restricted to the
    ``targetSystem`` domains if any.

    Errors as PIXm 2:3.83.4.2.2: 400 ``code-invalid`` "sourceIdentifier Assigning Authority not
    found" for an unknown domain (or a malformed parameter), 404 ``not-found``
    "sourceIdentifier Patient Identifier not found", 403 ``code-invalid`` "targetSystem not
    found"."""
    system, value = _parse_source_identifier(raw_source)
    oid = oid_of(system)
    if oid is None or not xref.known_domain(session, config, oid):
        raise BadRequest(
            "sourceIdentifier Assigning Authority not found", issue_code="code-invalid"
        )
    try:
        patients = xref.resolve(session, config, oid, value)
    except xref.UnknownPatient:
        raise NotFound("sourceIdentifier Patient Identifier not found") from None
    domains = _target_domains(session, config, raw_targets)
    return xref.cross_reference(session, config, patients, oid, value, domains=domains)


# --- PDQm ITI-119 ----------------------------------------------------------------------------

POSSIBLE_FLOOR = 0.0
"""Below this match weight (a Bayes factor under 1) a candidate is ``certainly-not``: it is never
returned, so that a match does not hand out unrelated people's demographics."""


@dataclass(frozen=True)
class MatchResult:
    source: SourceIdentity
    rri: str
    probability: float
    grade: str


def traits_of_fields(fields: PatientFields, config: IdentityConfig) -> Traits:
    """Match traits of a $match input Patient, normalised as ``service.traits_of`` does.
    Raises ``Unprocessable`` (422) for an INS whose key does not check or whose OID is not
    accepted (``config.accepted_ins``)."""
    ins = (
        check_ins(fields.ins, fields.ins_system or "", config.accepted_ins) if fields.ins else None
    )
    return Traits(
        birth_name=normalize_name(fields.birth_name),
        used_name=normalize_name(fields.used_name),
        given_names=tuple(n for n in (normalize_name(g) for g in fields.given_names) if n),
        birth_date=fields.birth_date,
        sex=fields.sex,
        birth_place=fields.birth_place,
        postal_code=fields.postal_code,
        ins=ins,
        address=normalize_address(fields.address_line),
        city=normalize_city(fields.city),
        phone=normalize_phone(first_telecom(fields.telecom, "phone")),
        email=normalize_email(first_telecom(fields.telecom, "email")),
    )


def _grade(score: PairScore, same_ins: bool, doubtful: bool, m: Matcher) -> str:
    """As a feed would decide: ``certain`` where it would link automatically (the strict
    traits' weight), ``probable`` where it would ask the cell (every trait's)."""
    weight = score.weight
    certain = score.strict_weight >= m.model.auto_link and score.auto_link_allowed
    if (same_ins or certain) and not doubtful:
        return "certain"
    if weight >= m.model.review or same_ins:
        return "probable"
    return "possible" if weight >= POSSIBLE_FLOOR else "certainly-not"


_GRADE_ORDER = {"certain": 0, "probable": 1, "possible": 2, "certainly-not": 3}


def iti_119_match(
    session: Session, matcher: Matcher, traits: Traits, *, only_certain: bool, count: int
) -> list[MatchResult]:
    """PDQm ITI-119: per regional patient its best-scoring identity (``service.best_candidates``),
    graded with the model's thresholds (``certain`` ≥ auto-link with the strict traits close
    enough, or the same qualified INS; ``probable`` ≥ review; ``possible`` ≥ 0), most likely
    first. A douteuse or fictive identity is never ``certain``. With ``only_certain``, the
    result is empty unless exactly one regional patient is certain (ITI-119 cases 3-5). Only
    readable identities are returned, and an equal INS counts only from a qualified identity
    (:mod:`.access`)."""
    ranked = identity_service.best_candidates(session, matcher, traits)
    qualified: dict[int, SourceIdentity] = {}
    if traits.ins:
        for source in access.trusted_ins_holders(session, traits.ins):
            qualified.setdefault(source.patient_id, source)
    seen = {r.source.patient_id for r in ranked}
    for pid, source in qualified.items():
        if pid not in seen:
            score = matcher.score(traits, identity_service.traits_of(source))
            ranked.append(identity_service.Scored(source, score))
    results: list[tuple[int, float, identity_service.Scored, str]] = []
    readable = {s.id for s in access.visible(r.source for r in ranked)}
    for scored in (r for r in ranked if r.source.id in readable):
        doubtful = bool(scored.source.attribute_set & identity_service.NEVER_AUTO)
        grade = _grade(scored.score, scored.source.patient_id in qualified, doubtful, matcher)
        if grade != "certainly-not":
            results.append((_GRADE_ORDER[grade], -scored.score.weight, scored, grade))
    results.sort(key=lambda r: (r[0], r[1]))
    if only_certain:
        results = [r for r in results if r[3] == "certain"]
        if len(results) != 1:
            return []
    rris = _rris(session, [r[2].source.patient_id for r in results[:count]])
    return [
        MatchResult(
            s.source, rris[s.source.patient_id], matcher.model.probability(s.score.weight), grade
        )
        for _, _, s, grade in results[:count]
    ]


def _rris(session: Session, patient_ids: Sequence[int]) -> dict[int, str]:
    if not patient_ids:
        return {}
    rows = session.execute(sa.select(P.id, P.rri).where(P.id.in_(set(patient_ids)))).all()
    return {row.id: row.rri for row in rows}
