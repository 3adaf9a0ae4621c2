"""Changing an appointment from the portal (French UI, mobile-first), over the rules of
:mod:`enrs.coordination.agenda`: on "Mon agenda" and in the coordination file's
"Rendez-vous", a current member of the circle

- **accepts** a proposed appointment (it becomes ``booked``, and their own answer — their
  RPPS, or one of their structures, among the participants — ``accepted``); not offered to
  the one who proposed it, whose answer it would not be;
- **cancels** a proposed or booked one;
- **moves** one that is still open (proposed or booked) to another day and time, keeping its
  length and its state; an appointment held on a slot that the new time leaves gives the slot
  back (:func:`agenda.update_appointment` frees it);
- once its start has passed, marks a booked one **fulfilled** or **no-show**.

Only the moves :data:`agenda.TRANSITIONS` allows from the appointment's state are offered
(:func:`moves_of`), and only those are accepted. Each form carries the version the page
showed: an appointment changed in between is refused (412, "Le rendez-vous a été modifié
entre-temps"), never overwritten — :func:`agenda.update_appointment` locks the row and checks
it. A non-member is refused (403), an appointment of another circle is not found (404). Each
change is audited with its patient as the API's ``PUT /fhir/Appointment/{id}`` is.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from enrs.coordination import agenda, service
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.models import CareTeam
from enrs.documents.access import Reader, reader_of
from enrs.kit.audit.trail import AuditEntry
from enrs.kit.db import utcnow
from enrs.kit.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from enrs.kit.http import ACTION, DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _checked, _zone

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

STATUS_LABELS = {
    "proposed": "proposé",
    "booked": "confirmé",
    "fulfilled": "honoré",
    "noshow": "patient absent",
    "cancelled": "annulé",
}
MOVE = "move"
# The changes a page offers (form value -> the state it leads to, the button's label).
ACTIONS: dict[str, tuple[str, str]] = {
    "accept": (agenda.BOOKED, "Accepter"),
    "fulfilled": ("fulfilled", "Honoré"),
    "noshow": ("noshow", "Patient absent"),
    "cancel": (agenda.CANCELLED, "Annuler"),
}
AFTER_START = frozenset({"fulfilled", "noshow"})  # said of an appointment once it has begun
STALE = (
    "Le rendez-vous a été modifié entre-temps : rien n'a été changé. Rechargez la page pour "
    "voir son état actuel, puis recommencez si besoin."
)


def moves_of(
    appointment: CoordinationAppointment, reader: Reader, now: datetime | None = None
) -> list[tuple[str, str]]:
    """``(form value, label)`` of the changes offered on the appointment to ``reader``: the
    buttons, then :data:`MOVE` ("Déplacer") while it is open."""
    now = now or utcnow()
    allowed = agenda.TRANSITIONS[appointment.status]
    offered = []
    for key, (status, label) in ACTIONS.items():
        if status not in allowed:
            continue
        if status in AFTER_START and appointment.start_at > now:
            continue
        if key == "accept" and appointment.created_by_key == reader.key:
            continue
        offered.append((key, label))
    if appointment.status not in agenda.CLOSED:
        offered.append((MOVE, "Déplacer"))
    return offered


def local_start(request: Request, jour: str, heure: str) -> datetime:
    """The instant of a form's day (``AAAA-MM-JJ``) and time (``HH:MM``), in the region's
    time zone (400 when either is missing or malformed)."""
    try:
        local = datetime.fromisoformat(f"{jour}T{heure}")
    except ValueError:
        raise BadRequest("indiquez le jour et l'heure du rendez-vous") from None
    return local.replace(tzinfo=_zone(request))


def _fields(session: Session, appointment: CoordinationAppointment) -> agenda.AppointmentFields:
    """The appointment as it is, to be changed in one respect."""
    slot = agenda.slot_of(session, appointment)
    people = tuple(
        agenda.Participant(p.kind, rpps=p.rpps, finess=p.finess, status=p.status)
        for p in agenda.participants_of(session, appointment)
    )
    return agenda.AppointmentFields(
        title=appointment.title,
        start=appointment.start_at,
        end=appointment.end_at,
        participants=people,
        status=appointment.status,
        comment=appointment.comment,
        slot=slot.resource_id if slot is not None else None,
        patient_status=appointment.patient_status,
    )


def _mine(p: agenda.Participant, reader: Reader) -> bool:
    if p.kind == "practitioner":
        return bool(reader.rpps) and p.rpps == reader.rpps
    return p.finess in reader.structures


def _accepted(fields: agenda.AppointmentFields, reader: Reader) -> agenda.AppointmentFields:
    """Booked, with the reader's own answer (in person or for their structure) accepted."""
    people = tuple(
        replace(p, status="accepted") if _mine(p, reader) else p for p in fields.participants
    )
    return replace(fields, status=agenda.BOOKED, participants=people)


