"""The shared agenda as FHIR R4 resources, read and rendered: ``Appointment``, ``Schedule``,
``Slot`` (FR Core's ``Appointment`` profile is R4's with optional extensions we do not use).

- ``Appointment``: the care circle it belongs to is the extension
  :data:`APPOINTMENT_CARE_TEAM` (``valueReference`` ``CareTeam/{id}``, as a task's
  ``task-care-team``: R4 has no element for it). ``description`` its title, ``comment``,
  ``start`` / ``end`` (instants, with a time zone; rendered in UTC), ``created``, ``slot``
  (at most one), ``status``. ``participant``: the patient (``actor`` ``Patient/{RRI}``,
  exactly once) and the professionals (``Practitioner`` by idNatPs, ``8`` + RPPS) and
  structures (``Organization`` by FINESS), logical references by identifier as in
  ``CareTeam``; each with its ``status`` (``participationstatus``).
- ``Schedule``: ``actor`` the professional (by idNatPs), ``active``, ``comment``.
- ``Slot``: ``schedule``, ``status`` (``free``, ``busy``, ``busy-tentative``,
  ``busy-unavailable``), ``start``, ``end``, ``comment``; never which appointment holds it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from enrs.coordination import agenda, fhir
from enrs.coordination.agenda_models import (
    AppointmentParticipant,
    CoordinationAppointment,
    CoordinationSchedule,
    CoordinationSlot,
)
from enrs.coordination.models import CareTeam
from enrs.coordination.plan_models import CarePlan
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.errors import Unprocessable

APPOINTMENT_CARE_TEAM = "https://enrs.fr/fhir/StructureDefinition/appointment-care-team"


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC (``Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# The FR Core profiles (Interop'Santé) these resources conform to: none of their constraints
# is on an element ENRS fills otherwise (specialty, serviceType, the R5 subject extension).
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"


def _meta(version: int, updated: datetime, profile: str) -> dict[str, Any]:
    return {
        "versionId": str(version),
        "lastUpdated": instant(updated),
        "profile": [FR_CORE + profile],
    }


def _actor(row: AppointmentParticipant) -> dict[str, Any]:
    if row.kind == "practitioner":
        ident = {"system": RPPS_SYSTEM, "value": f"8{row.rpps}"}
        return {"type": "Practitioner", "identifier": ident, "display": row.display}
    ident = {"system": FINESS_SYSTEM, "value": row.finess or ""}
    return {"type": "Organization", "identifier": ident, "display": row.display}


def appointment(
    found: CoordinationAppointment,
    team: CareTeam,
    rri: str,
    participants: list[AppointmentParticipant],
    slot: CoordinationSlot | None,
    plan: CarePlan | None = None,
) -> dict[str, Any]:
    people: list[dict[str, Any]] = [
        {
            "actor": {"reference": f"Patient/{rri}"},
            "required": "required",
            "status": found.patient_status,
        }
    ]
    people += [
        {"actor": _actor(p), "required": "required", "status": p.status} for p in participants
    ]
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": found.resource_id,
        "meta": _meta(found.version, found.updated_at, "fr-core-appointment"),
        "extension": [
            {
                "url": APPOINTMENT_CARE_TEAM,
                "valueReference": {"reference": f"CareTeam/{team.resource_id}"},
            }
        ],
        "status": found.status,
        "description": found.title,
        "start": instant(found.start_at),
        "end": instant(found.end_at),
        "created": instant(found.created_at),
        "participant": people,
    }
    if found.comment:
        resource["comment"] = found.comment
    if slot is not None:
        resource["slot"] = [{"reference": f"Slot/{slot.resource_id}"}]
    if plan is not None:  # proposed by the plan's pathway
        resource["supportingInformation"] = [
            {"reference": f"CarePlan/{plan.resource_id}", "display": plan.title}
        ]
    return resource


def schedule(found: CoordinationSchedule) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Schedule",
        "id": found.resource_id,
        "meta": _meta(found.version, found.updated_at, "fr-core-schedule"),
        "active": found.active,
        "actor": [
            {
                "type": "Practitioner",
                "identifier": {"system": RPPS_SYSTEM, "value": f"8{found.rpps}"},
                "display": found.display,
            }
        ],
    }
    if found.comment:
        resource["comment"] = found.comment
    return resource


def slot(found: CoordinationSlot, schedule_id: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Slot",
        "id": found.resource_id,
        "meta": _meta(found.version, found.updated_at, "fr-core-slot"),
        "schedule": {"reference": f"Schedule/{schedule_id}"},
        "status": found.status,
        "start": instant(found.start_at),
        "end": instant(found.end_at),
    }
    if found.comment:
        resource["comment"] = found.comment
    return resource


# --- reading --------------------------------------------------------------------------------


def parse_instant(value: Any, what: str) -> datetime:
    """A FHIR instant (``2026-12-15T09:00:00+01:00``), with its time zone, in UTC; 422
    otherwise."""
    if not isinstance(value, str) or "T" not in value:
        raise Unprocessable(f"{what}: a FHIR instant (date, time and time zone)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Unprocessable(f"{what}: not a FHIR instant: {value}") from exc
    if moment.tzinfo is None:
        raise Unprocessable(f"{what}: an instant with a time zone")
    return moment.astimezone(UTC)


def _text(body: dict[str, Any], name: str, what: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise Unprocessable(f"{what}.{name}: a string")
    return value


def _code(value: Any, what: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise Unprocessable(f"{what}: a code")
    return value


def _reference_id(value: Any, kind: str, what: str) -> str:
    ref = value.get("reference") if isinstance(value, dict) else None
    prefix = f"{kind}/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or len(ref) == len(prefix):
        raise Unprocessable(f"{what}: a reference {kind}/{{id}}")
    return ref[len(prefix) :]


def care_team_id(body: dict[str, Any]) -> str:
    """The circle's id the :data:`APPOINTMENT_CARE_TEAM` extension names (422 without)."""
    for ext in body.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == APPOINTMENT_CARE_TEAM:
            return _reference_id(ext.get("valueReference"), "CareTeam", "the care circle")
    raise Unprocessable(f"the care circle: an extension {APPOINTMENT_CARE_TEAM} (CareTeam/{{id}})")


