"""Endpoints of the care circle's secure chat (:mod:`.chat`):

- ``POST /fhir/Communication``: a message (``about`` ``CareTeam/{id}``, ``payload``
  ``contentString``, optional ``topic.text`` — the thread, "Général" by default — and
  ``recipient`` references by idNatPs: the members mentioned), with at most one file as a
  ``payload`` ``contentAttachment`` (``contentType``, ``data`` base64, ``title``; a PDF or a
  JPEG, :mod:`.chat_attachments`) filed in the patient's record: the answer's ``payload``
  then has a ``contentReference`` to that ``DocumentReference`` (413 / 422, nothing stored,
  when the file is too large, of another type, or not what its type says);
- ``GET /fhir/Communication?about=CareTeam/{id}[&topic=…]``: the history, oldest first;
- ``POST /api/coordination/read`` (``{"team", "message"}``): read up to that message;
  ``GET /api/coordination/unread``: unread counts per thread;
- ``GET /api/coordination/stream``: the live feed, as Server-Sent Events (``text/event-
  stream``: ``id`` the event's cursor, ``event`` ``message`` or ``read``, ``data`` JSON),
  from ``Last-Event-ID`` (sent by the browser when it reconnects) or ``?after=``, else from
  now. Each worker reads the new events once for all its streams (:mod:`.live`), woken by
  :class:`enrs.kit.live.EventWaker`; a comment every
  :data:`KEEPALIVE` seconds keeps proxies from closing an idle stream.

Members only (403 otherwise), with the scopes ``Communication.c`` / ``.s`` / ``.u``, health
professionals and social workers alike (:data:`enrs.coordination.auth.COORDINATORS`); an
attachment also needs ``DocumentReference.c`` (a social worker's is refused, 403: it would be
filed in the patient's clinical record and fed to the DMP), and reading the document a message
links to is the repository's rule (``DocumentReference.r`` / ``Binary.r``: not a social
worker's). Every call is audited with the patient (the stream: its opening, with its cursor;
an attachment: the filing of its ``DocumentReference`` too)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.coordination import chat, chat_attachments, service
from enrs.coordination.auth import (
    CommunicationCreate,
    CommunicationSearch,
    CommunicationUpdate,
    files_documents,
)
from enrs.coordination.chat_attachments import Attachment
from enrs.coordination.chat_models import Message, Thread
from enrs.coordination.endpoints import applied, parsed_search, searchset
from enrs.coordination.live import ChatFeed
from enrs.coordination.models import CareTeam
from enrs.directory.identifiers import RPPS_SYSTEM
from enrs.documents.access import Reader, reader_of
from enrs.kit.errors import BadRequest, Forbidden, Unprocessable
from enrs.kit.fhir.capability import CapabilityRegistry
from enrs.kit.fhir.outcome import FhirJSONResponse
from enrs.kit.fhir.requests import read_resource
from enrs.kit.fhir.search import SearchSpec
from enrs.kit.fhir.search_params import SearchParam
from enrs.kit.fhir.search_values import StringValue
from enrs.kit.http import DbSession, TransactionalRoute, new_entry, set_agent
from enrs.kit.security.principal import Principal

Poster = CommunicationCreate
Searcher = CommunicationSearch
Marker = CommunicationUpdate

router = APIRouter(route_class=TransactionalRoute, tags=["coordination"])
KEEPALIVE = 15.0


def register_capabilities(registry: CapabilityRegistry) -> None:
    registry.add_resource(
        "Communication",
        interactions=["create", "search-type"],
        search_params=[
            ("about", "reference", "The care circle (CareTeam/{id}) whose messages are listed"),
            ("topic", "string", "The thread (its topic), exact"),
        ],
    )


def _team(request: Request, session: Session, reference: Any) -> CareTeam:
    raw = reference.get("reference") if isinstance(reference, dict) else reference
    if not isinstance(raw, str) or not raw.startswith("CareTeam/"):
        raise Unprocessable("about: a reference CareTeam/{id}")
    entry = request.state.audit[-1]
    entry.entity_ref = raw[:256]
    team = service.team_by_id(session, raw.removeprefix("CareTeam/"))
    entry.patient_ref = f"Patient/{service.patient_of(session, team).rri}"
    return team


def communication(message: Message, thread: Thread, team: CareTeam, rri: str) -> dict[str, Any]:
    """A chat message as a FHIR R4 ``Communication``."""
    sender: dict[str, Any] = {"display": message.sender_name}
    if message.sender_rpps:
        sender["identifier"] = {"system": RPPS_SYSTEM, "value": f"8{message.sender_rpps}"}
    return {
        "resourceType": "Communication",
        "id": message.resource_id,
        "status": "completed",
        "subject": {"reference": f"Patient/{rri}"},
        "about": [{"reference": f"CareTeam/{team.resource_id}"}],
        "topic": {"text": thread.topic},
        "sent": message.sent_at.isoformat(),
        "sender": sender,
        "recipient": [
            {"identifier": {"system": RPPS_SYSTEM, "value": f"8{rpps}"}}
            for rpps in json.loads(message.mentions)
        ],
        "payload": _payload(message),
    }


def _payload(message: Message) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if message.text or message.document_id is None:
        found.append({"contentString": message.text})
    if message.document_id is not None:
        reference = {
            "reference": f"DocumentReference/{message.document_id}",
            "type": "DocumentReference",
            "display": message.attachment_title,
        }
        found.append({"contentReference": reference})
    return found


def _contents(request: Request, body: dict[str, Any]) -> tuple[str, Attachment | None]:
    """The message's text and file: ``payload`` holds a ``contentString`` and at most one
    ``contentAttachment`` (one of them at least)."""
    payload = body.get("payload")
    if not isinstance(payload, list) or not payload:
        raise Unprocessable("Communication.payload: the message's text (contentString)")
    texts, files = [], []
    for part in payload:
        keys = set(part) - {"id", "extension"} if isinstance(part, dict) else set()
        if keys == {"contentString"} and isinstance(part["contentString"], str):
            texts.append(part["contentString"])
        elif keys == {"contentAttachment"}:
            files.append(part["contentAttachment"])
        else:
            raise Unprocessable(
                "Communication.payload: a contentString (the text) or a contentAttachment"
            )
    if len(texts) > 1 or len(files) > 1:
        raise Unprocessable("Communication.payload: one text and at most one attachment")
    if not files:
        return texts[0], None
    limit = _record(request).max_bytes
    return (texts[0] if texts else ""), chat_attachments.from_fhir(files[0], limit)


def _record(request: Request) -> chat_attachments.Record:
    settings = request.app.state.settings
    return chat_attachments.Record(
        request.app.state.storage,
        request.app.state.identity_config,
        settings.oid_root,
        min(settings.chat_attachment_max_bytes, settings.max_document_bytes),
    )


def _audit_filing(request: Request, principal: Principal, message: Message, rri: str) -> None:
    """The attachment's filing in the audit trail, as the repository's own filings are."""
    entry = new_entry(request, "rest", "create", action="C", resource_type="DocumentReference")
    set_agent(entry, principal)
    entry.patient_ref = f"Patient/{rri}"
    entry.entity_ref = f"DocumentReference/{message.document_id}"


def _mentions(body: dict[str, Any]) -> list[str]:
    found = []
    for recipient in body.get("recipient") or []:
        ident = recipient.get("identifier") if isinstance(recipient, dict) else None
        value = ident.get("value") if isinstance(ident, dict) else None
        if not isinstance(ident, dict) or ident.get("system") != RPPS_SYSTEM or not value:
            raise Unprocessable(f"Communication.recipient: a member by idNatPs ({RPPS_SYSTEM})")
        found.append(str(value)[1:] if str(value).startswith("8") else str(value))
    return found


@router.post("/fhir/Communication", status_code=201, summary="Post a message to a care circle")
async def post_message(request: Request, session: DbSession, principal: Poster) -> FhirJSONResponse:
    body = await read_resource(request, "Communication")
    about = body.get("about") or [None]
    team = _team(request, session, about[0] if isinstance(about, list) else None)
    text, attachment = _contents(request, body)
    if attachment is not None and not files_documents(principal):
        raise Forbidden(
            "Communication.payload.contentAttachment: a file is filed in the patient's record, "
            "which only a health professional feeds (send the message without it)"
        )
    topic = (body.get("topic") or {}).get("text") if isinstance(body.get("topic"), dict) else None
    message, thread = chat.post(
        session,
        reader_of(session, principal),
        team,
        text,
        topic=topic,
        mentions=_mentions(body),
        attachment=attachment,
        record=_record(request) if attachment else None,
    )
    rri = service.patient_of(session, team).rri
    if message.document_id is not None:
        _audit_filing(request, principal, message, rri)
    base = request.app.state.settings.fhir_base
    return FhirJSONResponse(
        communication(message, thread, team, rri),
        status_code=201,
        headers={"Location": f"{base}/Communication/{message.resource_id}"},
    )


def _topic(value: StringValue) -> Any:
    if value.modifier == "contains":
        return Thread.topic.contains(value.text, autoescape=True)
    return Thread.topic == value.text


def communication_spec() -> SearchSpec:
    """``GET /fhir/Communication``: ``about`` (the circle, applied by the base statement),
    ``topic`` (the thread, exact; ``:contains``); oldest first (``_sort=-sent``: the last
    ones first)."""
    return SearchSpec(
        "Communication",
        {
            "about": SearchParam.reference(targets=["CareTeam"], match=applied),
            "topic": SearchParam.string(match=_topic),
        },
        sorts={"sent": Message.sent_at},
        default_sort="sent",
        tiebreaker=Message.id,
        default_count=100,
        max_count=500,
    )


@router.get("/fhir/Communication", summary="A care circle's messages")
def search_messages(request: Request, session: DbSession, principal: Searcher) -> FhirJSONResponse:
    parsed = parsed_search(request, communication_spec())
    if "about" not in request.query_params:
        raise BadRequest("search by about=CareTeam/{id} (and topic)")
    team = _team(request, session, request.query_params["about"])
    stmt = chat.messages_stmt(session, reader_of(session, principal), team)
    rri = service.patient_of(session, team).rri

    def render(page: Sequence[Message]) -> list[dict[str, Any]]:
        ids = {m.thread_id for m in page}
        threads = {t.id: t for t in session.scalars(select(Thread).where(Thread.id.in_(ids)))}
        return [communication(m, threads[m.thread_id], team, rri) for m in page]

    return searchset(request, session, parsed, stmt, render)


class ReadIn(BaseModel):
    team: str
    message: str


@router.post("/api/coordination/read", status_code=204, summary="Read up to a message")
def mark_read(request: Request, body: ReadIn, session: DbSession, principal: Marker) -> Response:
    team = _team(request, session, f"CareTeam/{body.team}")
    chat.mark_read(session, reader_of(session, principal), team, body.message)
    return Response(status_code=204)


@router.get("/api/coordination/unread", summary="Unread messages per thread")
def unread(session: DbSession, principal: Searcher) -> JSONResponse:
    found = chat.unread(session, reader_of(session, principal))
    return JSONResponse([{"team": u.team, "topic": u.topic, "unread": u.count} for u in found])


def _cursor(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("Last-Event-ID / after: an event id")
    return int(raw)


async def _feed(request: Request, feed: ChatFeed, reader: Reader, after: int) -> AsyncIterator[str]:
    yield f"retry: 2000\nid: {after}\n\n"  # the browser reconnects from here at the latest

    async def connected() -> bool:
        return not await request.is_disconnected()

    async for chunk in feed.stream(reader, after, connected, KEEPALIVE):
        yield chunk


@router.get("/api/coordination/stream", summary="The chat's live feed (Server-Sent Events)")
def stream(request: Request, session: DbSession, principal: Searcher) -> StreamingResponse:
    reader = reader_of(session, principal)
    after = _cursor(request)
    if after is None:
        after = chat.latest_event(session)
    request.state.audit[-1].query = f"after={after}"
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    feed = _feed(request, request.app.state.chat_feed, reader, after)
    return StreamingResponse(feed, media_type="text/event-stream", headers=headers)
