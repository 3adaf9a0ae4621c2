"""Who may read a patient's documents: the rule, in one place. Every read of the repository
(ITI-67 search, ITI-68 retrieve, the portal's patient file, ITI-66) goes through it, and so
will imaging's.

A *reader* is a person (a professional, known by their RPPS and the structures where the
directory lists their activities) or a facility's system client (its member facility).

1. **Own documents.** A reader always reads the documents they authored (same RPPS) and
   those of their structure (the author's organisation, else the facility that submitted).
2. **Care relationship.** A reader with a care relationship to the patient reads the
   patient's shared documents. The relationships are providers, asked in order
   (:data:`RELATIONSHIPS`): a structure of the reader has the patient in care (its ADT feed
   fed an active identity of the patient: :func:`enrs.identity.service.facilities_in_care`),
   an access the reader declared with its reason, or an emergency access (*bris de glace*),
   or the reader is in the patient's care circle (:mod:`enrs.coordination.circle`: an active
   member, the professional or one of their structures).
3. **Opposition.** A patient's opposition to all sharing leaves each reader only their own
   documents; an opposition to one document hides it from everyone but its own readers.
4. **Confidentiality.** A document masked to professionals (``MASQUE_PS``) or very restricted
   (confidentiality ``V``) is read only by its own readers (rule 1). A document invisible to
   the patient (``INVISIBLE_PATIENT``) is not shown in what the patient is given (the
   "who accessed my documents" report names it without its title).
5. A withdrawn document (``entered-in-error``) is read only by its own readers.

The SQL form (:func:`visible_clause`) is the rule; a single document is checked with the same
clause (:func:`enrs.documents.repository.visible_entry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.accounts import service as accounts_service
from enrs.coordination import circle
from enrs.directory import service as directory_service
from enrs.documents.models import DeclaredAccess, DocumentEntry, Opposition
from enrs.identity import service as identity_service
from enrs.kit.db import utcnow
from enrs.kit.security.principal import Principal

D = DocumentEntry

MASKED = "MASQUE_PS"
HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
VERY_RESTRICTED = "V"
DECLARED_VALIDITY = timedelta(days=30)
EMERGENCY_VALIDITY = timedelta(hours=24)


@dataclass(frozen=True)
class Reader:
    """Who reads: ``key`` as the audit trail names them (``user:…``, ``client:…``)."""

    key: str
    name: str
    kind: str
    rpps: str | None
    structures: frozenset[str]

    @property
    def origin(self) -> str:
        """Who the reader is as the origin of the events they cause
        (:func:`enrs.kit.events.set_origin`): ``rpps:…`` for a professional, ``finess:…`` for
        a facility's software, so that a notification does not go back to them."""
        if self.rpps:
            return f"rpps:{self.rpps}"
        if self.structures:
            return f"finess:{min(self.structures)}"
        return self.key


def reader_of(session: Session, principal: Principal) -> Reader:
    """The reader a principal is: a person with the sites of their activities, a system
    client with its member facility."""
    key = f"{principal.kind}:{principal.subject}"
    if principal.kind == "client":
        grant = accounts_service.client_grant(session, principal.client_id or principal.subject)
        sites = frozenset({grant.finess}) if grant is not None and grant.finess else frozenset()
        return Reader(key, principal.display, "client", None, sites)
    sites = (
        directory_service.practice_sites(session, principal.rpps) if principal.rpps else frozenset()
    )
    return Reader(key, principal.display, "user", principal.rpps, sites)


@dataclass(frozen=True)
class PatientAccess:
    """What a reader may read of one patient: ``relationship`` says why they read its shared
    documents (``None``: only their own), ``emergency`` whether by *bris de glace*."""

    patient_ids: tuple[int, ...]
    relationship: str | None
    emergency: bool = False
    opposed_all: bool = False

    @property
    def shared(self) -> bool:
        return self.relationship is not None and not self.opposed_all


Relationship = Callable[[Session, Reader, list[int]], str | None]


def _in_care(session: Session, reader: Reader, patient_ids: list[int]) -> str | None:
    if not reader.structures:
        return None
    in_care = identity_service.facilities_in_care(session, patient_ids) & reader.structures
    return f"in care at {min(in_care)}" if in_care else None


def _declared(session: Session, reader: Reader, patient_ids: list[int]) -> str | None:
    found = active_declaration(session, reader, patient_ids, utcnow())
    return None if found is None else f"{found.kind}: {found.reason}"


def _in_circle(session: Session, reader: Reader, patient_ids: list[int]) -> str | None:
    return circle.circle_relationship(session, reader.rpps, reader.structures, patient_ids)


RELATIONSHIPS: tuple[Relationship, ...] = (_in_care, _declared, _in_circle)


def active_declaration(
    session: Session, reader: Reader, patient_ids: list[int], now: datetime
) -> DeclaredAccess | None:
    """The reader's latest access declared for the patient and still valid."""
    stmt = (
        select(DeclaredAccess)
        .where(
            DeclaredAccess.patient_id.in_(patient_ids),
            DeclaredAccess.reader == reader.key,
            DeclaredAccess.expires_at > now,
        )
        .order_by(DeclaredAccess.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def opposed_to_all(session: Session, patient_ids: list[int]) -> bool:
    """Whether the patient opposes all sharing (an opposition without a document, not
    lifted)."""
    stmt = select(Opposition.id).where(
        Opposition.patient_id.in_(patient_ids),
        Opposition.document_id.is_(None),
        Opposition.lifted_at.is_(None),
    )
    return session.scalar(stmt.limit(1)) is not None


def patient_access(session: Session, reader: Reader, patient_ids: list[int]) -> PatientAccess:
    """Rules 2 and 3 for one patient (``patient_ids``: the patient and those merged into it)."""
    relationship = None
    for provider in RELATIONSHIPS:
        relationship = provider(session, reader, patient_ids)
        if relationship is not None:
            break
    return PatientAccess(
        tuple(patient_ids),
        relationship,
        emergency=relationship is not None and relationship.startswith("emergency"),
        opposed_all=opposed_to_all(session, patient_ids),
    )


def own_clause(reader: Reader) -> ColumnElement[bool]:
    """Rule 1: the documents the reader authored or their structure holds."""
    clauses: list[ColumnElement[bool]] = []
    if reader.rpps:
        clauses.append(D.author_rpps == reader.rpps)
    if reader.structures:
        clauses.append(D.structure_finess.in_(sorted(reader.structures)))
    return or_(*clauses) if clauses else false()


def visible_clause(reader: Reader, access: PatientAccess) -> ColumnElement[bool]:
    """The documents of ``access``'s patient the reader may read (rules 1 to 5)."""
    of_patient = D.patient_id.in_(access.patient_ids)
    own = own_clause(reader)
    if not access.shared:
        return and_(of_patient, own)
    return and_(of_patient, or_(own, shared_clause()))


def shared_clause() -> ColumnElement[bool]:
    """Rules 2 to 5: the documents shared with whoever has a care relationship with the
    patient (not opposed, not in error, not very restricted, not masked to professionals)."""
    return and_(
        D.opposed.is_(False),
        D.status != "entered-in-error",
        D.confidentiality != VERY_RESTRICTED,
        ~D.visibility.contains(MASKED, autoescape=True),
    )
