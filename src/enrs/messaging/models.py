"""The messaging service's tables.

``mail_mailbox`` holds the operator's mailboxes (BAL) of the four MSSanté types: personal
(``PER``, one professional, by RPPS), organisational (``ORG``, a service of a structure, by
FINESS), applicative (``APP``, software of a structure) and cabinet (``CAB``, shared by a
practice, by RPPS). Address and type never change after creation. A mailbox is ``active`` or
``suspended`` (its professional left the directory: no new mail, the mail kept).
``mail_delegation`` says who may read or send as a mailbox that is not theirs (an ORG mailbox
read by a service's secretaries). ``mail_trusted_domain`` is the MSSanté trust space: the
domains of the national list (``enrs messaging trust-list FILE``) with their operator's
certificate DN; mail to or from any other domain is refused. ``mail_trust_list`` (one row)
says which list is in force (its generation date, where it came from) and how the last attempt
to import or refresh one went. ``mail_traffic`` counts the
messages each mailbox sent and received per month (the operator's indicators).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow

MAILBOX_TYPES = ("PER", "ORG", "APP", "CAB")  # TRE_R257-TypeBAL


class Mailbox(Base):
    __tablename__ = "mail_mailbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(254), unique=True)  # lower case
    kind: Mapped[str] = mapped_column(String(3))
    rpps: Mapped[str | None] = mapped_column(String(11), index=True)
    finess: Mapped[str | None] = mapped_column(String(9), index=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    liste_rouge: Mapped[bool] = mapped_column(Boolean, default=False)  # not published
    # active | suspended (by the admin) | inactive (its professional or structure is no
    # longer active in the directory; active again when it is)
    status: Mapped[str] = mapped_column(String(16), default="active")
    # Argon2id (the portal's hasher); Dovecot verifies it as {ARGON2ID}. None: no password
    # login (Pro Santé Connect, or a certificate for an applicative mailbox).
    password_hash: Mapped[str | None] = mapped_column(Text)
    # The digest of what the national directory was last sent for it (None: never).
    published: Mapped[str | None] = mapped_column(String(32))
    # APP only: the facility software's HL7 v2 MLLP listener (HOST:PORT) that gets one MDM
    # per document filed from the mail this mailbox receives (see ``applicative``).
    mllp_endpoint: Mapped[str | None] = mapped_column(String(262))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delegation(Base):
    """``delegate`` (a mailbox address) may read ``mailbox`` and, if ``may_send``, send as it."""

    __tablename__ = "mail_delegation"
    __table_args__ = (UniqueConstraint("mailbox_id", "delegate"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mail_mailbox.id"), index=True)
    delegate: Mapped[str] = mapped_column(String(254), index=True)
    may_send: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrustedDomain(Base):
    """A domain of the national MSSanté list (*liste blanche*), as last imported."""

    __tablename__ = "mail_trusted_domain"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)  # lower case
    description: Mapped[str] = mapped_column(String(512), default="")
    operator_dn: Mapped[str] = mapped_column(String(1024), default="")
    updated: Mapped[str] = mapped_column(String(32), default="")  # DateMAJ as published
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrustListState(Base):
    """The national list in force and the last attempt to import one (a single row, id 1):
    a list older than the one in force is refused, and an admin sees why a refresh failed."""

    __tablename__ = "mail_trust_list"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generated: Mapped[datetime | None] = mapped_column(UTCDateTime)  # DateDeGeneration in force
    source: Mapped[str] = mapped_column(String(2048), default="")  # a URL or a file's path
    imported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # imported | refused | older | unreachable
    outcome: Mapped[str] = mapped_column(String(16), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class Traffic(Base):
    """Messages a mailbox of the operator sent and received in a month (``YYYY-MM``, UTC), as
    Postfix accepted them (counted by the policy service at the end of each message)."""

    __tablename__ = "mail_traffic"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mail_mailbox.id"), primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    received: Mapped[int] = mapped_column(Integer, default=0)


class PatientContact(Base):
    """A patient's address (``…@patient.mssante.fr``) a mailbox of the operator wrote to: the
    patient may then answer it (only professionals write first to a patient)."""

    __tablename__ = "mail_patient_contact"

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mail_mailbox.id"), primary_key=True)
    patient: Mapped[str] = mapped_column(String(254), primary_key=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
