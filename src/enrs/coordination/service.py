"""The care circle (ANS guide *Cercle de soins*, FHIR ``CareTeam``): who is in a patient's
circle, how one joins it and leaves it.

- **Making a circle**: a professional (or a facility's software) with a care relationship to
  the patient (:func:`enrs.documents.service.access_to`: in care at their structure, an access
  declared with its reason, or already in a circle) makes it and is its first member
  (``coordinator``); the regional team may make one too, and is then no member.
- **Joining** needs an invitation accepted or the patient's consent: a member invites a
  professional (RPPS, listed in the directory), a structure (FINESS) or a family carer; the
  professional (or someone of the structure) accepts and is in. A professional whom the
  patient agreed to (a ``Consent`` recorded by a member or the regional team, on the
  patient's word) joins by themselves. A family carer is a member without access rights.
- **Leaving**: a member removes another, or leaves; the regional team removes anyone; the
  removed member is out at once (every reader rule asks :mod:`.circle`).

Each change raises the circle's version; a change made with a version that is no longer
the circle's (``If-Match``) is refused (:class:`~enrs.kit.errors.PreconditionFailed`), so two
members editing at once never overwrite each other silently. Errors: 403 (not allowed), 404
(unknown circle or member), 409 (already a member, nothing to accept), 422 (unknown RPPS or
FINESS, bad role).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.coordination import circle
from enrs.coordination.models import CareTeam, CircleConsent, Member
from enrs.directory import service as directory_service
from enrs.documents import service as documents_service
from enrs.documents.access import Reader
from enrs.identity import service as identity_service
from enrs.identity.service import PatientRef
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable
from enrs.kit.events import emit

KINDS = ("practitioner", "organization", "related-person")
MEMBERSHIP = "coordination.membership"  # the event of a change of a circle's members
COORDINATOR = "coordinator"


@dataclass(frozen=True)
class Actor:
    """Who changes a circle: a reader (a professional, a facility's software) or the
    regional team (``team``: may act on any circle without being a member). ``manages``: a
    member who invites, records consents and removes others (a health professional, a
    facility's software); a social worker only accepts, joins with consent and leaves
    (:func:`enrs.coordination.auth.manages_circle`)."""

    reader: Reader
    team: bool = False
    manages: bool = True


@dataclass(frozen=True)
class NewMember:
    """A participant to add: ``rpps`` for a professional, ``finess`` for a structure,
    ``display`` for a family carer."""

    kind: str
    role: str
    rpps: str | None = None
    finess: str | None = None
    display: str | None = None
    end: datetime | None = None


def _new_id() -> str:
    return uuid.uuid4().hex


def patient_of(session: Session, team: CareTeam) -> PatientRef:
    """The regional patient the circle is now (merges followed)."""
    patient = identity_service.current_patient(session, team.patient_id)
    if patient is None:
        raise NotFound(f"CareTeam/{team.resource_id}: its patient is no longer active")
    return patient


def team_by_id(session: Session, resource_id: str) -> CareTeam:
    team = session.scalar(select(CareTeam).where(CareTeam.resource_id == resource_id))
    if team is None:
        raise NotFound(f"CareTeam/{resource_id} not found")
    return team


def members(session: Session, team: CareTeam) -> list[Member]:
    stmt = select(Member).where(Member.team_id == team.id).order_by(Member.id)
    return list(session.scalars(stmt))


def is_member(session: Session, team: CareTeam, reader: Reader) -> bool:
    """Whether the reader is in the circle now (an active member, or one of their
    structures is)."""
    stmt = select(Member.id).where(
        Member.team_id == team.id,
        circle.current_clause(utcnow()),
        circle.member_clause(reader.rpps, reader.structures),
    )
    return session.scalar(stmt.limit(1)) is not None


def circle_of(session: Session, team_id: int, what: str) -> CareTeam:
    """The care circle a record (``what``: ``Task/{id}``, ``CarePlan/{id}``…) belongs to."""
    team = session.get(CareTeam, team_id)
    if team is None:  # a foreign key: never
        raise NotFound(f"{what}: its care circle is gone")
    return team


def require_current_member(session: Session, team: CareTeam, reader: Reader, what: str) -> None:
    """403 unless the circle is active and the reader in it now: the rule of every record of a
    circle (its tasks, plans, appointments)."""
    if team.status != circle.ACTIVE or not is_member(session, team, reader):
        raise Forbidden(f"{what}: for the current members of CareTeam/{team.resource_id} only")


def members_of(session: Session, team_ids: list[int]) -> dict[int, list[Member]]:
    """The members of several circles at once, per circle id (in :func:`members`' order)."""
    found: dict[int, list[Member]] = {}
    stmt = select(Member).where(Member.team_id.in_(team_ids)).order_by(Member.id)
    for member in session.scalars(stmt):
        found.setdefault(member.team_id, []).append(member)
    return found


def circles_of_stmt(session: Session, patient: PatientRef, actor: Actor) -> Select[CareTeam]:
    """The statement of the patient's circles (those of the patients merged into it too) the
    actor sees (:func:`may_see`), in no order."""
    ids = identity_service.merged_patient_ids(session, patient.id)
    stmt = select(CareTeam).where(CareTeam.patient_id.in_(ids))
    return stmt if actor.team else stmt.where(_seen_clause(actor.reader))


def circles_of(session: Session, patient: PatientRef) -> list[CareTeam]:
    """The patient's circles (those of the patients merged into it too)."""
    ids = identity_service.merged_patient_ids(session, patient.id)
    stmt = select(CareTeam).where(CareTeam.patient_id.in_(ids)).order_by(CareTeam.id)
    return list(session.scalars(stmt))


def circles_with_stmt(reader: Reader) -> Select[CareTeam]:
    """The statement of the active circles the reader is in now, in no order."""
    member = exists().where(
        Member.team_id == CareTeam.id,
        circle.current_clause(utcnow()),
        circle.member_clause(reader.rpps, reader.structures),
    )
    return select(CareTeam).where(CareTeam.status == circle.ACTIVE, member)


def circles_with(session: Session, reader: Reader) -> list[CareTeam]:
    """The active circles the reader is in now."""
    return list(session.scalars(circles_with_stmt(reader).order_by(CareTeam.id)))


def _seen_clause(reader: Reader) -> ColumnElement[bool]:
    """The circles a reader sees: those they are a current member of, or invited to."""
    now_in = circle.current_clause(utcnow())
    return exists().where(
        Member.team_id == CareTeam.id,
        circle.member_clause(reader.rpps, reader.structures),
        or_(now_in, Member.status == "invited"),
    )


def may_see(session: Session, team: CareTeam, actor: Actor) -> bool:
    """Who sees a circle: the regional team, its members, and the invited (to accept)."""
    if actor.team:
        return True
    stmt = select(CareTeam.id).where(CareTeam.id == team.id, _seen_clause(actor.reader))
    return session.scalar(stmt) is not None


def _check_version(team: CareTeam, expected: int | None) -> None:
    if expected is not None and expected != team.version:
        raise PreconditionFailed(
            f"CareTeam/{team.resource_id} is at version {team.version}, not {expected}: "
            "read it again before changing it"
        )


def _touch(session: Session, team: CareTeam) -> None:
    """A new version of the circle; its live readers re-check who is in it
    (:data:`MEMBERSHIP`, in commit order with the chat's events)."""
    team.version += 1
    team.updated_at = utcnow()
    emit(session, MEMBERSHIP, {"team": team.resource_id})


def _require_member(session: Session, team: CareTeam, actor: Actor) -> None:
    if actor.team:
        return
    if not actor.manages:
        raise Forbidden(
            f"CareTeam/{team.resource_id}: its members are invited or removed by a health "
            "professional of the circle"
        )
    if not is_member(session, team, actor.reader):
        raise Forbidden(f"only a member of CareTeam/{team.resource_id} changes it")


def create(
    session: Session, actor: Actor, patient: PatientRef, *, name: str, role: str = COORDINATOR
) -> CareTeam:
    """A new circle for the patient; its maker is its first member (a professional, or the
    structure of a facility's software)."""
    name = name.strip()
    if not name or len(name) > 256:
        raise Unprocessable("CareTeam.name: 1 to 256 characters")
    reader = actor.reader
    if not actor.team:
        granted = documents_service.access_to(session, reader, patient)
        if granted.relationship is None:
            raise Forbidden("a circle is made by a professional caring for the patient")
    now = utcnow()
    team = CareTeam(
        resource_id=_new_id(),
        patient_id=patient.id,
        name=name,
        created_by=reader.key,
        created_at=now,
        updated_at=now,
    )
    session.add(team)
    session.flush()
    if not actor.team:
        if reader.rpps:
            first = NewMember("practitioner", role, rpps=reader.rpps)
        elif reader.structures:
            first = NewMember("organization", role, finess=min(reader.structures))
        else:
            raise Forbidden("a circle's maker is a professional or a structure")
        _add(session, team, first, status=circle.ACTIVE, by=reader.key, how="creation")
    return team


def _described(session: Session, new: NewMember) -> tuple[str | None, str | None, str]:
    """``(rpps, finess, display)`` of a new member, checked against the directory."""
    if new.kind not in KINDS:
        raise Unprocessable(f"a member is one of {', '.join(KINDS)}")
    role = new.role.strip()
    if not role or len(role) > 128:
        raise Unprocessable("a member's role: 1 to 128 characters")
    if new.kind == "practitioner":
        listed = directory_service.listed_rpps(session, new.rpps or "")
        if listed is None:
            raise Unprocessable(f"RPPS {new.rpps}: no active professional in the directory")
        return new.rpps, None, listed.display_name
    if new.kind == "organization":
        page = directory_service.structure_page(session, new.finess or "", limit=0)
        if page is None:
            raise Unprocessable(f"FINESS {new.finess}: no structure in the directory")
        return None, new.finess, page.structure.name
    display = (new.display or "").strip()
    if not display or len(display) > 256:
        raise Unprocessable("a family carer is named (1 to 256 characters)")
    return None, None, display


def _add(
    session: Session, team: CareTeam, new: NewMember, *, status: str, by: str, how: str | None
) -> Member:
    rpps, finess, display = _described(session, new)
    for other in members(session, team):
        same = (rpps and other.rpps == rpps) or (finess and other.finess == finess)
        if same and other.status != "removed":
            raise Conflict(f"{display} is already {other.status} in CareTeam/{team.resource_id}")
    now = utcnow()
    member = Member(
        team_id=team.id,
        kind=new.kind,
        rpps=rpps,
        finess=finess,
        display=display,
        role=new.role.strip(),
        status=status,
        period_start=now if status == circle.ACTIVE else None,
        period_end=new.end,
        added_by=by,
        joined_by=how,
        created_at=now,
    )
    session.add(member)
    session.flush()
    return member


def invite(
    session: Session, actor: Actor, team: CareTeam, new: NewMember, expected: int | None = None
) -> Member:
    """A member (or the regional team) invites a professional or a structure, who is in once
    they accept; a family carer is added as a member at once (they have no access rights)."""
    _require_member(session, team, actor)
    _check_version(team, expected)
    status = circle.ACTIVE if new.kind == "related-person" else "invited"
    how = "invitation" if status == circle.ACTIVE else None
    member = _add(session, team, new, status=status, by=actor.reader.key, how=how)
    _touch(session, team)
    return member


def _invitation(session: Session, team: CareTeam, reader: Reader) -> Member | None:
    stmt = select(Member).where(
        Member.team_id == team.id,
        Member.status == "invited",
        circle.member_clause(reader.rpps, reader.structures),
    )
    return session.scalar(stmt.order_by(Member.id).limit(1))


def accept(session: Session, actor: Actor, team: CareTeam) -> Member:
    """The invited professional (or someone of the invited structure) accepts: in the circle
    from now."""
    member = _invitation(session, team, actor.reader)
    if member is None:
        raise Conflict(f"no invitation to CareTeam/{team.resource_id} to accept")
    member.status, member.period_start, member.joined_by = circle.ACTIVE, utcnow(), "invitation"
    _touch(session, team)
    return member


def record_consent(
    session: Session, actor: Actor, team: CareTeam, *, rpps: str | None, finess: str | None
) -> CircleConsent:
    """The patient agrees that a professional (or a structure) joins the circle: recorded by
    a member or the regional team, on the patient's word."""
    _require_member(session, team, actor)
    if (rpps is None) == (finess is None):
        raise Unprocessable("Consent.provision.actor: one professional (RPPS) or structure")
    kind = "practitioner" if rpps else "organization"
    _described(session, NewMember(kind, "consent", rpps=rpps, finess=finess))
    consent = CircleConsent(
        resource_id=_new_id(),
        team_id=team.id,
        rpps=rpps,
        finess=finess,
        recorded_by=actor.reader.key,
    )
    session.add(consent)
    session.flush()
    return consent


def join(session: Session, actor: Actor, team: CareTeam, *, role: str) -> Member:
    """A professional (or a structure's software) whom the patient agreed to joins."""
    reader = actor.reader
    stmt = select(CircleConsent).where(
        CircleConsent.team_id == team.id, CircleConsent.status == circle.ACTIVE
    )
    agreed = [
        c
        for c in session.scalars(stmt)
        if (c.rpps and c.rpps == reader.rpps) or (c.finess and c.finess in reader.structures)
    ]
    if not agreed:
        raise Forbidden(
            f"joining CareTeam/{team.resource_id} needs the patient's consent or an invitation"
        )
    chosen = agreed[0]
    kind = "practitioner" if chosen.rpps else "organization"
    new = NewMember(kind, role, rpps=chosen.rpps, finess=chosen.finess)
    member = _add(session, team, new, status=circle.ACTIVE, by=reader.key, how="consent")
    _touch(session, team)
    return member


def remove(
    session: Session, actor: Actor, team: CareTeam, member_id: int, expected: int | None = None
) -> Member:
    """A member leaves the circle (removed by a member, the regional team, or themselves):
    out at once, the row kept with the end of its period."""
    member = session.get(Member, member_id)
    if member is None or member.team_id != team.id or member.status == "removed":
        raise NotFound(f"CareTeam/{team.resource_id} has no member {member_id}")
    reader = actor.reader
    themselves = (member.rpps and member.rpps == reader.rpps) or (
        member.finess and member.finess in reader.structures
    )
    if not themselves:
        _require_member(session, team, actor)
    _check_version(team, expected)
    member.status, member.period_end = "removed", utcnow()
    _touch(session, team)
    return member
