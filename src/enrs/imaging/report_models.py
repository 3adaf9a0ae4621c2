"""The imaging documents the archive files in the document repository (:mod:`.reports`,
:mod:`.manifest`): ``imaging_study_document``, one row per report instance received for a
study and per KOS manifest built for it.

A report is ``filed`` (``document_id`` the DocumentReference it became) or ``waiting`` (``note``
says why: its study's patient is not resolved, or the archive holds no image of the study; the
next round files it once that changes, never to a guessed patient). A manifest row keeps the
number of instances it lists and when it was built: an instance received after it makes the
next round build a new version, which replaces it in the document repository (RPLC)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow

REPORT, MANIFEST = "report", "manifest"
FILED, WAITING = "filed", "waiting"


class StudyDocument(Base):
    """A report instance of a study, or a KOS manifest of it, and its document."""

    __tablename__ = "imaging_study_document"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # report, manifest
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # filed, waiting
    note: Mapped[str | None] = mapped_column(Text)
    document_id: Mapped[str | None] = mapped_column(String(64))  # DocumentReference id
    instance_count: Mapped[int | None] = mapped_column(Integer)  # a manifest's instances
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
