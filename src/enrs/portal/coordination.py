"""The coordination pages (French UI, mobile-first: a nurse on a phone at the patient's home):
the circles a professional is in with their unread messages, and a circle's coordination file
— the patient, the members, the open tasks (overdue ones flagged), the appointments (and a
form to propose one), the last documents the reader may open, and the secure chat,
live (its script reads the Server-Sent Events of ``/api/coordination/stream`` and posts to
``/fhir/Communication``; every text is inserted as text, never as HTML). Every page is audited
with the patient; what a person sees is the coordination and document repository's rules.

The file is the same for every member who coordinates, health professional or social worker
(:data:`enrs.coordination.auth.COORDINATORS`), but for what the scopes keep from the latter
(:mod:`enrs.coordination.auth`): the documents section, the links to the documents attached
in the chat, the link to the patient's file and the file picker
(:func:`~enrs.coordination.auth.reads_documents`,
:func:`~enrs.coordination.auth.files_documents`), the INS
(:func:`~enrs.coordination.auth.shows_ins`). The patient's names and birth date are shown to
all: caring for someone needs them."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from enrs.accounts import service as accounts_service
from enrs.coordination import agenda, chat, notify, service, tasks
from enrs.coordination.auth import (
    coordinates,
    files_documents,
    notification_kinds,
    reads_documents,
    shows_ins,
)
from enrs.documents import repository as documents_repository
from enrs.documents import service as documents_service
from enrs.documents.access import reader_of
from enrs.documents.models import DocumentEntry
from enrs.identity import service as identity_service
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden
from enrs.kit.http import DbSession, TransactionalRoute
from enrs.portal import agenda_changes, coordination_forms, coordination_tasks
from enrs.portal.agenda_changes import STATUS_LABELS as APPOINTMENT_LABELS
from enrs.portal.auth import PortalUser
from enrs.portal.coordination_plans import may_apply, plan_section
from enrs.portal.documents import _audit, _zone
from enrs.portal.endpoints import _render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
LAST_DOCUMENTS = 5
AGENDA_PAST_DAYS = 30  # the circle's appointments shown: from 30 days ago on
FIRST_TASKS = 20  # the open tasks the file lists, soonest due first ("voir tout": all)
LAST_MESSAGES = 50
ALERTS = 10  # the reader's unread notifications about the patient the file shows


@router.get("/coordination")
def my_circles(request: Request, user: PortalUser, session: DbSession) -> HTMLResponse:
    """The circles the person is in, with their unread messages."""
    _audit(request, user, "search-type", "CareTeam", None)
    if not coordinates(user):
        raise Forbidden("la coordination est réservée aux membres des cercles de soins")
    reader = reader_of(session, user)
    unread: dict[str, int] = {}
    for u in chat.unread(session, reader):
        unread[u.team] = unread.get(u.team, 0) + u.count
    circles = [
        (team, service.patient_of(session, team).rri, unread.get(team.resource_id, 0))
        for team in service.circles_with(session, reader)
    ]
    return _render(
        request,
        "coordination_list.html",
        circles=circles,
        csrf=accounts_service.session_csrf(session, user),
    )


@router.get("/coordination/{team_id}")
def coordination_file(
    request: Request, team_id: str, user: PortalUser, session: DbSession
) -> HTMLResponse:
    """A circle's coordination file and chat, for its members: its first
    :data:`FIRST_TASKS` open tasks (all with ``?taches=toutes``), its last
    :data:`LAST_DOCUMENTS` documents and :data:`LAST_MESSAGES` messages, and the reader's
    last :data:`ALERTS` unread notifications about the patient (admission, discharge, new
    document, task, mention: the file's alerts)."""
    team = service.team_by_id(session, team_id)
    patient = service.patient_of(session, team)
    _audit(request, user, "read", "CareTeam", patient)
    request.state.audit[-1].entity_ref = f"CareTeam/{team.resource_id}"
    reader = reader_of(session, user)
    if not coordinates(user) or not service.is_member(session, team, reader):
        raise Forbidden("ce cercle de soins est réservé à ses membres")
    documents: list[DocumentEntry] | None = None
    if reads_documents(user):
        granted = documents_service.access_to(session, reader, patient)
        stmt = documents_repository.readable_entries(reader, granted)
        documents = list(
            session.scalars(
                stmt.order_by(DocumentEntry.date.desc(), DocumentEntry.id.desc()).limit(
                    LAST_DOCUMENTS
                )
            )
        )
    card = identity_service.patient_card(session, patient)
    every_task = request.query_params.get("taches") == "toutes"
    shown, open_count = tasks.open_tasks(session, reader, team, None if every_task else FIRST_TASKS)
    messages = chat.history(session, reader, team, limit=LAST_MESSAGES + 1)
    earlier = len(messages) > LAST_MESSAGES
    since = utcnow() - timedelta(days=AGENDA_PAST_DAYS)
    appointments = agenda.appointments_for(
        session, agenda.appointments_stmt(reader, team=team, start_from=since)
    )
    alerts = (
        notify.inbox(
            session,
            user.rpps,
            kinds=notification_kinds(user),
            patient=patient.rri,
            unread=True,
            limit=ALERTS,
        )
        if user.rpps
        else []
    )
    return _render(
        request,
        "coordination_file.html",
        team=team,
        alerts=alerts,
        patient=patient,
        card=card,
        ins=card.ins if card is not None and shows_ins(user) else None,
        patient_file=reads_documents(user),
        members=service.members(session, team),
        documents=documents,
        attachments_open=reads_documents(user),
        may_attach=files_documents(user),
        tasks=[(t, tasks.is_overdue(t)) for t in shown],
        open_count=open_count,
        messages=[chat.message_json(m, t) for m, t in messages[-LAST_MESSAGES:]],
        earlier=earlier,
        appointments=[
            (a, agenda.participants_of(session, a), agenda_changes.moves_of(a, reader))
            for a in appointments
        ],
        appointment_labels=APPOINTMENT_LABELS,
        evaluations=coordination_forms.evaluations(session, reader, patient),
        grids=coordination_forms.grids(),
        me=reader.key,
        cursor=chat.latest_event(session),
        tz=_zone(request),
        csrf=accounts_service.session_csrf(session, user),
        care_plans=plan_section(request, session, reader, team),
        may_apply=may_apply(user),
        task_moves=coordination_tasks.moves_for(session, user, reader),
        task_status=coordination_tasks.STATUS_FR,
        attachment_max=min(
            request.app.state.settings.chat_attachment_max_bytes,
            request.app.state.settings.max_document_bytes,
        ),
    )
