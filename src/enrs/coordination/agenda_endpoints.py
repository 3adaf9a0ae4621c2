"""HTTP endpoints of the shared agenda (:mod:`.agenda`, rendered by :mod:`.agenda_fhir`,
the feed by :mod:`.ical`):

- ``POST /fhir/Appointment``: a new appointment of a care circle (the circle in the
  ``appointment-care-team`` extension, the patient and the professionals or structures in
  ``participant``, ``description``, ``start``, ``end``, ``status`` proposed or booked,
  ``slot``); 201 with ``Location`` and ``ETag``; a slot that is not free: 409.
- ``GET /fhir/Appointment/{id}`` with its version as ``ETag``; ``PUT`` replaces it (``If-Match``
  for another version: 412, nothing changed; its patient and circle do not change).
- ``GET /fhir/Appointment?patient=Patient/{RRI}`` (the patient's appointments in the caller's
  circles), ``?actor=me`` (those the caller takes part in), ``&date=ge…&date=lt…`` (on
  ``start``), ``&status=``.
- ``POST /fhir/Schedule`` (the caller's own agenda), ``GET /fhir/Schedule/{id}``,
  ``GET /fhir/Schedule?actor=me`` or ``?actor:identifier={system}|{idNatPs}``.
- ``POST /fhir/Slot``, ``GET`` / ``PUT /fhir/Slot/{id}`` (the schedule's professional),
  ``GET /fhir/Slot?schedule=Schedule/{id}&status=free&start=ge…``.
- ``GET /agenda/{token}.ics``: a professional's iCalendar feed (no login: the token is the
  credential), every fetch audited; ``POST`` / ``DELETE /api/coordination/agenda-feed``: the
  caller makes (or replaces) and revokes their feed URL.

People need the ``professional`` role; software a ``system/Appointment`` scope and its
facility in the circle. Every call on appointments is audited with the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.coordination import agenda, agenda_fhir, ical, service
from enrs.coordination.agenda_models import (
    CoordinationAppointment,
    CoordinationSchedule,
    CoordinationSlot,
)
from enrs.coordination.auth import (
    AppointmentCreate,
    AppointmentRead,
    AppointmentSearch,
    AppointmentUpdate,
    ScheduleCreate,
    ScheduleRead,
    ScheduleSearch,
    SlotCreate,
    SlotRead,
    SlotSearch,
    SlotUpdate,
)
from enrs.coordination.endpoints import (
    applied,
    expected_version,
    parsed_search,
    patient_from,
    searchset,
)
from enrs.directory.identifiers import RPPS_SYSTEM
from enrs.documents.access import Reader, reader_of
from enrs.identity import service as identity_service
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Forbidden, NotFound, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import FhirFormat, read_resource
from enrs.kit.fhir.search import SearchSpec
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.fhir.search_values import parse_date
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["coordination"], dependencies=[FhirFormat])
feed_router = APIRouter(route_class=TransactionalRoute, tags=["coordination"])
FEED_PATH = "/agenda/{token}.ics"
APPOINTMENT_PARAMS = (
    ("patient", "reference", "Patient/{RRI}: the patient's appointments in the caller's circles"),
    (
        "actor",
        "token",
        "me: the appointments the caller (or one of their structures) takes part in",
    ),
    ("date", "date", "the appointment's start (ge, gt, le, lt, eq; repeatable)"),
    ("status", "token", "proposed, booked, fulfilled, noshow, cancelled (comma-separated)"),
)
APPOINTMENT_DOC = (
    "An appointment belongs to one care circle (extension "
    f"{agenda_fhir.APPOINTMENT_CARE_TEAM}); only the circle's current members read and "
    "change it. Participants: the patient (once) and members of the circle by idNatPs or "
    "FINESS. States move proposed → booked | cancelled, booked → fulfilled | noshow | "
    "cancelled; start and end are required. An appointment on a slot takes it (409 when not "
    "free) and frees it when cancelled."
)


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "Appointment",
        interactions=["create", "read", "update", "search-type"],
        search_params=APPOINTMENT_PARAMS,
        documentation=APPOINTMENT_DOC,
    )
    registry.add_resource(
        "Schedule",
        interactions=["create", "read", "search-type"],
        search_params=[("actor", "reference", "me, or :identifier the professional's idNatPs")],
        documentation="A professional's own agenda, one each, where they publish slots.",
    )
    registry.add_resource(
        "Slot",
        interactions=["create", "read", "update", "search-type"],
        search_params=[
            ("schedule", "reference", "Schedule/{id} (required)"),
            ("status", "token", "free, busy, busy-tentative, busy-unavailable"),
            ("start", "date", "the slot's start (ge, gt, le, lt, eq; repeatable)"),
        ],
        documentation="Free/busy only; a slot is taken by booking an Appointment on it.",
    )


# --- appointments ---------------------------------------------------------------------------


async def _appointment_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Appointment")


AppointmentBody = Annotated[dict[str, Any], Depends(_appointment_body)]


def _audited(request: Request, session: Session, found: CoordinationAppointment) -> str:
    """The appointment's patient's RRI, the appointment and its patient named in the call's
    audit record."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"Appointment/{found.resource_id}"
    rri = service.patient_of(session, agenda.team_of(session, found)).rri
    entry.patient_ref = f"Patient/{rri}"
    return rri


