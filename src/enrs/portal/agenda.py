"""The agenda pages (French UI, mobile-first): a professional's "Mon agenda" — their upcoming
appointments across their care circles, each with the link to its coordination file, and
their personal iCalendar feed URL (made, replaced, revoked here; shown once, kept hashed:
:mod:`enrs.coordination.ical`) — and the form that proposes an appointment from a circle's
coordination file. Every page is audited (with the patients it shows); what a professional
sees is :mod:`enrs.coordination.agenda`'s rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from enrs.accounts import service as accounts_service
from enrs.coordination import agenda, ical, service
from enrs.coordination.agenda_endpoints import feed_url
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.models import CareTeam, Member
from enrs.documents.access import reader_of
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.portal import agenda_changes
from enrs.portal.agenda_changes import STATUS_LABELS, local_start
from enrs.portal.auth import PortalUser
from enrs.portal.documents import _audit, _checked, _zone
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
DURATIONS = (15, 30, 45, 60, 90, 120)
TO_CLOSE_DAYS = 30  # booked appointments begun in the last 30 days: to say how they went
Listed = tuple[CoordinationAppointment, CareTeam, list[tuple[str, str]]]


def _professional(user: Principal) -> str:
    if user.kind != "user" or not user.rpps or "professional" not in user.roles:
        raise Forbidden("l'agenda est réservé aux professionnels de santé (RPPS)")
    return user.rpps


def _agenda_page(
    request: Request, user: Principal, session: DbSession, new_url: str | None = None
) -> HTMLResponse:
    """The professional's upcoming appointments and their feed."""
    reader = reader_of(session, user)
    now = utcnow()
    upcoming = agenda.appointments_for(
        session, agenda.appointments_stmt(reader, mine=True, start_from=now)
    )
    closing = agenda.appointments_stmt(
        reader,
        mine=True,
        start_from=now - timedelta(days=TO_CLOSE_DAYS),
        start_before=now,
        statuses=frozenset({agenda.BOOKED}),
    )
    begun = agenda.appointments_for(session, closing)
    patients: set[str] = set()

    def listed(found: list[CoordinationAppointment]) -> list[Listed]:
        items = []
        for appointment in found:
            team = agenda.team_of(session, appointment)
            patients.add(f"Patient/{service.patient_of(session, team).rri}")
            items.append((appointment, team, agenda_changes.moves_of(appointment, reader, now)))
        return items

    items, to_close = listed(upcoming), listed(begun)
    entry = request.state.audit[-1]
    if len(patients) == 1:
        entry.patient_ref = next(iter(patients))
    elif patients:
        entry.detail = f"patients: {', '.join(sorted(patients))}"[:1000]
    return _render(
        request,
        "agenda.html",
        items=items,
        to_close=to_close,
        feed=ical.feed_of(session, user.subject),
        new_url=new_url,
        labels=STATUS_LABELS,
        tz=_zone(request),
        message=request.query_params.get("message"),
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/agenda")
def my_agenda(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    _professional(user)
    _audit(request, user, "search-type", "Appointment", None)
    return _agenda_page(request, user, session)


@router.post("/agenda/lien")
def make_feed(
    request: Request, user: PortalUser, session: DbSession, csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """A new feed URL (the previous one stops), shown once on the page."""
    rpps = _professional(user)
    _audit(request, user, "search-type", "Appointment", None)
    request.state.audit[-1].detail = "agenda feed made"
    _checked(session, user, csrf)
    token = ical.create_feed(session, user.subject, rpps)
    return _agenda_page(request, user, session, new_url=feed_url(request, token))


@router.post("/agenda/lien/revoquer")
def revoke_feed(
    request: Request, user: PortalUser, session: DbSession, csrf: Annotated[str, Form()] = ""
) -> Response:
    _professional(user)
    _audit(request, user, "search-type", "Appointment", None)
    request.state.audit[-1].detail = "agenda feed revoked"
    _checked(session, user, csrf)
    ical.revoke_feed(session, user.subject)
    return RedirectResponse("/agenda?message=revoque", status_code=303)


def _participant(member: Member) -> agenda.Participant:
    if member.kind == "practitioner":
        return agenda.Participant("practitioner", rpps=member.rpps)
    return agenda.Participant("organization", finess=member.finess)


@router.post("/coordination/{team_id}/rendez-vous")
def propose(
    request: Request,
    team_id: str,
    user: PortalUser,
    session: DbSession,
    motif: Annotated[str, Form()] = "",
    jour: Annotated[str, Form()] = "",
    heure: Annotated[str, Form()] = "",
    duree: Annotated[int, Form()] = 30,
    avec: Annotated[int, Form()] = 0,
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """A member proposes an appointment from the coordination file: with another member
    (``avec``: their member id), and themselves when they are in the circle in person."""
    team = service.team_by_id(session, team_id)
    _audit(request, user, "create", "Appointment", service.patient_of(session, team))
    _checked(session, user, csrf)
    start = local_start(request, jour, heure)
    if duree not in DURATIONS:
        raise BadRequest("durée : 15 à 120 minutes")
    chosen = session.get(Member, avec)
    if chosen is None or chosen.team_id != team.id or chosen.kind == "related-person":
        raise BadRequest("choisissez un professionnel ou une structure du cercle")
    people = [_participant(chosen)]
    me = agenda.Participant("practitioner", rpps=user.rpps) if user.rpps else None
    if me is not None and me.key != people[0].key:
        mine = [m for m in service.members(session, team) if m.rpps == user.rpps]
        if any(m.status == "active" for m in mine):
            people.insert(0, me)
    fields = agenda.AppointmentFields(
        title=motif,
        start=start,
        end=start + timedelta(minutes=duree),
        participants=tuple(people),
    )
    made = agenda.create_appointment(session, reader_of(session, user), team, fields)
    request.state.audit[-1].entity_ref = f"Appointment/{made.resource_id}"
    return RedirectResponse(f"/coordination/{team.resource_id}#rendez-vous", status_code=303)
