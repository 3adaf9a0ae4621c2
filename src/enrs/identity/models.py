"""Tables of the identity server. Nothing is deleted: links end, identities deactivate,
every change of a source identity keeps its previous version."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class RegionalPatient(Base):
    """One person for the region, with a stable regional identifier (FR Core ``RRI``)."""

    __tablename__ = "identity_patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rri: Mapped[str] = mapped_column(String(32), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("identity_patient.id"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SourceIdentity(Base):
    """What one facility knows of a patient: its assigning authority (OID) and IPP."""

    __tablename__ = "identity_source"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    authority: Mapped[str] = mapped_column(String(64))
    ipp: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int] = mapped_column(ForeignKey("identity_patient.id"), index=True)
    birth_name: Mapped[str] = mapped_column(String(128))
    used_name: Mapped[str | None] = mapped_column(String(128))
    given_names: Mapped[str] = mapped_column(String(256))  # space separated, in order
    birth_date: Mapped[date | None] = mapped_column(Date, index=True)
    # The day of the death, from the record (``record.death_date``): the imaging retention job's
    # period after a death (R.1112-7).
    death_date: Mapped[date | None] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(1))
    birth_place: Mapped[str | None] = mapped_column(String(5))
    address_line: Mapped[str | None] = mapped_column(String(256))
    postal_code: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(128))
    country: Mapped[str | None] = mapped_column(String(3))
    telecom: Mapped[str | None] = mapped_column(Text)  # JSON list of {system, value}
    ins: Mapped[str | None] = mapped_column(String(15), index=True)
    ins_system: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(5))
    attributes: Mapped[str] = mapped_column(String(32), default="")
    method_collection: Mapped[str | None] = mapped_column(String(8))
    validation_mode: Mapped[str | None] = mapped_column(String(8))
    n_birth_name: Mapped[str] = mapped_column(String(128))
    n_used_name: Mapped[str] = mapped_column(String(128))
    n_given_names: Mapped[str] = mapped_column(String(256))
    n_first_given: Mapped[str] = mapped_column(String(128))
    birth_year: Mapped[int | None] = mapped_column(Integer)
    # Matching keys (``identity.traits``): French phonetic keys of the birth name and of the
    # first first name; the address, city, first phone and first e-mail as compared. NULL
    # when empty.
    p_birth_name: Mapped[str | None] = mapped_column(String(64))
    p_first_given: Mapped[str | None] = mapped_column(String(64))
    n_address: Mapped[str | None] = mapped_column(String(256))
    n_city: Mapped[str | None] = mapped_column(String(128))
    n_phone: Mapped[str | None] = mapped_column(String(16))
    n_email: Mapped[str | None] = mapped_column(String(256))
    # The order of birth of a multiple birth (``identity.record.birth_order``): twins differ.
    birth_order: Mapped[str | None] = mapped_column(String(2))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The demographic record as fed, beyond the traits above (:mod:`.record`): JSON.
    record: Mapped[str | None] = mapped_column(Text)
    # The other identifiers kept (:mod:`.others`), JSON [[system, value, type]]: read with the
    # row; ``identity_other_identifier`` holds them too, for look-ups by identifier.
    other_identifiers: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("authority", "ipp"),
        Index("ix_identity_source_name_year", "n_birth_name", "birth_year"),
        Index("ix_identity_source_given_name", "n_first_given", "n_birth_name"),
        Index("ix_identity_source_used_year", "n_used_name", "birth_year"),
        Index("ix_identity_source_phonetic_year", "p_birth_name", "birth_year"),
        Index("ix_identity_source_phonetic_given", "p_first_given", "p_birth_name"),
        Index("ix_identity_source_phone", "n_phone"),
        Index("ix_identity_source_address", "n_address", "postal_code"),
    )

    @property
    def attribute_set(self) -> frozenset[str]:
        return frozenset(self.attributes.split())


class SourceIdentityVersion(Base):
    """A previous state of a source identity (kept on every update, merge or correction)."""

    __tablename__ = "identity_source_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("identity_source.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(256))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdentityLink(Base):
    """Why a source identity belongs to a regional patient; ended links stay as history."""

    __tablename__ = "identity_link"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("identity_source.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("identity_patient.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # NEW, INS, AUTO, MANUAL, MERGE
    score: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(256))


class IdentityTask(Base):
    """Work for the identitovigilance cell: a potential duplicate or a potential collision."""

    __tablename__ = "identity_task"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # DUPLICATE | COLLISION
    status: Mapped[str] = mapped_column(String(8), default="OPEN", index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("identity_source.id"), index=True)
    other_patient_id: Mapped[int] = mapped_column(ForeignKey("identity_patient.id"))
    other_source_id: Mapped[int | None] = mapped_column(ForeignKey("identity_source.id"))
    score: Mapped[float | None] = mapped_column(Float)
    levels: Mapped[str | None] = mapped_column(Text)  # JSON: comparison -> level
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(256))
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    effects: Mapped[str | None] = mapped_column(Text)  # JSON: what the decision changed, to undo


class IdentityChange(Base):
    """On SQLite, the log of ``identity_source`` rows inserted or updated, in commit order
    (SQLite has one writer at a time), written by triggers so that no code path escapes it.
    A listener that read an identity's candidates ahead of its write turn re-reads only the
    rows changed since (``repository.candidates_since``); the triggers keep the last 10 000
    entries. Unused, and without triggers, on PostgreSQL (concurrent writers do not commit in
    sequence order)."""

    __tablename__ = "identity_change"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(Integer)


class IdentityDomain(Base):
    """An assigning authority the admin registered (``enrs identity domains add``): a
    facility's identifier domain, known by its OID, its HL7 v2 namespace (CX-4.1, MSH-4.1) and
    the facility's name as the cell reads it. Identities are written and queried only in
    registered domains (besides the RRI's and the INS's, which are the server's own); a domain
    is never removed (identities and messages keep naming it)."""

    __tablename__ = "identity_domain"

    oid: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace: Mapped[str | None] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(256))
    # The member facility (FINESS) that owns the domain: its clients and senders write it.
    finess: Mapped[str | None] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OtherIdentifier(Base):
    """An identifier a facility gave for one of its identities besides its IPP and the INS
    (another facility's number it knows, a national or foreign number), kept because its domain
    is registered: answered with that identity and cross-referenced (a PIX query by it finds
    the regional patient). Replaced as a whole by each new version of the identity."""

    __tablename__ = "identity_other_identifier"
    __table_args__ = (
        UniqueConstraint("source_id", "system", "value"),
        Index("ix_identity_other_identifier_key", "system", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("identity_source.id"), index=True)
    system: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(64))
    type_code: Mapped[str | None] = mapped_column(String(8))
