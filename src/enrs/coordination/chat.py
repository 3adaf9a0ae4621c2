"""The care circle's secure chat (FHIR ``Communication``): threads per circle and topic,
messages, mentions, read receipts and unread counts, and the live feed every open browser of
the members reads.

- Only an active member of the circle (:mod:`.circle`: the professional or one of their
  structures) posts, reads the history, marks as read and receives live; a member removed
  from the circle stops receiving at the next event.
- A message is kept as its sender wrote it (plain text, 1 to :data:`MAX_TEXT` characters);
  whoever shows it escapes it. It may mention members of the circle (their RPPS). It may
  carry a file (a PDF or a JPEG; then its text may be empty) filed in the patient's record in
  the same transaction (:mod:`.chat_attachments`): the message refers to the document.
- Posting a message, or marking a thread read, emits an event in the same transaction
  (:func:`enrs.kit.events.emit`): the live feed is the event outbox read in commit order from
  a cursor (the last event id the reader received, which a browser sends back as
  ``Last-Event-ID`` when it reconnects: it gets what it missed, in order, and nothing is lost
  when the server restarts).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from enrs.coordination import chat_attachments, service
from enrs.coordination.chat_attachments import Attachment, Record
from enrs.coordination.chat_models import Message, ReadMark, Thread
from enrs.coordination.models import CareTeam
from enrs.documents.access import Reader
from enrs.kit.db import utcnow
from enrs.kit.errors import Forbidden, NotFound, Unprocessable
from enrs.kit.events import EventRecord, emit, read_events

MAX_TEXT = 5000
DEFAULT_TOPIC = "Général"
POSTED, READ = "coordination.message", "coordination.read"
EVENTS = (POSTED, READ)


def _member(session: Session, team: CareTeam, reader: Reader) -> None:
    if not service.is_member(session, team, reader):
        raise Forbidden(f"only a member of CareTeam/{team.resource_id} takes part in its chat")


def _topic(raw: str | None) -> str:
    topic = (raw or DEFAULT_TOPIC).strip()
    if not topic or len(topic) > 128:
        raise Unprocessable("a thread's topic: 1 to 128 characters")
    return topic


def thread_of(session: Session, team: CareTeam, topic: str, *, create: bool) -> Thread | None:
    stmt = select(Thread).where(Thread.team_id == team.id, Thread.topic == topic)
    found = session.scalar(stmt)
    if found is None and create:
        found = Thread(team_id=team.id, topic=topic, created_at=utcnow())
        session.add(found)
        session.flush()
    return found


def post(
    session: Session,
    reader: Reader,
    team: CareTeam,
    text: str,
    *,
    topic: str | None = None,
    mentions: list[str] | None = None,
    attachment: Attachment | None = None,
    record: Record | None = None,
) -> tuple[Message, Thread]:
    """A member's message to a thread of the circle (made on its first message), with its
    attachment filed in the patient's record (``record``: where) when it has one."""
    _member(session, team, reader)
    if len(text) > MAX_TEXT or (attachment is None and not text.strip()):
        raise Unprocessable(f"a message: 1 to {MAX_TEXT} characters")
    members = {m.rpps for m in service.members(session, team) if m.status == "active" and m.rpps}
    strangers = sorted(set(mentions or []) - members)
    if strangers:
        raise Unprocessable(f"mentions: {', '.join(strangers)} not in the circle")
    thread_topic = _topic(topic)
    document_id = title = None
    if attachment is not None:
        if record is None:
            raise ValueError("an attachment is filed in a record")
        document_id, title = chat_attachments.file(session, record, reader, team, attachment)
    thread = thread_of(session, team, thread_topic, create=True)
    assert thread is not None
    message = Message(
        resource_id=uuid.uuid4().hex,
        thread_id=thread.id,
        sender=reader.key,
        sender_name=reader.name,
        sender_rpps=reader.rpps,
        text=text,
        mentions=json.dumps(sorted(set(mentions or []))),
        document_id=document_id,
        attachment_title=title,
        attachment_type=attachment.content_type if attachment else None,
        sent_at=utcnow(),
    )
    session.add(message)
    session.flush()
    emit(session, POSTED, {"team": team.resource_id, "message": message.resource_id})
    return message, thread


def history(
    session: Session, reader: Reader, team: CareTeam, topic: str | None = None, limit: int = 500
) -> list[tuple[Message, Thread]]:
    """The circle's messages (of one topic, or all), oldest first, the last ``limit``."""
    _member(session, team, reader)
    stmt = select(Message, Thread).join(Thread, Thread.id == Message.thread_id)
    stmt = stmt.where(Thread.team_id == team.id)
    if topic is not None:
        stmt = stmt.where(Thread.topic == topic)
    rows = session.execute(stmt.order_by(Message.id.desc()).limit(limit)).all()
    return [(m, t) for m, t in reversed(rows)]


