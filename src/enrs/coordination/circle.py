"""The care circle as a care relationship: the one rule the document repository (and imaging)
ask to know whether a reader is in a patient's circle.

A reader is in the circle of a patient when one of the patient's active circles (the patient,
or a patient merged into it) has an ``active`` member, within its period, that is the reader
(same RPPS) or one of the reader's structures (a FINESS where they practise, or a facility's
system client). An ``invited`` member is not in the circle until they accept; a ``removed``
one is out at once. Family carers are members without access rights: they are no reader."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.coordination.models import CareTeam, Member
from enrs.kit.db import utcnow

ACTIVE = "active"


def member_clause(rpps: str | None, structures: Iterable[str]) -> ColumnElement[bool]:
    """The members that are this reader: the professional, or one of their structures."""
    sites = sorted(structures)
    options = []
    if rpps:
        options.append(and_(Member.kind == "practitioner", Member.rpps == rpps))
    if sites:
        options.append(and_(Member.kind == "organization", Member.finess.in_(sites)))
    return or_(*options) if options else false()


def current_clause(now: datetime) -> ColumnElement[bool]:
    """Members in the circle now: active, their period begun and not ended."""
    return and_(
        Member.status == ACTIVE,
        or_(Member.period_start.is_(None), Member.period_start <= now),
        or_(Member.period_end.is_(None), Member.period_end > now),
    )


def circle_relationship(
    session: Session,
    rpps: str | None,
    structures: Iterable[str],
    patient_ids: list[int],
    now: datetime | None = None,
) -> str | None:
    """``"care circle {name}"`` when the reader is in one of the patient's active circles,
    else ``None``."""
    stmt = (
        select(CareTeam.name)
        .join(Member, Member.team_id == CareTeam.id)
        .where(
            CareTeam.patient_id.in_(patient_ids),
            CareTeam.status == ACTIVE,
            current_clause(now or utcnow()),
            member_clause(rpps, structures),
        )
        .order_by(CareTeam.id)
        .limit(1)
    )
    name = session.scalar(stmt)
    return None if name is None else f"care circle {name}"