def appointment_patient(body: dict[str, Any]) -> str:
    """The ``Patient/{RRI}`` of the appointment's one patient participant (422 otherwise)."""
    found = [
        p["actor"]["reference"]
        for p in body.get("participant") or []
        if isinstance(p, dict)
        and isinstance(p.get("actor"), dict)
        and isinstance(p["actor"].get("reference"), str)
        and p["actor"]["reference"].startswith("Patient/")
    ]
    if len(found) != 1:
        raise Unprocessable("Appointment.participant: the patient (Patient/{RRI}) exactly once")
    return str(found[0])


def appointment_fields(body: dict[str, Any]) -> agenda.AppointmentFields:
    """What an ``Appointment`` body asks for (422 on a missing or malformed element)."""
    title = body.get("description")
    if not isinstance(title, str):
        raise Unprocessable("Appointment.description (the appointment's title) is required")
    participants = body.get("participant")
    if not isinstance(participants, list):
        raise Unprocessable("Appointment.participant: a list")
    people: list[agenda.Participant] = []
    patient_status = "needs-action"
    for item in participants:
        if not isinstance(item, dict) or not isinstance(item.get("actor"), dict):
            raise Unprocessable("Appointment.participant: each with an actor")
        answer = _code(item.get("status"), "Appointment.participant.status", "needs-action")
        if str(item["actor"].get("reference", "")).startswith("Patient/"):
            patient_status = answer
            continue
        kind, rpps, finess = fhir.identified(item["actor"], "Appointment.participant.actor")
        people.append(agenda.Participant(kind, rpps=rpps, finess=finess, status=answer))
    slots = body.get("slot") or []
    if not isinstance(slots, list) or len(slots) > 1:
        raise Unprocessable("Appointment.slot: one slot at most")
    return agenda.AppointmentFields(
        title=title,
        start=parse_instant(body.get("start"), "Appointment.start"),
        end=parse_instant(body.get("end"), "Appointment.end"),
        participants=tuple(people),
        status=_code(body.get("status"), "Appointment.status", agenda.PROPOSED),
        comment=_text(body, "comment", "Appointment"),
        slot=_reference_id(slots[0], "Slot", "Appointment.slot") if slots else None,
        patient_status=patient_status,
    )


def schedule_comment(body: dict[str, Any], rpps: str | None) -> str | None:
    """The comment of a new ``Schedule``; its ``actor``, if given, is the caller (422)."""
    actors = body.get("actor")
    if actors is not None:
        if not isinstance(actors, list) or len(actors) != 1:
            raise Unprocessable("Schedule.actor: the professional, once")
        kind, given, _ = fhir.identified(actors[0], "Schedule.actor")
        if kind != "practitioner" or given != rpps:
            raise Unprocessable("Schedule.actor: a professional opens their own schedule")
    return _text(body, "comment", "Schedule")


def slot_schedule_id(body: dict[str, Any]) -> str:
    return _reference_id(body.get("schedule"), "Schedule", "Slot.schedule")


def slot_fields(body: dict[str, Any]) -> tuple[datetime, datetime, str, str | None]:
    """``(start, end, status, comment)`` of a ``Slot`` body (422 when malformed)."""
    return (
        parse_instant(body.get("start"), "Slot.start"),
        parse_instant(body.get("end"), "Slot.end"),
        _code(body.get("status"), "Slot.status", "free"),
        _text(body, "comment", "Slot"),
    )
