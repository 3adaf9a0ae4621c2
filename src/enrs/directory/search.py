"""IHE mCSD ITI-90 searches of the directory, with the search parameters of the national
Annuaire Santé FHIR API: what each parameter matches, and the queries with their
``_include`` / ``_revinclude`` (:class:`Page`).

``Bundle.total`` is given when asked (``_total=accurate``): counting every match of a common
name among two million professionals costs more than finding the first page.

Names and cities are searched through their folded columns (``n_family``, ``n_given``,
``n_name``, ``n_city``: :func:`~enrs.kit.fhir.search_params.normalize_text`), so
``name:contains=lene`` finds ``HÉLÈNE``; ``:exact`` compares them as published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.directory import fhir, repository
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.directory.models import (
    PROFESSIONAL_FTS,
    Activity,
    Diploma,
    Mailbox,
    Professional,
    Qualification,
    Structure,
)
from enrs.kit.db import Substring, plan_each_execution
from enrs.kit.fhir.search import (
    ParsedSearch,
    SearchParam,
    SearchSpec,
    apply_search,
    parse_search,
    search_total,
    split_page,
)
from enrs.kit.fhir.search_params import as_column, normalize_text, prefix_clause, string_clause
from enrs.kit.fhir.search_values import ReferenceValue, StringValue, TokenValue

P, A, St = Professional, Activity, Structure
Q, D, M = Qualification, Diploma, Mailbox
SP = "http://hl7.org/fhir/SearchParameter/"


def _code(value: TokenValue, column: Any, system: str) -> ColumnElement[bool]:
    """A token on a code column of one code system (``system|code``, ``|code``, ``code``)."""
    if value.system not in (None, system) or value.code is None:
        return sa.false()
    return column == value.code  # type: ignore[no-any-return]


def _name(value: StringValue) -> ColumnElement[bool]:
    """``name``: starts-with, ``:exact``, or ``:contains`` served by a trigram index
    (:class:`~enrs.kit.db.Substring`; ``PROFESSIONAL_FTS`` on SQLite)."""
    if value.modifier != "contains":
        return string_clause(value, (P.family, P.given), (P.n_family, P.n_given))
    folded = normalize_text(value.text)
    if not folded:
        return sa.false()
    columns = [as_column(P.n_family), as_column(P.n_given)]
    return Substring(columns, folded, PROFESSIONAL_FTS, P.id)


def _practitioner_identifier(value: TokenValue) -> ColumnElement[bool]:
    if value.code is None:
        return sa.true() if value.system in (RPPS_SYSTEM, fhir.RPPS_NUMBER_SYSTEM) else sa.false()
    if value.system == RPPS_SYSTEM:
        return P.id_nat_ps == value.code
    if value.system == fhir.RPPS_NUMBER_SYSTEM:
        return sa.and_(P.id_type == "8", P.number == value.code)
    if value.system is None:
        return sa.or_(
            P.id_nat_ps == value.code,
            sa.and_(P.id_type == "8", P.number == value.code),
            P.local_id == value.code,
        )
    # The region's own system (registration.py): a local identifier, kept after an RPPS.
    return sa.and_(P.local_system == value.system, P.local_id == value.code)


def _qualification(value: TokenValue) -> ColumnElement[bool]:
    """A profession (TRE_G15) or a savoir-faire of an active activity of the professional."""
    if value.code is None:
        return sa.false()
    if value.system == fhir.PROFESSION:
        which = A.profession_code == value.code
    elif value.system in fhir.SKILL.values():
        which = A.skill_code == value.code
    elif value.system is None:
        which = sa.or_(A.profession_code == value.code, A.skill_code == value.code)
    else:
        return sa.false()
    return sa.exists().where(A.professional_id == P.id, A.active.is_(True), which)


def _reference(column: Any, kind: str) -> Any:
    def match(value: ReferenceValue) -> ColumnElement[bool]:
        if value.type not in (None, kind):
            return sa.false()
        return column == value.id  # type: ignore[no-any-return]

    return match


def _address(value: StringValue) -> ColumnElement[bool]:
    text = value.text.strip().lower()
    if value.modifier == "exact":
        return M.address == text
    if value.modifier == "contains":
        return M.address.contains(text, autoescape=True)
    return prefix_clause(M.address, text)


def _organization_identifier(value: TokenValue) -> ColumnElement[bool]:
    if value.code is None:
        return sa.true() if value.system in (FINESS_SYSTEM, fhir.SIRET_SYSTEM) else sa.false()
    if value.system == FINESS_SYSTEM:
        return St.finess == value.code
    if value.system == fhir.SIRET_SYSTEM:
        return St.siret == value.code
    if value.system is None:
        return sa.or_(St.finess == value.code, St.siret == value.code, St.local_id == value.code)
    return sa.and_(St.local_system == value.system, St.local_id == value.code)


@cache
def practitioner_spec() -> SearchSpec:
    return SearchSpec(
        resource_type="Practitioner",
        params={
            "_id": SearchParam.token(P.id_nat_ps, doc="idNatPs", definition=SP + "Resource-id"),
            "_lastUpdated": SearchParam.date(P.updated_at, definition=SP + "Resource-lastUpdated"),
            "identifier": SearchParam.token(
                match=_practitioner_identifier,
                doc="idNatPs (urn:oid:1.2.250.1.71.4.2.1) or RPPS (https://rpps.esante.gouv.fr)",
                definition=SP + "Practitioner-identifier",
            ),
            "name": SearchParam.string(
                P.family,
                P.given,
                match=_name,
                doc="Family or given name; :contains (a trigram index), :exact",
                definition=SP + "Practitioner-name",
            ),
            "family": SearchParam.string(
                P.family, normalized=(P.n_family,), definition=SP + "individual-family"
            ),
            "given": SearchParam.string(
                P.given, normalized=(P.n_given,), definition=SP + "individual-given"
            ),
            "active": SearchParam.token(P.active, definition=SP + "Practitioner-active"),
            "qualification-code": SearchParam.token(
                match=_qualification,
                doc="Profession (TRE_G15) or savoir-faire of an active activity",
            ),
            "mailbox-mss": SearchParam.string(
                match=lambda v: sa.exists().where(
                    M.id_nat_ps == P.id_nat_ps, M.active.is_(True), _address(v)
                ),
                doc="A personal MSSanté mailbox (the address, or its start)",
            ),
        },
        sorts={"family": P.n_family, "_lastUpdated": P.updated_at},
        # A family name's start is searched in its index: the page comes sorted by it.
        # Otherwise by registration (a common :contains sorted by name reads every match).
        index_sorts={"family": "family"},
        tiebreaker=P.id,
        default_total="none",
        revincludes=frozenset({"PractitionerRole:practitioner"}),
    )


@cache
def role_spec() -> SearchSpec:
    return SearchSpec(
        resource_type="PractitionerRole",
        params={
            "_id": SearchParam.token(A.activity_key, definition=SP + "Resource-id"),
            "_lastUpdated": SearchParam.date(A.updated_at, definition=SP + "Resource-lastUpdated"),
            "practitioner": SearchParam.reference(
                targets=("Practitioner",),
                match=_reference(A.id_nat_ps, "Practitioner"),
                definition=SP + "PractitionerRole-practitioner",
            ),
            "organization": SearchParam.reference(
                targets=("Organization",),
                match=_reference(A.finess_site, "Organization"),
                definition=SP + "PractitionerRole-organization",
            ),
            "role": SearchParam.token(
                match=_role,
                doc="Profession (TRE_G15-ProfessionSante, or the region's list)",
                definition=SP + "PractitionerRole-role",
            ),
            "specialty": SearchParam.token(
                match=lambda v: (
                    sa.and_(
                        A.skill_code == v.code,
                        sa.true() if v.system is None else A.skill_type_code.in_(_skill_types(v)),
                    )
                    if v.code
                    else sa.false()
                ),
                doc="Savoir-faire (TRE_R38 ordinal specialty…)",
                definition=SP + "PractitionerRole-specialty",
            ),
            "active": SearchParam.token(A.active, definition=SP + "PractitionerRole-active"),
            "address-city": SearchParam.string(
                A.city, normalized=(A.n_city,), doc="The site's commune"
            ),
            "address-postalcode": SearchParam.string(A.postal_code, doc="The site's postal code"),
        },
        sorts={"_lastUpdated": A.updated_at, "address-city": A.n_city},
        # The (profession, commune) index serves a commune's start in its order.
        index_sorts={"address-city": "address-city"},
        tiebreaker=A.id,
        default_total="none",
        includes=frozenset({"PractitionerRole:practitioner", "PractitionerRole:organization"}),
    )


def _role(value: TokenValue) -> ColumnElement[bool]:
    """A profession: of TRE_G15 (national entries, and regional ones coded in it), or of the
    region's own list, by its system (``registration.REGIONAL_PROFESSIONS``)."""
    if value.code is None:
        return sa.false()
    if value.system is None:
        return A.profession_code == value.code
    if value.system == fhir.PROFESSION:
        national = sa.or_(A.profession_system.is_(None), A.profession_system == fhir.PROFESSION)
        return sa.and_(A.profession_code == value.code, national)
    return sa.and_(A.profession_system == value.system, A.profession_code == value.code)


