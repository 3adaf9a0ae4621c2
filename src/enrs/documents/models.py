"""The document repository's tables.

``document_entry`` holds one row per document version (an XDS DocumentEntry, FHIR
``DocumentReference``): the metadata it is searched by, as columns; the resource as submitted
(then completed by the server) as JSON; the key of its content in the blob storage. A
replaced version stays (status ``superseded``), a withdrawn one too (``entered-in-error``):
only the retention job deletes. ``document_submission_set`` is the SubmissionSet (FHIR
``List``) that brought documents in. ``document_opposition`` records a patient's opposition
to sharing (one document, or all of them), ``document_access`` the accesses declared by
professionals (with a reason, or in an emergency: *bris de glace*).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class SubmissionSet(Base):
    """An XDS SubmissionSet (MHD: ``List`` with the SubmissionSet profile)."""

    __tablename__ = "document_submission_set"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    unique_id: Mapped[str] = mapped_column(String(128), unique=True)
    source_id: Mapped[str | None] = mapped_column(String(128))
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), default="current")
    date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitter: Mapped[str] = mapped_column(String(256))
    submitter_finess: Mapped[str | None] = mapped_column(String(16))
    resource: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DocumentEntry(Base):
    """One version of a document (MHD ``DocumentReference``) and where its content is."""

    __tablename__ = "document_entry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    unique_id: Mapped[str] = mapped_column(String(128), unique=True)
    submission_set_id: Mapped[int] = mapped_column(ForeignKey("document_submission_set.id"))
    # The regional patient the document was filed for (after a merge, the documents of the
    # merged patient are found through the surviving one: see ``service.patient_ids``).
    patient_id: Mapped[int] = mapped_column(Integer)
    source_patient: Mapped[str | None] = mapped_column(String(160))  # "oid|value" as submitted
    status: Mapped[str] = mapped_column(String(24), default="current")
    type_system: Mapped[str] = mapped_column(String(128))
    type_code: Mapped[str] = mapped_column(String(64))
    class_system: Mapped[str] = mapped_column(String(128))
    class_code: Mapped[str] = mapped_column(String(64))
    facility_type: Mapped[str | None] = mapped_column(String(64))
    practice_setting: Mapped[str | None] = mapped_column(String(64))
    format_code: Mapped[str | None] = mapped_column(String(128))
    confidentiality: Mapped[str] = mapped_column(String(16), default="N")
    # The DMP's visibility codes given with the document, space separated (MASQUE_PS,
    # INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX: JDV_J08).
    visibility: Mapped[str] = mapped_column(String(96), default="")
    title: Mapped[str | None] = mapped_column(String(256))
    date: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    author_rpps: Mapped[str | None] = mapped_column(String(16))
    author_reference: Mapped[str | None] = mapped_column(String(256))
    # The author's structure (FINESS): the author organisation named in the metadata, else
    # the facility of the client that submitted it.
    structure_finess: Mapped[str | None] = mapped_column(String(16))
    mime_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha1: Mapped[str] = mapped_column(String(40))
    blob_key: Mapped[str] = mapped_column(String(256))
    language: Mapped[str | None] = mapped_column(String(16))
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("document_entry.id"))
    opposed: Mapped[bool] = mapped_column(Boolean, default=False)
    submitter: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer, default=1)
    resource: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_document_entry_patient_date", "patient_id", "date"),
        Index("ix_document_entry_submission_set", "submission_set_id"),
        # (deleting a document checks that no version replaces it: without this index, a scan
        # of the table per document deleted, on SQLite and PostgreSQL alike; partial, as most
        # documents replace none: SQLite's planner judges a full index of NULLs useless)
        Index(
            "ix_document_entry_replaces",
            "replaces_id",
            sqlite_where=text("replaces_id IS NOT NULL"),
            postgresql_where=text("replaces_id IS NOT NULL"),
        ),
    )

    @property
    def visibility_codes(self) -> frozenset[str]:
        return frozenset(self.visibility.split())


class Opposition(Base):
    """A patient's opposition to sharing: one document (``document_id``) or all (``NULL``)."""

    __tablename__ = "document_opposition"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("document_entry.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(256))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lifted_by: Mapped[str | None] = mapped_column(String(256))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_document_opposition_document",
            "document_id",
            sqlite_where=text("document_id IS NOT NULL"),
            postgresql_where=text("document_id IS NOT NULL"),
        ),
    )


class DeclaredAccess(Base):
    """A professional's access to a patient's documents outside the usual care relationship:
    ``declared`` with a reason, or ``emergency`` (*bris de glace*, reported to the regional
    team). Valid until ``expires_at``."""

    __tablename__ = "document_access"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(Integer)
    reader: Mapped[str] = mapped_column(String(256))  # "user:<subject>"
    reader_name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(256))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_document_access_patient_reader", "patient_id", "reader"),)


class DmpExport(Base):
    """A document's way to the national DMP (the outbound queue, one row per document):
    ``pending`` until sent; ``sent`` once the DMP holds it; ``held`` while the patient has no
    qualified INS (checked again later); ``skipped`` when the patient opposes sharing;
    ``refused`` when the DMP refused it for good (its errors in ``last_error``).

    ``operation`` is what is (or was last) sent: ``register`` (ITI-41), ``update`` (a new
    version of the metadata, ITI-57) or ``deprecate`` (the withdrawal, ITI-57);
    ``dmp_version`` the version of the document the DMP holds (none until it holds it)."""

    __tablename__ = "document_dmp_export"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document_entry.id"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    operation: Mapped[str] = mapped_column(
        String(16), default="register", server_default="register"
    )
    dmp_version: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_document_dmp_export_due", "status", "next_attempt_at"),)