def _rendered(session: Session, found: CoordinationAppointment, rri: str) -> dict[str, Any]:
    return agenda_fhir.appointment(
        found,
        agenda.team_of(session, found),
        rri,
        agenda.participants_of(session, found),
        agenda.slot_of(session, found),
        agenda.plan_of(session, found),
    )


def _answer(
    request: Request, session: Session, found: CoordinationAppointment, status_code: int = 200
) -> FhirJSONResponse:
    rri = _audited(request, session, found)
    headers = {"ETag": f'W/"{found.version}"'}
    if status_code == 201:
        base = request.app.state.settings.fhir_base
        headers["Location"] = f"{base}/Appointment/{found.resource_id}"
    return FhirJSONResponse(
        _rendered(session, found, rri), status_code=status_code, headers=headers
    )


def _seen(
    request: Request, session: Session, principal: Principal, appointment_id: str
) -> CoordinationAppointment:
    request.state.audit[-1].entity_ref = f"Appointment/{appointment_id}"[:256]
    found = agenda.appointment_by_id(session, appointment_id)
    _audited(request, session, found)
    return agenda.seen(session, found, reader_of(session, principal))


@router.post("/fhir/Appointment", status_code=201, summary="Create an appointment of a care circle")
def create_appointment(
    request: Request, session: DbSession, principal: AppointmentCreate, body: AppointmentBody
) -> FhirJSONResponse:
    patient = patient_from(request, session, agenda_fhir.appointment_patient(body))
    team = service.team_by_id(session, agenda_fhir.care_team_id(body))
    if service.patient_of(session, team).id != patient.id:
        raise Unprocessable(f"CareTeam/{team.resource_id} is not the circle of the patient")
    fields = agenda_fhir.appointment_fields(body)
    found = agenda.create_appointment(session, reader_of(session, principal), team, fields)
    return _answer(request, session, found, 201)


@router.get("/fhir/Appointment/{appointment_id}", summary="Read an appointment of a care circle")
def read_appointment(
    request: Request, appointment_id: str, session: DbSession, principal: AppointmentRead
) -> FhirJSONResponse:
    return _answer(request, session, _seen(request, session, principal, appointment_id))


@router.put("/fhir/Appointment/{appointment_id}", summary="Update an appointment (If-Match)")
def update_appointment(
    request: Request,
    appointment_id: str,
    session: DbSession,
    principal: AppointmentUpdate,
    body: AppointmentBody,
) -> FhirJSONResponse:
    expected = expected_version(request)
    found = _seen(request, session, principal, appointment_id)
    if body.get("id") != appointment_id:
        raise BadRequest("the Appointment's id must be the id in the URL")
    team = agenda.team_of(session, found)
    rri = service.patient_of(session, team).rri
    if agenda_fhir.appointment_patient(body) != f"Patient/{rri}":
        raise Unprocessable(f"an appointment's patient does not change (Patient/{rri})")
    if agenda_fhir.care_team_id(body) != team.resource_id:
        raise Unprocessable("the appointment's care circle does not change")
    fields = agenda_fhir.appointment_fields(body)
    agenda.update_appointment(session, reader_of(session, principal), found, fields, expected)
    return _answer(request, session, found)


def _zone(request: Request) -> ZoneInfo:
    return ZoneInfo(request.app.state.settings.timezone)