def _skill_types(value: TokenValue) -> list[str]:
    return [kind for kind, system in fhir.SKILL.items() if system == value.system] or ["-"]


@cache
def organization_spec() -> SearchSpec:
    return SearchSpec(
        resource_type="Organization",
        params={
            "_id": SearchParam.token(St.finess, doc="FINESS", definition=SP + "Resource-id"),
            "_lastUpdated": SearchParam.date(St.updated_at, definition=SP + "Resource-lastUpdated"),
            "identifier": SearchParam.token(
                match=_organization_identifier,
                doc="FINESS (urn:oid:1.2.250.1.71.4.2.2) or SIRET (http://sirene.fr)",
                definition=SP + "Organization-identifier",
            ),
            "name": SearchParam.string(
                St.name, normalized=(St.n_name,), definition=SP + "Organization-name"
            ),
            "type": SearchParam.token(
                match=lambda v: _code(v, St.category_code, fhir.ESTABLISHMENT_CATEGORY),
                doc="FINESS category (TRE_R66)",
                definition=SP + "Organization-type",
            ),
            "active": SearchParam.token(St.active, definition=SP + "Organization-active"),
            "mailbox-mss": SearchParam.string(
                match=lambda v: sa.exists().where(
                    M.structure_id == St.finess, M.active.is_(True), _address(v)
                ),
                doc="An organisational MSSanté mailbox (the address, or its start)",
            ),
            "address-city": SearchParam.string(
                St.city, normalized=(St.n_city,), definition=SP + "Organization-address-city"
            ),
            "address-postalcode": SearchParam.string(
                St.postal_code, definition=SP + "Organization-address-postalcode"
            ),
        },
        sorts={"name": St.n_name, "_lastUpdated": St.updated_at},
        default_sort="name",
        tiebreaker=St.id,
        default_total="none",
        revincludes=frozenset({"PractitionerRole:organization"}),
    )


