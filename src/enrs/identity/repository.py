"""All SQL of the identity service."""

from __future__ import annotations

from datetime import date

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

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


# Built once: SQLAlchemy caches its compiled form, and each call only binds values.
_CANDIDATES = (
    select(S)
    .where(
        S.active.is_(True),
        or_(
            S.birth_date.in_(bindparam("dates", expanding=True)),
            and_(
                S.n_birth_name.in_(bindparam("names", expanding=True)),
                S.birth_year.in_(bindparam("years", expanding=True)),
            ),
            and_(
                S.n_used_name.in_(bindparam("used_names", expanding=True)),
                S.birth_year.in_(bindparam("used_years", expanding=True)),
            ),
            and_(S.n_first_given == bindparam("given"), S.n_birth_name == bindparam("name")),
            and_(
                S.n_first_given == bindparam("name_as_given"),
                S.n_birth_name == bindparam("given_as_name"),
            ),
        ),
    )
    .limit(bindparam("limit"))
)


def candidates(session: Session, t: Traits, *, limit: int = 300) -> list[SourceIdentity]:
    """Blocking: active identities sharing the birth date (or its day/month swap), or the
    birth name (or used name) and a birth year ±1, or birth name and first name (any date),
    or the swapped names. Each key is served by an index."""
    dates: list[date] = []
    if t.birth_date is not None:
        dates = [t.birth_date]
        if (swapped := _swap(t.birth_date)) is not None:
            dates.append(swapped)
    years = [t.birth_date.year + d for d in (-1, 0, 1)] if t.birth_date else []
    names = sorted({t.birth_name, t.used_name} - {""}) if years else []
    has_names = bool(t.birth_name and t.first_given)
    params = {
        "dates": dates,
        "names": names,
        "years": years,
        "used_names": names,
        "used_years": years,
        "given": t.first_given if has_names else None,
        "name": t.birth_name if has_names else None,
        "name_as_given": t.birth_name if has_names else None,
        "given_as_name": t.first_given if has_names else None,
        "limit": limit,
    }
    if not (dates or names or has_names):
        return []
    return list(session.scalars(_CANDIDATES, params))


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