def date_range(request: Request, name: str) -> tuple[datetime | None, datetime | None]:
    """``[from, before)`` of the repeated ``date``-type parameter ``name`` on an instant:
    ``ge`` / ``gt`` / ``le`` / ``lt`` / ``eq`` against the implicit range of each value
    (400 on a malformed one or another prefix)."""
    start_from: datetime | None = None
    start_before: datetime | None = None
    for raw in request.query_params.getlist(name):
        try:
            value = parse_date(raw, _zone(request))
        except ValueError as exc:
            raise BadRequest(f"{name}={raw}: {exc}") from None
        lower = {"ge": value.lower, "gt": value.upper, "eq": value.lower}.get(value.prefix)
        upper = {"lt": value.lower, "le": value.upper, "eq": value.upper}.get(value.prefix)
        if lower is None and upper is None:
            raise BadRequest(f"{name}: the prefixes ge, gt, le, lt, eq")
        if lower is not None:
            start_from = lower if start_from is None else max(start_from, lower)
        if upper is not None:
            start_before = upper if start_before is None else min(start_before, upper)
    return start_from, start_before


def _statuses(raw: str | None, known: tuple[str, ...] | dict[str, Any]) -> frozenset[str] | None:
    if raw is None:
        return None
    wanted = frozenset(s.strip() for s in raw.split(","))
    if not wanted <= set(known):
        raise BadRequest(f"status: among {', '.join(known)}")
    return wanted


def appointment_spec() -> SearchSpec:
    """``GET /fhir/Appointment``: ``actor=me``, ``patient``, ``date`` (on the start, in
    ``ENRS_TIMEZONE`` when written without an offset) and ``status`` (a comma-separated list of
    states), all applied by the base statement; by start; ``_sort`` on ``date`` and
    ``_lastUpdated``."""
    return SearchSpec(
        "Appointment",
        {
            "actor": SearchParam.token(match=applied),
            "patient": SearchParam.reference(targets=["Patient"], match=applied),
            "date": SearchParam.date(match=applied),
            "status": SearchParam.token(match=applied),
        },
        sorts={
            "date": CoordinationAppointment.start_at,
            "_lastUpdated": CoordinationAppointment.updated_at,
        },
        default_sort="date",
        tiebreaker=CoordinationAppointment.id,
        default_count=50,
        max_count=200,
    )


@router.get("/fhir/Appointment", summary="Find the appointments of the caller's care circles")
def search_appointments(
    request: Request, session: DbSession, principal: AppointmentSearch
) -> FhirJSONResponse:
    parsed = parsed_search(request, appointment_spec())
    query = request.query_params
    if "actor" not in query and "patient" not in query:
        raise BadRequest("a search of appointments needs actor=me or patient")
    if query.get("actor", "me") != "me":
        raise BadRequest("actor: me (the caller's appointments)")
    patient_ids = None
    if "patient" in query:
        patient = patient_from(request, session, query["patient"])
        patient_ids = identity_service.merged_patient_ids(session, patient.id)
    start_from, start_before = date_range(request, "date")
    stmt = agenda.appointments_stmt(
        reader_of(session, principal),
        mine="actor" in query,
        patient_ids=patient_ids,
        start_from=start_from,
        start_before=start_before,
        statuses=_statuses(query.get("status"), agenda.TRANSITIONS),
    )

    def render(page: Sequence[CoordinationAppointment]) -> list[dict[str, Any]]:
        resources, patients = [], set()
        for item in page:
            rri = service.patient_of(session, agenda.team_of(session, item)).rri
            patients.add(f"Patient/{rri}")
            resources.append(_rendered(session, item, rri))
        _audit_patients(request, patients)
        return resources

    return searchset(request, session, parsed, stmt, render)


def _audit_patients(request: Request, patients: set[str]) -> None:
    entry = request.state.audit[-1]
    if len(patients) == 1 and entry.patient_ref is None:
        entry.patient_ref = next(iter(patients))
    elif len(patients) > 1:
        entry.detail = f"patients: {', '.join(sorted(patients))}"[:1000]


# --- schedules and slots --------------------------------------------------------------------