@dataclass
class Page:
    """One page of a search: its resources, what ``_include`` / ``_revinclude`` added, and
    what the Bundle needs."""

    resources: list[dict[str, Any]]
    parsed: ParsedSearch
    total: int | None
    has_next: bool
    included: list[dict[str, Any]] = field(default_factory=list)


def _run(
    session: Session,
    spec: SearchSpec,
    stmt: sa.Select[Any],
    items: Sequence[tuple[str, str]],
    base_url: str,
    strict: bool,
) -> tuple[list[Any], ParsedSearch, int | None, bool]:
    parsed = parse_search(spec, items, strict=strict, base_url=base_url)
    plan_each_execution(session, parsed.clauses)
    rows = session.scalars(apply_search(stmt, parsed, session.get_bind().dialect.name)).all()
    page, has_next = split_page(rows, parsed)
    total = search_total(session, stmt, parsed, page, has_next)
    return page, parsed, total, has_next


def _known_sites(session: Session, finess: set[str]) -> set[str]:
    if not finess:
        return set()
    return set(session.scalars(sa.select(St.finess).where(St.finess.in_(sorted(finess)))))


def roles(session: Session, activities: Sequence[Activity]) -> list[dict[str, Any]]:
    """PractitionerRoles of ``activities``, with their professionals' names."""
    ids = {a.professional_id for a in activities}
    people = {p.id: p for p in session.scalars(sa.select(P).where(P.id.in_(ids)))} if ids else {}
    sites = _known_sites(session, {a.finess_site for a in activities if a.finess_site})
    return [
        fhir.practitioner_role(a, people.get(a.professional_id), a.finess_site in sites)
        for a in activities
    ]


def practitioners(session: Session, people: Sequence[Professional]) -> list[dict[str, Any]]:
    """Practitioners of ``people``, with their activities, savoir-faire, diplomas, mailboxes."""
    ids = [p.id for p in people]
    acts = repository.activities_of(session, ids, active_only=False)
    extras = {p.id: fhir.Extras() for p in people}
    if ids:
        for q in session.scalars(sa.select(Q).where(Q.professional_id.in_(ids)).order_by(Q.id)):
            extras[q.professional_id].qualifications.append(q)
        for d in session.scalars(sa.select(D).where(D.professional_id.in_(ids)).order_by(D.id)):
            extras[d.professional_id].diplomas.append(d)
        by_national = {p.id_nat_ps: p.id for p in people}
        boxes = sa.select(M).where(M.id_nat_ps.in_(list(by_national)), M.kind == "PER")
        for m in session.scalars(boxes.order_by(M.id)):
            extras[by_national[m.id_nat_ps]].mailboxes.append(m)
    return [fhir.practitioner(p, acts.get(p.id, []), extras[p.id]) for p in people]


