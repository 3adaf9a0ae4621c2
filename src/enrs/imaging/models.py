"""The imaging archive's tables.

``imaging_peer``: the DICOM application entities allowed to associate (AE title, the host it
connects from, its port, whether it may store or retrieve, the assigning authority of its
PatientIDs). ``imaging_study`` / ``imaging_series`` / ``imaging_instance``: the index of what
was received, one row per study, series and SOP instance, with the key attributes as sent;
the instance's bytes (a DICOM Part 10 file: the data set exactly as received) are in the blob
storage under ``blob_key``. A study is attached to a regional patient only when its PatientID
and issuer designate one through the identity server (``patient_status`` ``resolved``);
otherwise it is kept and flagged (``unknown``, or ``conflict`` when its instances disagree).
``imaging_commitment_report``: the Storage Commitment reports not delivered on their
request's association, sent again until delivered or given up (:mod:`.commitment`).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow

RESOLVED, UNKNOWN, CONFLICT = "resolved", "unknown", "conflict"


class Peer(Base):
    """A DICOM AE registered by the admin (``enrs imaging ae add``)."""

    __tablename__ = "imaging_peer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aet: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    may_store: Mapped[bool] = mapped_column(Boolean, default=False)
    may_retrieve: Mapped[bool] = mapped_column(Boolean, default=False)
    # The assigning authority (OID) of the PatientIDs it sends without an issuer.
    authority: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Study(Base):
    """A study (Study Instance UID) and the patient it belongs to."""

    __tablename__ = "imaging_study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    # The regional patient, when the PatientID and issuer designate one (else NULL).
    patient_id: Mapped[int | None] = mapped_column(Integer, index=True)
    patient_status: Mapped[str] = mapped_column(String(16), index=True)
    patient_note: Mapped[str | None] = mapped_column(Text)
    # As sent: PatientID (0010,0020), the issuer it was read in (an OID, else the raw text).
    source_patient_id: Mapped[str | None] = mapped_column(String(64))
    source_issuer: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(324))
    patient_birth_date: Mapped[date | None] = mapped_column(Date)
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    # The accession number's assigning authority, an OID, when the data set gives one (Issuer
    # of Accession Number Sequence, 0008,0051); else the PatientID's issuer stands for it.
    accession_issuer: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[date | None] = mapped_column(Date, index=True)
    study_description: Mapped[str | None] = mapped_column(String(64))
    sending_aet: Mapped[str] = mapped_column(String(128))  # AE title, or client id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Series(Base):
    __tablename__ = "imaging_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Instance(Base):
    """A SOP instance as received, and where its bytes are."""

    __tablename__ = "imaging_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("imaging_series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)  # of the data set as received
    sha256: Mapped[str] = mapped_column(String(64))  # of the data set as received
    blob_key: Mapped[str] = mapped_column(String(256))
    sending_aet: Mapped[str] = mapped_column(String(128))  # AE title, or client id
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The blob storage tier of its bytes: "warm", or "cold" once moved by the retention job.
    storage_tier: Mapped[str] = mapped_column(String(8), default="warm", server_default="warm")


class StudyCorrection(Base):
    """One correction of a study by the identitovigilance cell (:mod:`.correction`): when, who,
    why, and the study's patient, filing identifier (PatientID and issuer), accession number
    and status before and after. Never updated nor deleted: the study's history."""

    __tablename__ = "imaging_study_correction"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    corrected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))  # user:<id>, or cli:<login>
    reason: Mapped[str] = mapped_column(Text)
    patient_before: Mapped[int | None] = mapped_column(Integer)
    patient_after: Mapped[int | None] = mapped_column(Integer)
    source_patient_id_before: Mapped[str | None] = mapped_column(String(64))
    source_patient_id_after: Mapped[str | None] = mapped_column(String(64))
    source_issuer_before: Mapped[str | None] = mapped_column(String(64))
    source_issuer_after: Mapped[str | None] = mapped_column(String(64))
    accession_before: Mapped[str | None] = mapped_column(String(16))
    accession_after: Mapped[str | None] = mapped_column(String(16))
    status_before: Mapped[str] = mapped_column(String(16))
    status_after: Mapped[str] = mapped_column(String(16))


class CommitmentReport(Base):
    """A Storage Commitment report (N-EVENT-REPORT, PS3.4 J.3.3) to send on a new association to
    the requester's registered host and port: ``status`` pending → sent, or failed once
    ``attempts`` passed the limit; ``report`` the Event Information as DICOM JSON."""

    __tablename__ = "imaging_commitment_report"
    __table_args__ = (Index("ix_imaging_commitment_report_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aet: Mapped[str] = mapped_column(String(16))
    transaction_uid: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[int] = mapped_column(Integer)
    report: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
