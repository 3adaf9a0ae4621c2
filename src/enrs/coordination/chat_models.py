"""The secure chat's tables.

``coordination_thread`` is a conversation of a care circle on one topic ("Général" by
default); ``coordination_message`` one message of it (FHIR ``Communication``): its text as
written (shown as text, never as HTML), the members it mentions; ``coordination_read_mark``
how far each reader has read a thread (read receipts, unread counts). A message may carry an
attachment filed in the patient's record: the document repository's ``DocumentReference`` id,
with the file's name and media type as the message shows them. Messages are never
changed nor deleted; the order a reader receives them in is the order of the event outbox
(commit order), which their live stream and its replay after a reconnection follow."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class Thread(Base):
    """A care circle's conversation on a topic."""

    __tablename__ = "coordination_thread"
    __table_args__ = (UniqueConstraint("team_id", "topic"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("coordination_care_team.id"), index=True)
    topic: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    """One message of a thread."""

    __tablename__ = "coordination_message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("coordination_thread.id"), index=True)
    sender: Mapped[str] = mapped_column(String(256))  # the reader key (user:…, client:…)
    sender_name: Mapped[str] = mapped_column(String(256))
    sender_rpps: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    mentions: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of RPPS numbers
    document_id: Mapped[str | None] = mapped_column(String(64))  # DocumentReference id
    attachment_title: Mapped[str | None] = mapped_column(String(256))
    attachment_type: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReadMark(Base):
    """How far a reader has read a thread: the last message they saw."""

    __tablename__ = "coordination_read_mark"

    thread_id: Mapped[int] = mapped_column(ForeignKey("coordination_thread.id"), primary_key=True)
    reader: Mapped[str] = mapped_column(String(256), primary_key=True)
    reader_name: Mapped[str] = mapped_column(String(256))
    message_id: Mapped[int] = mapped_column(Integer)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
