"""All SQL of the identity service."""

from __future__ import annotations

from datetime import date

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.identity.matching.compare import Traits
from enrs.identity.models import IdentityLink, IdentityTask, RegionalPatient, SourceIdentity

S = SourceIdentity


def source_by_key(session: Session, authority: str, ipp: str) -> SourceIdentity | None:
    return session.scalar(select(S).where(S.authority == authority, S.ipp == ipp))


def sources_by_ins(session: Session, ins: str) -> list[SourceIdentity]:
    return list(session.scalars(select(S).where(S.ins == ins, S.active.is_(True)).order_by(S.id)))


def sources_of_patient(session: Session, patient_id: int) -> list[SourceIdentity]:
    stmt = select(S).where(S.patient_id == patient_id, S.active.is_(True)).order_by(S.id)
    return list(session.scalars(stmt))


def patient(session: Session, patient_id: int) -> RegionalPatient | None:
    return session.get(RegionalPatient, patient_id)


def patient_by_rri(session: Session, rri: str) -> RegionalPatient | None:
    return session.scalar(select(RegionalPatient).where(RegionalPatient.rri == rri))


def _swap(d: date) -> date | None:
    if d.day <= 12 and d.day != d.month:
        return d.replace(month=d.day, day=d.month)
    return None


def candidates(session: Session, t: Traits, *, limit: int = 300) -> list[SourceIdentity]:
    """Blocking: active identities sharing the birth date (or its day/month swap), or the
    birth name and a birth year ±1, or birth name and first name (any date), or the swapped
    names, or a used name. Each key is served by an index."""
    keys: list[ColumnElement[bool]] = []
    if t.birth_date is not None:
        dates = {t.birth_date} | ({s} if (s := _swap(t.birth_date)) else set())
        keys.append(S.birth_date.in_(sorted(dates)))
    year = t.birth_date.year if t.birth_date else None
    years = [year - 1, year, year + 1] if year else []
    for name in {t.birth_name, t.used_name} - {""}:
        if years:
            keys.append(and_(S.n_birth_name == name, S.birth_year.in_(years)))
            keys.append(and_(S.n_used_name == name, S.birth_year.in_(years)))
    if t.birth_name and t.first_given:
        keys.append(and_(S.n_first_given == t.first_given, S.n_birth_name == t.birth_name))
        keys.append(and_(S.n_first_given == t.birth_name, S.n_birth_name == t.first_given))
    if not keys:
        return []
    stmt = select(S).where(S.active.is_(True), or_(*keys)).limit(limit)
    return list(session.scalars(stmt))


def current_link(session: Session, source_id: int) -> IdentityLink | None:
    stmt = select(IdentityLink).where(
        IdentityLink.source_id == source_id, IdentityLink.ended_at.is_(None)
    )
    return session.scalar(stmt)


def open_task(
    session: Session, kind: str, source_id: int, other_patient_id: int
) -> IdentityTask | None:
    stmt = select(IdentityTask).where(
        IdentityTask.kind == kind,
        IdentityTask.source_id == source_id,
        IdentityTask.other_patient_id == other_patient_id,
        IdentityTask.status == "OPEN",
    )
    return session.scalar(stmt)


def identifiers_of_patient(session: Session, patient_id: int) -> list[SourceIdentity]:
    return sources_of_patient(session, patient_id)


def kept_apart(session: Session, source_id: int, other_patient_id: int) -> bool:
    """The cell decided this identity and that patient are two people."""
    stmt = select(IdentityTask.id).where(
        IdentityTask.source_id == source_id,
        IdentityTask.other_patient_id == other_patient_id,
        IdentityTask.decision == "KEEP_APART",
    )
    return session.scalar(stmt.limit(1)) is not None
