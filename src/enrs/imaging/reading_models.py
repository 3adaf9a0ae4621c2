"""The tables of teleradiology and second reading (:mod:`enrs.imaging.reading`).

``imaging_reading_group`` / ``imaging_reading_member``: the reading groups (an on-call night
rota, the radiologists covering sites without one, the screening programme's readers) and the
professionals (RPPS) who read for each, registered by the admin
(``enrs imaging reading group add``).

``imaging_reading_request``: a study of the archive sent for reading by a requesting site
(FINESS) to a group, its kind (``teleradiology``: one report; ``screening``: the mammography
screening programme's two independent readings, a third when they disagree), priority, due
time, state, and once done the report filed in the document repository.

``imaging_reading``: one reading of a request (``report`` for teleradiology; ``first``,
``second``, ``third`` for screening): who claimed it, when, the conclusion and, for screening,
the BI-RADS-like assessment; signed once and never changed after. ``version`` is the
optimistic lock: a claim, a release or a signature names the version its page showed and
changes the row only if it is still that one (two radiologists claiming at once: one wins).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow

TELERADIOLOGY, SCREENING = "teleradiology", "screening"
# Request states: waiting for its readings, the screening readings disagree (a third is
# open), done (the report is signed and filed).
OPEN, DISCORDANT, DONE = "open", "discordant", "done"
# Reading states.
WAITING, CLAIMED, SIGNED = "waiting", "claimed", "signed"
REPORT, FIRST, SECOND, THIRD = "report", "first", "second", "third"


class ReadingGroup(Base):
    """A group of radiologists reading together (``enrs imaging reading group add``)."""

    __tablename__ = "imaging_reading_group"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReadingMember(Base):
    """A professional (RPPS) who reads for a group."""

    __tablename__ = "imaging_reading_member"
    __table_args__ = (UniqueConstraint("group_id", "rpps"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("imaging_reading_group.id"), index=True)
    rpps: Mapped[str] = mapped_column(String(11), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReadingRequest(Base):
    """A study sent for reading by a site to a group."""

    __tablename__ = "imaging_reading_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(36), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    requesting_finess: Mapped[str] = mapped_column(String(9), index=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    group_id: Mapped[int] = mapped_column(ForeignKey("imaging_reading_group.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))  # "routine" or "urgent"
    reason: Mapped[str | None] = mapped_column(Text)  # the clinical question
    state: Mapped[str] = mapped_column(String(16), index=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The report filed in the document repository (its DocumentReference id) once done.
    document_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)


class Reading(Base):
    """One reading of a request, by one radiologist; immutable once signed."""

    __tablename__ = "imaging_reading"
    __table_args__ = (UniqueConstraint("request_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(36), unique=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("imaging_reading_request.id"), index=True)
    step: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(8), index=True)
    reader_rpps: Mapped[str | None] = mapped_column(String(11), index=True)
    reader_name: Mapped[str | None] = mapped_column(String(256))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    conclusion: Mapped[str | None] = mapped_column(Text)
    assessment: Mapped[str | None] = mapped_column(String(2))  # BI-RADS-like, screening only
    version: Mapped[int] = mapped_column(Integer, default=1)