def messages_stmt(session: Session, reader: Reader, team: CareTeam) -> Select[Message]:
    """The statement of the circle's messages (for a member only, else 403), in no order; its
    threads joined (to filter on their topic)."""
    _member(session, team, reader)
    stmt = select(Message).join(Thread, Thread.id == Message.thread_id)
    return stmt.where(Thread.team_id == team.id)


def mark_read(session: Session, reader: Reader, team: CareTeam, message_id: str) -> ReadMark:
    """The reader has read their thread up to this message (a read receipt)."""
    _member(session, team, reader)
    row = session.execute(
        select(Message, Thread)
        .join(Thread, Thread.id == Message.thread_id)
        .where(Message.resource_id == message_id, Thread.team_id == team.id)
    ).first()
    if row is None:
        raise NotFound(f"CareTeam/{team.resource_id} has no message {message_id}")
    message, thread = row
    mark = session.get(ReadMark, (thread.id, reader.key))
    if mark is None:
        mark = ReadMark(thread_id=thread.id, reader=reader.key, message_id=0)
        session.add(mark)
    if message.id > mark.message_id:
        mark.message_id, mark.reader_name, mark.read_at = message.id, reader.name, utcnow()
        session.flush()
        emit(
            session,
            READ,
            {"team": team.resource_id, "message": message_id, "reader": reader.key},
        )
    return mark


@dataclass(frozen=True)
class Unread:
    team: str
    topic: str
    count: int


def unread(session: Session, reader: Reader) -> list[Unread]:
    """Per thread of the circles the reader is in: the messages of others after their mark."""
    found = []
    for team in service.circles_with(session, reader):
        threads = session.scalars(select(Thread).where(Thread.team_id == team.id)).all()
        for thread in threads:
            mark = session.get(ReadMark, (thread.id, reader.key))
            stmt = select(func.count(Message.id)).where(
                Message.thread_id == thread.id,
                Message.id > (mark.message_id if mark else 0),
                Message.sender != reader.key,
            )
            found.append(Unread(team.resource_id, thread.topic, session.scalar(stmt) or 0))
    return found


def read_by(session: Session, team: CareTeam) -> dict[int, list[tuple[str, int]]]:
    """Per thread id: who read up to which message id (``(reader name, message id)``)."""
    stmt = select(ReadMark).join(Thread, Thread.id == ReadMark.thread_id)
    marks: dict[int, list[tuple[str, int]]] = {}
    for mark in session.scalars(stmt.where(Thread.team_id == team.id)):
        marks.setdefault(mark.thread_id, []).append((mark.reader_name, mark.message_id))
    return marks


def latest_event(session: Session) -> int:
    """The cursor of a reader who wants only what comes from now on."""
    return session.scalar(select(func.max(EventRecord.id))) or 0


@dataclass(frozen=True)
class LiveEvent:
    id: int
    kind: str  # message, read
    data: dict[str, Any]


def rendered(session: Session, payload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    row = session.execute(
        select(Message, Thread)
        .join(Thread, Thread.id == Message.thread_id)
        .where(Message.resource_id == payload["message"])
    ).first()
    if row is None:
        return None
    message, thread = row
    if kind == READ:
        return {"team": payload["team"], "topic": thread.topic, "message": message.resource_id,
                "reader": payload["reader"]}  # fmt: skip
    return {"team": payload["team"], **message_json(message, thread)}


def message_json(message: Message, thread: Thread) -> dict[str, Any]:
    return {
        "id": message.resource_id,
        "topic": thread.topic,
        "sender": message.sender,
        "sender_name": message.sender_name,
        "text": message.text,
        "mentions": json.loads(message.mentions),
        "sent": message.sent_at.isoformat(),
        "attachment": attachment_json(message),
    }


def attachment_json(message: Message) -> dict[str, str] | None:
    """The message's attachment as a link shows it: the document, its name, its type."""
    if message.document_id is None:
        return None
    kind = message.attachment_type or ""
    return {
        "document": message.document_id,
        "title": message.attachment_title or "Pièce jointe",
        "contentType": kind,
        "label": chat_attachments.ACCEPTED.get(kind, kind),
    }


def live_page(session: Session, reader: Reader, after: int) -> tuple[list[LiveEvent], int]:
    """The chat events after the cursor ``after`` that the reader may receive now (a circle
    they are in at this moment), and the new cursor (past the ones they may not)."""
    events = read_events(session, after=after, names=EVENTS, limit=200)
    allowed: dict[str, bool] = {}
    found = []
    for event in events:
        team_id = event.payload["team"]
        if team_id not in allowed:
            team = session.scalar(select(CareTeam).where(CareTeam.resource_id == team_id))
            allowed[team_id] = team is not None and service.is_member(session, team, reader)
        if not allowed[team_id]:
            continue
        data = rendered(session, event.payload, event.name)
        if data is not None:
            found.append(LiveEvent(event.id, "message" if event.name == POSTED else "read", data))
    return found, events[-1].id if events else after
