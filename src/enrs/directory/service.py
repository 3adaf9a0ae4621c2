"""The directory's public functions for the other services and the portal: find
professionals, a professional's card, a structure's page."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.directory import repository
from enrs.directory.models import (
    Activity,
    Diploma,
    Mailbox,
    Professional,
    Qualification,
    Structure,
)
from enrs.kit.fhir.search_params import normalize_text, prefix_clause

P, A, St = Professional, Activity, Structure

# The main professions of the national referential (TRE_G15-ProfessionSante), for the
# portal's search form.
PROFESSIONS = (
    ("10", "Médecin"),
    ("21", "Pharmacien"),
    ("40", "Chirurgien-dentiste"),
    ("50", "Sage-femme"),
    ("60", "Infirmier"),
    ("70", "Masseur-kinésithérapeute"),
    ("80", "Pédicure-podologue"),
    ("91", "Orthophoniste"),
    ("92", "Orthoptiste"),
    ("94", "Ergothérapeute"),
    ("95", "Diététicien"),
    ("96", "Psychomotricien"),
    ("98", "Manipulateur d'électroradiologie médicale"),
    ("26", "Audioprothésiste"),
    ("28", "Opticien-lunetier"),
)


@dataclass(frozen=True)
class Hit:
    """A professional found, with their active activities."""

    professional: Professional
    activities: list[Activity]


def find_professionals(
    session: Session,
    *,
    name: str = "",
    profession: str = "",
    city: str = "",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Hit], bool]:
    """Active professionals whose family name starts with ``name`` (case and accents
    folded), practising ``profession`` (a TRE_G15 code) in a commune starting with ``city``;
    a page of ``limit`` from ``offset`` by name, and whether more follow."""
    stmt = sa.select(P).where(P.active.is_(True))
    if folded := normalize_text(name.strip()):
        stmt = stmt.where(prefix_clause(P.n_family, folded))
    where: list[sa.ColumnElement[bool]] = [A.active.is_(True)]
    if profession:
        where.append(A.profession_code == profession)
    if folded_city := normalize_text(city.strip()):
        where.append(prefix_clause(A.n_city, folded_city))
    if len(where) > 1:
        stmt = stmt.where(P.id.in_(sa.select(A.professional_id).where(*where)))
    stmt = stmt.order_by(P.n_family, P.n_given, P.id).offset(offset).limit(limit + 1)
    people = list(session.scalars(stmt))
    more = len(people) > limit
    people = people[:limit]
    acts = repository.activities_of(session, [p.id for p in people], active_only=True)
    return [Hit(p, acts[p.id]) for p in people], more


@dataclass(frozen=True)
class Card:
    """A professional's card: their activities and the directory's structures among their
    sites (by FINESS)."""

    professional: Professional
    activities: list[Activity]
    structures: dict[str, Structure]
    qualifications: list[Qualification]
    diplomas: list[Diploma]
    mailboxes: list[Mailbox]


def professional_card(session: Session, id_nat_ps: str) -> Card | None:
    person = session.scalar(sa.select(P).where(P.id_nat_ps == id_nat_ps))
    if person is None:
        return None
    activities = repository.activities_of(session, [person.id], active_only=True)[person.id]
    sites = sorted({a.finess_site for a in activities if a.finess_site})
    structures = list(session.scalars(sa.select(St).where(St.finess.in_(sites)))) if sites else []
    mine = {"professional_id": person.id, "active": True}
    qualifications = session.scalars(sa.select(Qualification).filter_by(**mine)).all()
    diplomas = session.scalars(sa.select(Diploma).filter_by(**mine)).all()
    boxes = sa.select(Mailbox).filter_by(id_nat_ps=person.id_nat_ps, active=True)
    return Card(
        person,
        activities,
        {s.finess: s for s in structures},
        list(qualifications),
        list(diplomas),
        list(session.scalars(boxes.order_by(Mailbox.address))),
    )


@dataclass(frozen=True)
class StructurePage:
    """A structure and the professionals practising there (active activities at its FINESS)."""

    structure: Structure
    staff: list[tuple[Activity, Professional]]


def structure_page(session: Session, finess: str, limit: int = 500) -> StructurePage | None:
    structure = session.scalar(sa.select(St).where(St.finess == finess))
    if structure is None:
        return None
    stmt = (
        sa.select(A, P)
        .join(P, P.id == A.professional_id)
        .where(A.finess_site == finess, A.active.is_(True))
        .order_by(P.n_family, P.n_given, A.id)
        .limit(limit)
    )
    staff = [(a, p) for a, p in session.execute(stmt).all()]
    return StructurePage(structure, staff)


@dataclass(frozen=True)
class Listed:
    """An active professional of the directory, as an account is made for them."""

    id_nat_ps: str
    display_name: str
    professions: tuple[str, ...]
    profession_codes: frozenset[str] = frozenset()

    @property
    def default_roles(self) -> tuple[str, ...]:
        """The rights an account made for them starts with, by profession: a health
        profession of TRE_G15 gives ``professional`` (patients of their care, documents);
        a social or medico-social one only (the social worker, 41; the professions
        registered regionally) gives ``social`` (the directory, and the coordination of the
        care circles they are in, without the clinical record: :mod:`enrs.coordination.auth`).
        What they may do in a structure (count its beds…) follows their activities there, at
        each request (:func:`enrs.directory.offer.may_manage`)."""
        health = {c for c in self.profession_codes if c.isdigit() and c not in SOCIAL_PROFESSIONS}
        return ("professional",) if health else ("social",)


# TRE_G15 professions of the social field (RPPS+), not health professions.
SOCIAL_PROFESSIONS = frozenset({"41"})


def listed_rpps(session: Session, rpps: str) -> Listed | None:
    """The active professional of RPPS number ``rpps`` with an active activity (a person
    whom Pro Santé Connect vouches for and the national directory lists), else ``None``."""
    person = session.scalar(
        sa.select(P).where(P.id_nat_ps == f"8{rpps}", P.id_type == "8", P.active.is_(True))
    )
    if person is None:
        return None
    activities = repository.activities_of(session, [person.id], active_only=True)[person.id]
    if not activities:
        return None
    civility = {"DR": "Dr", "PR": "Pr"}.get(person.practice_civility_code, "")
    name = " ".join(part for part in (civility, person.given, person.family) if part)
    return Listed(
        person.id_nat_ps,
        name,
        tuple(sorted({a.profession for a in activities})),
        frozenset(a.profession_code for a in activities),
    )


def practice_sites(session: Session, rpps: str) -> frozenset[str]:
    """The FINESS of the sites where the professional of RPPS number ``rpps`` has an active
    activity (their structures, for the rules that follow them: documents of a structure)."""
    stmt = (
        sa.select(A.finess_site)
        .join(P, P.id == A.professional_id)
        .where(P.id_nat_ps == f"8{rpps}", P.active.is_(True), A.active.is_(True))
    )
    return frozenset(f for f in session.scalars(stmt) if f)