def organizations(session: Session, structures: Sequence[Structure]) -> list[dict[str, Any]]:
    """Organizations of ``structures``, with their organisational MSSanté mailboxes."""
    boxes: dict[str, list[Mailbox]] = {s.finess: [] for s in structures}
    if boxes:
        stmt = sa.select(M).where(M.structure_id.in_(list(boxes)), M.kind != "PER")
        for m in session.scalars(stmt.order_by(M.id)):
            boxes[m.structure_id].append(m)
    return [fhir.organization(s, boxes[s.finess]) for s in structures]


def search_practitioners(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """ITI-90 ``GET /fhir/Practitioner``."""
    found, parsed, total, has_next = _run(
        session, practitioner_spec(), sa.select(P), items, base_url, strict
    )
    page = Page(practitioners(session, found), parsed, total, has_next)
    if parsed.revincludes and found:
        stmt = sa.select(A).where(A.professional_id.in_([p.id for p in found])).order_by(A.id)
        page.included = roles(session, session.scalars(stmt).all())
    return page


def search_roles(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """ITI-90 ``GET /fhir/PractitionerRole``."""
    spec = role_spec()
    found, parsed, total, has_next = _run(session, spec, sa.select(A), items, base_url, strict)
    page = Page(roles(session, found), parsed, total, has_next)
    if "PractitionerRole:practitioner" in parsed.includes and found:
        ids = {a.professional_id for a in found}
        people = session.scalars(sa.select(P).where(P.id.in_(ids)).order_by(P.id)).all()
        page.included += practitioners(session, people)
    if "PractitionerRole:organization" in parsed.includes and found:
        sites = sorted({a.finess_site for a in found if a.finess_site})
        structures = session.scalars(sa.select(St).where(St.finess.in_(sites)).order_by(St.id))
        page.included += organizations(session, structures.all())
    return page


def search_organizations(
    session: Session, items: Sequence[tuple[str, str]], *, base_url: str, strict: bool
) -> Page:
    """ITI-90 ``GET /fhir/Organization``."""
    found, parsed, total, has_next = _run(
        session, organization_spec(), sa.select(St), items, base_url, strict
    )
    page = Page(organizations(session, found), parsed, total, has_next)
    if parsed.revincludes and found:
        stmt = sa.select(A).where(A.finess_site.in_([s.finess for s in found])).order_by(A.id)
        page.included = roles(session, session.scalars(stmt).all())
    return page


def read(session: Session, kind: str, resource_id: str) -> dict[str, Any] | None:
    """``GET /fhir/{kind}/{id}``: the resource, or ``None``."""
    if kind == "Practitioner":
        person = session.scalar(sa.select(P).where(P.id_nat_ps == resource_id))
        return practitioners(session, [person])[0] if person else None
    if kind == "PractitionerRole":
        activity = session.scalar(sa.select(A).where(A.activity_key == resource_id))
        return roles(session, [activity])[0] if activity else None
    structure = session.scalar(sa.select(St).where(St.finess == resource_id))
    return organizations(session, [structure])[0] if structure else None


HISTORY_COUNT, HISTORY_MAX = 100, 1000
_HISTORY: dict[str, Any] = {"Practitioner": P, "PractitionerRole": A, "Organization": St}


def history(
    session: Session, kind: str, since: datetime | None, count: int, offset: int
) -> tuple[list[dict[str, Any]], bool]:
    """ITI-91: the ``kind`` resources changed at or after ``since`` (all, without), oldest
    change first, each in its current version (the directory keeps no older ones); a page of
    ``count`` from ``offset``, and whether another follows."""
    model = _HISTORY[kind]
    stmt = sa.select(model).order_by(model.updated_at, model.id).offset(offset).limit(count + 1)
    if since is not None:
        stmt = stmt.where(model.updated_at >= since)
    rows = session.scalars(stmt).all()
    page, more = list(rows[:count]), len(rows) > count
    if kind == "Practitioner":
        return practitioners(session, page), more
    if kind == "PractitionerRole":
        return roles(session, page), more
    return organizations(session, page), more