def _searchset(request: Request, kind: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    base = request.app.state.settings.fhir_base
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{base}/{kind}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def _versioned(
    request: Request, kind: str, resource: dict[str, Any], status_code: int = 200
) -> FhirJSONResponse:
    headers = {"ETag": f'W/"{resource["meta"]["versionId"]}"'}
    if status_code == 201:
        headers["Location"] = f"{request.app.state.settings.fhir_base}/{kind}/{resource['id']}"
    return FhirJSONResponse(resource, status_code=status_code, headers=headers)


async def _schedule_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Schedule")


ScheduleBody = Annotated[dict[str, Any], Depends(_schedule_body)]


@router.post("/fhir/Schedule", status_code=201, summary="Open the caller's own agenda")
def create_schedule(
    request: Request, session: DbSession, principal: ScheduleCreate, body: ScheduleBody
) -> FhirJSONResponse:
    comment = agenda_fhir.schedule_comment(body, principal.rpps)
    found = agenda.create_schedule(session, reader_of(session, principal), comment)
    request.state.audit[-1].entity_ref = f"Schedule/{found.resource_id}"
    return _versioned(request, "Schedule", agenda_fhir.schedule(found), 201)


@router.get("/fhir/Schedule/{schedule_id}", summary="Read a professional's agenda")
def read_schedule(
    request: Request, schedule_id: str, session: DbSession, principal: ScheduleRead
) -> FhirJSONResponse:
    request.state.audit[-1].entity_ref = f"Schedule/{schedule_id}"[:256]
    found = agenda.schedule_by_id(session, schedule_id)
    return _versioned(request, "Schedule", agenda_fhir.schedule(found))


@router.get("/fhir/Schedule", summary="Find a professional's agenda")
def search_schedules(
    request: Request, session: DbSession, principal: ScheduleSearch
) -> FhirJSONResponse:
    query = request.query_params
    unknown = set(query) - {"actor", "actor:identifier", "_format"}
    if unknown or len(set(query) - {"_format"}) != 1:
        raise BadRequest("a search of schedules: actor=me or actor:identifier={system}|{idNatPs}")
    if "actor" in query:
        if query["actor"] != "me":
            raise BadRequest("actor: me (the caller's schedule)")
        rpps = principal.rpps
    else:
        system, _, value = query["actor:identifier"].partition("|")
        if system != RPPS_SYSTEM or not value:
            raise BadRequest(f"actor:identifier: {RPPS_SYSTEM}|{{idNatPs}}")
        rpps = value[1:] if value.startswith("8") else value
    found = agenda.schedule_of(session, rpps) if rpps else None
    resources = [agenda_fhir.schedule(found)] if found is not None else []
    return FhirJSONResponse(_searchset(request, "Schedule", resources))


async def _slot_body(request: Request) -> dict[str, Any]:
    return await read_resource(request, "Slot")


SlotBody = Annotated[dict[str, Any], Depends(_slot_body)]


def _slot_resource(session: Session, found: CoordinationSlot) -> dict[str, Any]:
    schedule = session.get(CoordinationSchedule, found.schedule_id)
    if schedule is None:  # a foreign key: never
        raise NotFound(f"Slot/{found.resource_id}: its schedule is gone")
    return agenda_fhir.slot(found, schedule.resource_id)


@router.post("/fhir/Slot", status_code=201, summary="Publish a slot of the caller's agenda")
def create_slot(
    request: Request, session: DbSession, principal: SlotCreate, body: SlotBody
) -> FhirJSONResponse:
    schedule = agenda.schedule_by_id(session, agenda_fhir.slot_schedule_id(body))
    start, end, status, comment = agenda_fhir.slot_fields(body)
    found = agenda.create_slot(
        session,
        reader_of(session, principal),
        schedule,
        start=start,
        end=end,
        status=status,
        comment=comment,
    )
    request.state.audit[-1].entity_ref = f"Slot/{found.resource_id}"
    return _versioned(request, "Slot", _slot_resource(session, found), 201)


@router.get("/fhir/Slot/{slot_id}", summary="Read a slot")
def read_slot(
    request: Request, slot_id: str, session: DbSession, principal: SlotRead
) -> FhirJSONResponse:
    request.state.audit[-1].entity_ref = f"Slot/{slot_id}"[:256]
    found = agenda.slot_by_id(session, slot_id)
    return _versioned(request, "Slot", _slot_resource(session, found))


@router.put("/fhir/Slot/{slot_id}", summary="Change a slot of the caller's agenda (If-Match)")
def update_slot(
    request: Request, slot_id: str, session: DbSession, principal: SlotUpdate, body: SlotBody
) -> FhirJSONResponse:
    expected = expected_version(request)
    request.state.audit[-1].entity_ref = f"Slot/{slot_id}"[:256]
    found = agenda.slot_by_id(session, slot_id)
    if body.get("id") != slot_id:
        raise BadRequest("the Slot's id must be the id in the URL")
    schedule = session.get(CoordinationSchedule, found.schedule_id)
    if schedule is None or agenda_fhir.slot_schedule_id(body) != schedule.resource_id:
        raise Unprocessable("a slot's schedule does not change")
    start, end, status, comment = agenda_fhir.slot_fields(body)
    agenda.update_slot(
        session,
        reader_of(session, principal),
        found,
        start=start,
        end=end,
        status=status,
        comment=comment,
        expected=expected,
    )
    return _versioned(request, "Slot", _slot_resource(session, found))


@router.get("/fhir/Slot", summary="Find the slots of a professional's agenda")
def search_slots(request: Request, session: DbSession, principal: SlotSearch) -> FhirJSONResponse:
    query = request.query_params
    unknown = set(query) - {"schedule", "status", "start", "_format"}
    if unknown:
        raise BadRequest(f"unknown search parameters: {', '.join(sorted(unknown))}")
    raw = query.get("schedule")
    if raw is None:
        raise BadRequest("a search of slots needs schedule=Schedule/{id}")
    schedule = agenda.schedule_by_id(session, raw.removeprefix("Schedule/"))
    status = query.get("status")
    if status is not None and status not in agenda.SLOT_STATES:
        raise BadRequest(f"status: one of {', '.join(agenda.SLOT_STATES)}")
    start_from, start_before = date_range(request, "start")
    found = agenda.slots_of(
        session, schedule, status=status, start_from=start_from, start_before=start_before
    )
    resources = [agenda_fhir.slot(s, schedule.resource_id) for s in found]
    return FhirJSONResponse(_searchset(request, "Slot", resources))


# --- the iCalendar feed ---------------------------------------------------------------------


def feed_reader(session: Session, user_id: str, rpps: str) -> tuple[Principal, Reader] | None:
    """Whom a feed reads as: its account, still active, a professional with the same RPPS;
    ``None`` otherwise (the feed is dead)."""
    principal = accounts_service.active_principal(session, user_id)
    if principal is None or principal.rpps != rpps or "professional" not in principal.roles:
        return None
    if not principal.can("Appointment", "s"):
        return None
    return principal, reader_of(session, principal)


def feed_events(session: Session, reader: Reader) -> list[ical.FeedEvent]:
    """The appointments a professional's feed shows (:mod:`.ical`'s window and rule)."""
    now = utcnow()
    stmt = agenda.appointments_stmt(
        reader, mine=True, start_from=now - ical.PAST, start_before=now + ical.AHEAD
    )
    found = agenda.appointments_for(session, stmt)
    return [ical.FeedEvent(a, agenda.team_of(session, a)) for a in found]


@feed_router.get(FEED_PATH, summary="A professional's agenda as an iCalendar feed")
def agenda_feed(request: Request, token: str, session: DbSession) -> Response:
    """RFC 5545; the token is the credential (404 when unknown or revoked). Audited."""
    entry = new_entry(request, "rest", "search-type", action="E", resource_type="Appointment")
    entry.query = "iCalendar feed"  # never the token
    feed = ical.owner_of(session, token)
    owner = feed_reader(session, feed.user_id, feed.rpps) if feed is not None else None
    if owner is None:
        raise NotFound("no such agenda feed")
    principal, reader = owner
    set_agent(entry, principal)
    events = feed_events(session, reader)
    patients = {f"Patient/{service.patient_of(session, e.team).rri}" for e in events}
    _audit_patients(request, patients)
    body = ical.calendar(events, request.app.state.settings.base_url)
    return Response(
        body,
        media_type=ical.MEDIA_TYPE,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": "inline; filename=agenda.ics",
        },
    )


def feed_url(request: Request, token: str) -> str:
    base = str(request.app.state.settings.base_url).rstrip("/")
    return base + FEED_PATH.format(token=token)


def _feed_owner(principal: Principal) -> str:
    if principal.kind != "user" or not principal.rpps:
        raise Forbidden("an agenda feed is a professional's own (an RPPS)")
    return principal.rpps


@feed_router.post("/api/coordination/agenda-feed", summary="Make (or replace) my agenda feed URL")
def make_feed(request: Request, session: DbSession, principal: AppointmentSearch) -> JSONResponse:
    """The caller's new feed URL, shown once (the previous one stops at once)."""
    rpps = _feed_owner(principal)
    token = ical.create_feed(session, principal.subject, rpps)
    return JSONResponse({"url": feed_url(request, token)}, status_code=201)


@feed_router.delete("/api/coordination/agenda-feed", status_code=204, summary="Revoke my feed")
def revoke_feed(request: Request, session: DbSession, principal: AppointmentSearch) -> Response:
    _feed_owner(principal)
    if not ical.revoke_feed(session, principal.subject):
        raise NotFound("no agenda feed to revoke")
    return Response(status_code=204)