def _moved(
    session: Session,
    appointment: CoordinationAppointment,
    fields: agenda.AppointmentFields,
    start: datetime,
) -> agenda.AppointmentFields:
    """At ``start``, as long as before; off its slot when the new time leaves it."""
    end = start + (appointment.end_at - appointment.start_at)
    slot = agenda.slot_of(session, appointment)
    keeps = slot is not None and slot.start_at <= start and end <= slot.end_at
    return replace(fields, start=start, end=end, slot=fields.slot if keeps else None)


def _audited(request: Request, user: Principal, appointment_id: str) -> AuditEntry:
    """The change's audit record, as the API's ``PUT /fhir/Appointment/{id}`` writes it (an
    update of the appointment); the same permission (``Appointment.u``, a professional)."""
    entry = new_entry(
        request, "rest", "update", action=ACTION["update"], resource_type="Appointment"
    )
    entry.entity_ref = f"Appointment/{appointment_id}"[:256]
    set_agent(entry, user)
    if "professional" not in user.roles or not user.can("Appointment", "u"):
        raise Forbidden("l'agenda est réservé aux professionnels de santé")
    return entry


def _member_appointment(
    session: Session, team: CareTeam, appointment_id: str, reader: Reader
) -> CoordinationAppointment:
    """The circle's appointment, for one of its current members (403), of this circle (404)."""
    if not service.is_member(session, team, reader):
        raise Forbidden("ce cercle de soins est réservé à ses membres")
    found = agenda.appointment_by_id(session, appointment_id)
    if found.team_id != team.id:
        raise NotFound("ce rendez-vous n'est pas dans ce cercle de soins")
    return found


def _refusal(appointment: CoordinationAppointment, reader: Reader, action: str) -> str:
    """Why a change :func:`moves_of` does not offer is refused, in French."""
    if action in AFTER_START and appointment.status == agenda.BOOKED:
        return "un rendez-vous n'est dit honoré ou patient absent qu'une fois son heure passée"
    if action == "accept" and appointment.status == agenda.PROPOSED:
        return "vous avez proposé ce rendez-vous : c'est aux autres participants de l'accepter"
    was = STATUS_LABELS.get(appointment.status, appointment.status)
    return f"ce rendez-vous est {was} : il ne peut pas être ainsi changé"


def _back(team: CareTeam, retour: str) -> str:
    """Where a form returns to: "Mon agenda", or the circle's file (no other place)."""
    if retour == "agenda":
        return "/agenda#rendez-vous"
    return f"/coordination/{quote(team.resource_id)}#rendez-vous"


@router.post("/coordination/{team_id}/rendez-vous/{appointment_id}")
def change_appointment(
    request: Request,
    team_id: str,
    appointment_id: str,
    user: PortalUser,
    session: DbSession,
    action: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    jour: Annotated[str, Form()] = "",
    heure: Annotated[str, Form()] = "",
    retour: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """A member accepts, cancels, moves an appointment, or says how it went, on the version
    their page showed (:func:`moves_of` the changes allowed)."""
    entry = _audited(request, user, appointment_id)
    team = service.team_by_id(session, team_id)
    entry.patient_ref = f"Patient/{service.patient_of(session, team).rri}"
    _checked(session, user, csrf)
    reader = reader_of(session, user)
    found = _member_appointment(session, team, appointment_id, reader)
    if action != MOVE and action not in ACTIONS:
        raise Unprocessable("action inconnue : accepter, déplacer, annuler, honoré ou absent")
    if not version.isdigit():
        raise Unprocessable("version du rendez-vous manquante : rechargez la page")
    if int(version) != found.version:  # checked again, the row locked, by the agenda
        raise PreconditionFailed(STALE)
    if action not in dict(moves_of(found, reader)):
        raise Conflict(_refusal(found, reader, action))
    fields = _fields(session, found)
    if action == MOVE:
        fields = _moved(session, found, fields, local_start(request, jour, heure))
    elif action == "accept":
        fields = _accepted(fields, reader)
    else:
        fields = replace(fields, status=ACTIONS[action][0])
    try:
        agenda.update_appointment(session, reader, found, fields, int(version))
    except PreconditionFailed:
        raise PreconditionFailed(STALE) from None
    except Conflict:
        raise Conflict(_refusal(found, reader, action)) from None
    except Forbidden:
        raise Forbidden("ce cercle de soins n'est plus actif") from None
    return RedirectResponse(_back(team, retour), status_code=303)
