"""The shared agenda of the care circles (issue 15; FHIR ``Appointment``, ``Schedule``,
``Slot``; ANS guide *Gestion d'agendas partagés*, FR Core ``Appointment``).

**Appointments** belong to one care circle and its patient:

- **Who**: only the circle's current members (a professional, or one of their structures:
  :func:`enrs.coordination.service.is_member`, the rule of :mod:`.circle`) create, see and
  change its appointments; a member removed from the circle loses them at once.
- **Participants**: the circle's patient (always), and one or more professionals (RPPS) or
  structures (FINESS) that are current members of the circle when they are added (one kept
  from before stays, even once out of the circle), each with their answer (``accepted``,
  ``declined``, ``tentative``, ``needs-action``).
- **States**: the FHIR subset ``proposed``, ``booked``, ``fulfilled``, ``noshow``,
  ``cancelled``, moving only along :data:`TRANSITIONS`; a new appointment is ``proposed`` or
  ``booked``; the last three are final. An appointment always has its start and end (FR
  Core's ``app-3`` lets a proposed one go without; we do not).
- **Versions**: each change raises the version; a change made on another version
  (``If-Match``) is refused, nothing changed.

**Schedules and slots**: a professional publishes their agenda (one ``Schedule``) and free
``Slot``s in it; any professional may read them (free/busy only, never whose appointment).
An appointment booked on a slot (``Appointment.slot``) takes it — ``busy``, or
``busy-tentative`` while proposed — with one conditional ``UPDATE … WHERE status = 'free'``,
so of two bookings racing for one slot only one wins, the other is refused (409); a
cancelled appointment frees its slot. The slot's professional is a participant of the
appointment and the appointment lies within the slot.

Errors: 403 (not a member, not the schedule's owner), 404 (unknown appointment, schedule or
slot), 409 (a move its state does not allow, a slot not free, an overlapping slot, a second
schedule), 412 (stale version), 422 (bad fields, a participant not in the circle).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, exists, false, or_, select, update
from sqlalchemy.orm import Session

from enrs.coordination import circle, service
from enrs.coordination.agenda_models import (
    AppointmentParticipant,
    CoordinationAppointment,
    CoordinationSchedule,
    CoordinationSlot,
)
from enrs.coordination.models import CareTeam, Member
from enrs.coordination.plan_models import CarePlan, PlanActivity
from enrs.documents.access import Reader
from enrs.kit.db import utcnow
from enrs.kit.errors import Conflict, Forbidden, NotFound, PreconditionFailed, Unprocessable

PROPOSED, BOOKED, CANCELLED = "proposed", "booked", "cancelled"
TRANSITIONS: dict[str, frozenset[str]] = {
    PROPOSED: frozenset({BOOKED, CANCELLED}),
    BOOKED: frozenset({"fulfilled", "noshow", CANCELLED}),
    "fulfilled": frozenset(),
    "noshow": frozenset(),
    CANCELLED: frozenset(),
}
NEW_STATES = frozenset({PROPOSED, BOOKED})
CLOSED = frozenset({"fulfilled", "noshow", CANCELLED})
ANSWERS = ("accepted", "declined", "tentative", "needs-action")
SLOT_STATES = ("free", "busy", "busy-tentative", "busy-unavailable")
OWNER_SET = frozenset({"free", "busy-unavailable"})  # what a schedule's owner sets by hand


@dataclass(frozen=True)
class Participant:
    """A professional (``rpps``) or a structure (``finess``) taking part, and their answer."""

    kind: str
    rpps: str | None = None
    finess: str | None = None
    status: str = "needs-action"

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, (self.rpps if self.kind == "practitioner" else self.finess) or "")


@dataclass(frozen=True)
class AppointmentFields:
    """What an appointment says, as created or as replaced by an update. ``slot``: the
    ``Slot`` id it is booked on, if any. Times are timezone-aware."""

    title: str
    start: datetime
    end: datetime
    participants: tuple[Participant, ...]
    status: str = PROPOSED
    comment: str | None = None
    slot: str | None = None
    patient_status: str = "needs-action"


def _new_id() -> str:
    return uuid.uuid4().hex


# --- appointments ---------------------------------------------------------------------------


def team_of(session: Session, appointment: CoordinationAppointment) -> CareTeam:
    return service.circle_of(session, appointment.team_id, f"Appointment/{appointment.resource_id}")


def appointment_by_id(session: Session, resource_id: str) -> CoordinationAppointment:
    found = session.scalar(
        select(CoordinationAppointment).where(CoordinationAppointment.resource_id == resource_id)
    )
    if found is None:
        raise NotFound(f"Appointment/{resource_id} not found")
    return found


def participants_of(
    session: Session, appointment: CoordinationAppointment
) -> list[AppointmentParticipant]:
    stmt = (
        select(AppointmentParticipant)
        .where(AppointmentParticipant.appointment_id == appointment.id)
        .order_by(AppointmentParticipant.id)
    )
    return list(session.scalars(stmt))


def plan_of(session: Session, appointment: CoordinationAppointment) -> CarePlan | None:
    """The care plan whose applied pathway proposed the appointment, if one did."""
    stmt = (
        select(CarePlan)
        .join(PlanActivity, PlanActivity.plan_id == CarePlan.id)
        .where(PlanActivity.appointment_id == appointment.id)
    )
    return session.scalars(stmt.limit(1)).first()


def slot_of(session: Session, appointment: CoordinationAppointment) -> CoordinationSlot | None:
    return (
        None if appointment.slot_id is None else session.get(CoordinationSlot, appointment.slot_id)
    )


def seen(
    session: Session, appointment: CoordinationAppointment, reader: Reader
) -> CoordinationAppointment:
    """The appointment, when the reader is a current member of its circle (else 403)."""
    what = f"Appointment/{appointment.resource_id}"
    service.require_current_member(session, team_of(session, appointment), reader, what)
    return appointment


def _checked(fields: AppointmentFields) -> None:
    title = fields.title.strip()
    if not title or len(title) > 256:
        raise Unprocessable("an appointment's title (Appointment.description): 1 to 256 characters")
    if fields.status not in TRANSITIONS:
        raise Unprocessable(f"Appointment.status: one of {', '.join(TRANSITIONS)}")
    if fields.start.tzinfo is None or fields.end.tzinfo is None:
        raise Unprocessable("Appointment.start and end: instants with a time zone")
    if fields.end <= fields.start:
        raise Unprocessable("Appointment.end: after its start")
    if not fields.participants:
        raise Unprocessable("an appointment has a professional or a structure as participant")
    keys = [p.key for p in fields.participants]
    if len(set(keys)) != len(keys):
        raise Unprocessable("Appointment.participant: each professional or structure once")
    for p in fields.participants:
        if p.kind not in ("practitioner", "organization"):
            raise Unprocessable("Appointment.participant: a professional or a structure")
        if p.status not in ANSWERS:
            raise Unprocessable(f"Appointment.participant.status: one of {', '.join(ANSWERS)}")
    if fields.patient_status not in ANSWERS:
        raise Unprocessable(f"Appointment.participant.status: one of {', '.join(ANSWERS)}")


def _member_display(session: Session, team: CareTeam, p: Participant) -> str:
    """The display of a participant who is a current member of the circle, else 422."""
    stmt = select(Member.display).where(
        Member.team_id == team.id, Member.kind == p.kind, circle.current_clause(utcnow())
    )
    if p.kind == "practitioner":
        stmt = stmt.where(Member.rpps == (p.rpps or ""))
    else:
        stmt = stmt.where(Member.finess == (p.finess or ""))
    display = session.scalar(stmt.order_by(Member.id).limit(1))
    if display is None:
        raise Unprocessable(
            f"Appointment.participant {p.rpps or p.finess}: not a current member of "
            f"CareTeam/{team.resource_id}"
        )
    return display


def _set_participants(
    session: Session,
    team: CareTeam,
    appointment: CoordinationAppointment,
    wanted: Sequence[Participant],
) -> None:
    """The appointment's participants become ``wanted``: kept ones keep their display (even
    out of the circle now), new ones are current members of the circle."""
    before = {
        (p.kind, (p.rpps or p.finess) or ""): p for p in participants_of(session, appointment)
    }
    for p in wanted:
        row = before.pop(p.key, None)
        if row is None:
            row = AppointmentParticipant(
                appointment_id=appointment.id,
                kind=p.kind,
                rpps=p.rpps if p.kind == "practitioner" else None,
                finess=p.finess if p.kind == "organization" else None,
                display=_member_display(session, team, p),
            )
            session.add(row)
        row.status = p.status
    for gone in before.values():
        session.delete(gone)
    session.flush()


def _slot_state(status: str) -> str:
    return "busy-tentative" if status == PROPOSED else "busy"


def _take_slot(session: Session, slot_id: str, fields: AppointmentFields) -> CoordinationSlot:
    """Takes a free slot for the appointment (one conditional UPDATE: 409 when it is not
    free, a racing booking included)."""
    slot = slot_by_id(session, slot_id)
    schedule = session.get(CoordinationSchedule, slot.schedule_id)
    if schedule is None or not schedule.active:
        raise Conflict(f"Slot/{slot_id}: its schedule is not active")
    if ("practitioner", schedule.rpps) not in {p.key for p in fields.participants}:
        raise Unprocessable(f"Slot/{slot_id}: its professional is a participant of the appointment")
    if fields.start < slot.start_at or fields.end > slot.end_at:
        raise Unprocessable(f"Appointment.start and end: within Slot/{slot_id}")
    taking = (
        update(CoordinationSlot)
        .where(CoordinationSlot.id == slot.id, CoordinationSlot.status == "free")
        .values(
            status=_slot_state(fields.status),
            version=CoordinationSlot.version + 1,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(taking))
    if result.rowcount != 1:
        raise Conflict(f"Slot/{slot_id} is not free")
    session.refresh(slot)
    return slot


def _set_slot(session: Session, slot: CoordinationSlot, status: str) -> None:
    if slot.status != status:
        slot.status, slot.version, slot.updated_at = status, slot.version + 1, utcnow()


def create_appointment(
    session: Session, reader: Reader, team: CareTeam, fields: AppointmentFields
) -> CoordinationAppointment:
    """A new appointment of the circle, made by one of its current members, ``proposed`` or
    ``booked``; on a slot when ``fields.slot`` names one (taken, or 409).

    The public entry point for other code of the platform (the pathway templates'
    ``$apply``): it runs in the caller's transaction and only flushes; a refusal raises
    (:class:`~enrs.kit.errors.EnrsError`: 403, 404, 409, 422) and the caller's transaction
    is to be rolled back. The caller audits the call with the patient (the endpoints do it
    through :func:`enrs.kit.http.require`)."""
    service.require_current_member(session, team, reader, "an appointment")
    _checked(fields)
    if fields.status not in NEW_STATES:
        raise Unprocessable("a new appointment is proposed or booked (Appointment.status)")
    now = utcnow()
    appointment = CoordinationAppointment(
        resource_id=_new_id(),
        team_id=team.id,
        patient_id=team.patient_id,
        status=fields.status,
        title=fields.title.strip(),
        patient_status=fields.patient_status,
        comment=fields.comment,
        start_at=fields.start.astimezone(UTC),
        end_at=fields.end.astimezone(UTC),
        created_by_key=reader.key,
        created_by_display=reader.name,
        created_at=now,
        updated_at=now,
        version=1,
    )
    if fields.slot is not None:
        appointment.slot_id = _take_slot(session, fields.slot, fields).id
    session.add(appointment)
    session.flush()
    _set_participants(session, team, appointment, fields.participants)
    return appointment


def _snapshot(session: Session, appointment: CoordinationAppointment) -> tuple[object, ...]:
    slot = slot_of(session, appointment)
    people = {
        (p.kind, (p.rpps or p.finess) or ""): p.status
        for p in participants_of(session, appointment)
    }
    return (
        appointment.status,
        appointment.title,
        appointment.patient_status,
        appointment.comment,
        appointment.start_at,
        appointment.end_at,
        slot.resource_id if slot is not None else None,
        people,
    )


def _wanted(fields: AppointmentFields) -> tuple[object, ...]:
    people = {p.key: p.status for p in fields.participants}
    return (
        fields.status,
        fields.title.strip(),
        fields.patient_status,
        fields.comment,
        fields.start,
        fields.end,
        fields.slot,
        people,
    )


def _move_slot(
    session: Session, appointment: CoordinationAppointment, fields: AppointmentFields
) -> None:
    """The slot follows the appointment: freed when it is cancelled or leaves it, another
    one taken (or 409), ``busy`` once booked."""
    current = slot_of(session, appointment)
    current_id = current.resource_id if current is not None else None
    if fields.status == CANCELLED:
        if fields.slot != current_id:
            raise Unprocessable("a cancelled appointment keeps its slot (Appointment.slot)")
        if current is not None:
            _set_slot(session, current, "free")  # the appointment keeps it as history
    elif fields.slot == current_id:
        if current is not None:
            if fields.start < current.start_at or fields.end > current.end_at:
                raise Unprocessable(f"Appointment.start and end: within Slot/{current_id}")
            _set_slot(session, current, _slot_state(fields.status))
    else:
        if current is not None:
            _set_slot(session, current, "free")  # released before another one is taken
            session.flush()
        taken = None if fields.slot is None else _take_slot(session, fields.slot, fields)
        appointment.slot_id = None if taken is None else taken.id


def update_appointment(
    session: Session,
    reader: Reader,
    appointment: CoordinationAppointment,
    fields: AppointmentFields,
    expected: int | None = None,
) -> CoordinationAppointment:
    """A current member of the circle changes the appointment (its state along
    :data:`TRANSITIONS`, times, title, comment, participants and their answers, its slot).
    A closed one (fulfilled, noshow, cancelled) changes no more (409; the same body again is
    no change). Cancelling frees its slot; booking a proposed one makes its slot ``busy``.
    ``expected``: the version the change was made on; another one is refused, nothing
    changed. The appointment's row is locked and read again first, so of two changes made
    on one version at the same time the second waits for the first and is refused (412)."""
    session.refresh(appointment, with_for_update=True)
    team = team_of(session, appointment)
    service.require_current_member(session, team, reader, f"Appointment/{appointment.resource_id}")
    if expected is not None and expected != appointment.version:
        raise PreconditionFailed(
            f"Appointment/{appointment.resource_id} is at version {appointment.version}, not "
            f"{expected}: read it again before changing it"
        )
    _checked(fields)
    what = f"Appointment/{appointment.resource_id} is {appointment.status}"
    if fields.status != appointment.status and fields.status not in TRANSITIONS[appointment.status]:
        raise Conflict(f"{what}: it cannot be {fields.status}")
    before = _snapshot(session, appointment)
    if before == _wanted(fields):
        return appointment
    if appointment.status in CLOSED:
        raise Conflict(f"{what}: it does not change any more")
    _move_slot(session, appointment, fields)
    appointment.status, appointment.title = fields.status, fields.title.strip()
    appointment.comment, appointment.patient_status = fields.comment, fields.patient_status
    appointment.start_at = fields.start.astimezone(UTC)
    appointment.end_at = fields.end.astimezone(UTC)
    _set_participants(session, team, appointment, fields.participants)
    appointment.version += 1
    appointment.updated_at = utcnow()
    return appointment


def _mine_clause(reader: Reader) -> Any:
    """Appointments with the reader among the participants (their RPPS or a structure)."""
    options = []
    if reader.rpps:
        options.append(AppointmentParticipant.rpps == reader.rpps)
    if reader.structures:
        options.append(AppointmentParticipant.finess.in_(sorted(reader.structures)))
    if not options:
        return false()
    return exists().where(
        AppointmentParticipant.appointment_id == CoordinationAppointment.id, or_(*options)
    )


def appointments_stmt(
    reader: Reader,
    *,
    mine: bool = False,
    patient_ids: list[int] | None = None,
    team: CareTeam | None = None,
    start_from: datetime | None = None,
    start_before: datetime | None = None,
    statuses: frozenset[str] | None = None,
) -> Select[CoordinationAppointment]:
    """The statement of the appointments of the circles the reader is a current member of, in
    no order: of the
    patient (merged patients too) when ``patient_ids`` is given, of one circle when ``team``
    is; ``mine``: only those the reader takes part in (their RPPS or one of their
    structures); starting in ``[start_from, start_before)``."""
    member = exists().where(
        Member.team_id == CoordinationAppointment.team_id,
        circle.current_clause(utcnow()),
        circle.member_clause(reader.rpps, reader.structures),
    )
    stmt = (
        select(CoordinationAppointment)
        .join(CareTeam, CareTeam.id == CoordinationAppointment.team_id)
        .where(CareTeam.status == circle.ACTIVE, member)
    )
    if patient_ids is not None:
        stmt = stmt.where(CoordinationAppointment.patient_id.in_(patient_ids))
    if team is not None:
        stmt = stmt.where(CoordinationAppointment.team_id == team.id)
    if mine:
        stmt = stmt.where(_mine_clause(reader))
    if start_from is not None:
        stmt = stmt.where(CoordinationAppointment.start_at >= start_from)
    if start_before is not None:
        stmt = stmt.where(CoordinationAppointment.start_at < start_before)
    if statuses is not None:
        stmt = stmt.where(CoordinationAppointment.status.in_(sorted(statuses)))
    return stmt


def appointments_for(
    session: Session, stmt: Select[CoordinationAppointment]
) -> list[CoordinationAppointment]:
    """The appointments of ``stmt`` (an :func:`appointments_stmt`), by start."""
    order = (CoordinationAppointment.start_at, CoordinationAppointment.id)
    return list(session.scalars(stmt.order_by(*order)))


# --- schedules and slots --------------------------------------------------------------------


def schedule_by_id(session: Session, resource_id: str) -> CoordinationSchedule:
    found = session.scalar(
        select(CoordinationSchedule).where(CoordinationSchedule.resource_id == resource_id)
    )
    if found is None:
        raise NotFound(f"Schedule/{resource_id} not found")
    return found


def schedule_of(session: Session, rpps: str) -> CoordinationSchedule | None:
    return session.scalar(select(CoordinationSchedule).where(CoordinationSchedule.rpps == rpps))


def create_schedule(
    session: Session, reader: Reader, comment: str | None = None
) -> CoordinationSchedule:
    """A professional opens their agenda (one each; 409 for a second one); software and
    people without an RPPS have none (403)."""
    if reader.kind != "user" or not reader.rpps:
        raise Forbidden("a schedule is a professional's own (an RPPS)")
    if schedule_of(session, reader.rpps) is not None:
        raise Conflict(f"RPPS {reader.rpps} already has a schedule")
    now = utcnow()
    schedule = CoordinationSchedule(
        resource_id=_new_id(),
        rpps=reader.rpps,
        display=reader.name,
        comment=comment,
        active=True,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(schedule)
    session.flush()
    return schedule


def _require_owner(schedule: CoordinationSchedule, reader: Reader) -> None:
    if reader.kind != "user" or reader.rpps != schedule.rpps:
        raise Forbidden(f"Schedule/{schedule.resource_id} is changed by its professional only")


def slot_by_id(session: Session, resource_id: str) -> CoordinationSlot:
    found = session.scalar(
        select(CoordinationSlot).where(CoordinationSlot.resource_id == resource_id)
    )
    if found is None:
        raise NotFound(f"Slot/{resource_id} not found")
    return found


def _no_overlap(
    session: Session, schedule: CoordinationSchedule, start: datetime, end: datetime, but: int
) -> None:
    stmt = select(CoordinationSlot.resource_id).where(
        CoordinationSlot.schedule_id == schedule.id,
        CoordinationSlot.id != but,
        CoordinationSlot.start_at < end,
        CoordinationSlot.end_at > start,
    )
    other = session.scalar(stmt.limit(1))
    if other is not None:
        raise Conflict(f"the slot overlaps Slot/{other} of Schedule/{schedule.resource_id}")


def _slot_times(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise Unprocessable("Slot.start and end: instants with a time zone")
    if end <= start:
        raise Unprocessable("Slot.end: after its start")


def create_slot(
    session: Session,
    reader: Reader,
    schedule: CoordinationSchedule,
    *,
    start: datetime,
    end: datetime,
    status: str = "free",
    comment: str | None = None,
) -> CoordinationSlot:
    """The schedule's professional publishes a slot (``free`` or ``busy-unavailable``) that
    overlaps none of theirs."""
    _require_owner(schedule, reader)
    _slot_times(start, end)
    if status not in OWNER_SET:
        raise Unprocessable("a new slot is free or busy-unavailable (Slot.status)")
    _no_overlap(session, schedule, start, end, but=-1)
    now = utcnow()
    slot = CoordinationSlot(
        resource_id=_new_id(),
        schedule_id=schedule.id,
        status=status,
        start_at=start.astimezone(UTC),
        end_at=end.astimezone(UTC),
        comment=comment,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(slot)
    session.flush()
    return slot


def update_slot(
    session: Session,
    reader: Reader,
    slot: CoordinationSlot,
    *,
    start: datetime,
    end: datetime,
    status: str,
    comment: str | None,
    expected: int | None = None,
) -> CoordinationSlot:
    """The schedule's professional changes a slot that no appointment holds: its times, or
    free ↔ busy-unavailable. A slot an appointment holds changes through the appointment
    (409); ``expected``: the version the change was made on (412 otherwise)."""
    schedule = session.get(CoordinationSchedule, slot.schedule_id)
    if schedule is None:  # a foreign key: never
        raise NotFound(f"Slot/{slot.resource_id}: its schedule is gone")
    _require_owner(schedule, reader)
    if expected is not None and expected != slot.version:
        raise PreconditionFailed(
            f"Slot/{slot.resource_id} is at version {slot.version}, not {expected}: "
            "read it again before changing it"
        )
    _slot_times(start, end)
    if status not in SLOT_STATES:
        raise Unprocessable(f"Slot.status: one of {', '.join(SLOT_STATES)}")
    unchanged = (start, end, status) == (slot.start_at, slot.end_at, slot.status)
    if slot.status not in OWNER_SET and not unchanged:
        raise Conflict(f"Slot/{slot.resource_id} is held by an appointment: change that")
    if status not in OWNER_SET and not unchanged:
        raise Unprocessable("a slot is made busy by booking an appointment on it")
    _no_overlap(session, schedule, start, end, but=slot.id)
    if unchanged and comment == slot.comment:
        return slot
    slot.start_at, slot.end_at = start.astimezone(UTC), end.astimezone(UTC)
    slot.status, slot.comment = status, comment
    slot.version += 1
    slot.updated_at = utcnow()
    return slot


def slots_of(
    session: Session,
    schedule: CoordinationSchedule,
    *,
    status: str | None = None,
    start_from: datetime | None = None,
    start_before: datetime | None = None,
) -> list[CoordinationSlot]:
    stmt = select(CoordinationSlot).where(CoordinationSlot.schedule_id == schedule.id)
    if status is not None:
        stmt = stmt.where(CoordinationSlot.status == status)
    if start_from is not None:
        stmt = stmt.where(CoordinationSlot.start_at >= start_from)
    if start_before is not None:
        stmt = stmt.where(CoordinationSlot.start_at < start_before)
    return list(session.scalars(stmt.order_by(CoordinationSlot.start_at, CoordinationSlot.id)))
