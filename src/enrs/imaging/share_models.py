"""The tables of the access codes to a study (:mod:`.share`).

``imaging_share``: one access code to one study, kept only as the SHA-256 of its normalised
text (``code_hash``), who created it, until when it works, and its revocation.
``imaging_share_session``: a browser session opened with a code (the SHA-256 of its cookie,
until when, from where); it lives only while its code is neither expired nor revoked.
``imaging_share_attempt``: every code typed on the portal, right or wrong, with the address it
came from: the rate limit counts the failed ones.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class Share(Base):
    """An access code to one study."""

    __tablename__ = "imaging_share"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(160))  # the reader key: user:…, client:…
    created_by_name: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(160))


class ShareSession(Base):
    """A browser session opened with an access code: it reads the code's study only."""

    __tablename__ = "imaging_share_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_id: Mapped[int] = mapped_column(ForeignKey("imaging_share.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source_ip: Mapped[str | None] = mapped_column(String(64))


class ShareAttempt(Base):
    """A code typed on the portal, and whether it opened a study."""

    __tablename__ = "imaging_share_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source_ip: Mapped[str] = mapped_column(String(64), index=True)
    success: Mapped[bool] = mapped_column(Boolean)
