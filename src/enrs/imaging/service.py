"""The imaging archive's logic: which peers may associate, what a received instance is, and
how it is indexed and attached to a regional patient.

Filing an instance (:func:`file_instance`) writes in the caller's transaction, never commits:
the caller (:mod:`.filing`) owns the unit of work, has the bytes written to the blob storage
beside it and deletes them if it fails.

Patient reconciliation (:func:`resolve`): the PatientID (0010,0020) is read in the authority
the data set names, in this order: the Issuer of Patient ID Qualifiers Sequence's Universal
Entity ID of type ISO (an OID); the Issuer of Patient ID (0010,0021) when it is an OID, or the
namespace of a registered identity domain; with no issuer at all, the authority registered for
the sending AE (``enrs imaging ae add --authority``). That identifier is resolved by the identity
server (merges followed). A study whose patient cannot be resolved is kept, flagged
``unknown`` with the reason; an issuer the archive cannot read is never replaced by the AE's
authority (that would be a guess). Instances of one study naming another patient identifier, or
resolving to another patient, flag it ``conflict``: the cell decides (:mod:`.correction`);
once it has, instances still naming the identifier it corrected away leave the study as
corrected (only a third identifier flags it again).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.imaging import repository
from enrs.imaging.encoding import Malformed, check_framing, parse
from enrs.imaging.models import CONFLICT, RESOLVED, UNKNOWN, Instance, Peer, Series, Study
from enrs.imaging.repository import StudyState
from enrs.kit.audit.trail import AuditEntry, Outcome
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound, Unprocessable

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, no control


# --- errors: what the listener turns into a DICOM status ------------------------------------


class UnreadableDataset(Unprocessable):
    """The data set is truncated or its encoding broken (C-STORE: 0xC000)."""


class DatasetMismatch(Unprocessable):
    """The data set is not the instance the request announced, or lacks its identifying
    attributes (C-STORE: 0xA900, "Data Set does not match SOP Class")."""


class DuplicateInstance(Conflict):
    """The SOP instance is archived already with other content (C-STORE: 0x0111)."""


# --- peers ------------------------------------------------------------------------------------


def check_aet(aet: str) -> str:
    """``aet`` stripped, or 400: 1 to 16 characters of PS3.5's AE value representation."""
    value = aet.strip()
    if not _AET.match(value) or not value.strip():
        raise BadRequest(f"{aet!r} is not an AE title (1 to 16 characters, no backslash)")
    return value


def add_peer(
    session: Session,
    aet: str,
    *,
    host: str,
    port: int,
    store: bool,
    retrieve: bool,
    authority: str | None = None,
) -> Peer:
    """Register the AE ``aet``, or change a registered one. 400 for a bad title, host, port or
    authority, or an authority that is not a registered identity domain."""
    value = check_aet(aet)
    if not host.strip() or len(host) > 255 or not 0 < port < 65536:
        raise BadRequest("give the AE's host and a port between 1 and 65535")
    if authority is not None and not _OID.match(authority):
        raise BadRequest(f"{authority!r} is not an OID")
    found = repository.peer(session, value) or Peer(aet=value, created_at=utcnow())
    found.host, found.port, found.authority = host.strip(), port, authority
    found.may_store, found.may_retrieve = store, retrieve
    session.add(found)
    session.flush()
    return found


def peers(session: Session) -> list[Peer]:
    return repository.peers(session)


def peer(session: Session, aet: str) -> Peer | None:
    return repository.peer(session, aet.strip())


def remove_peer(session: Session, aet: str) -> None:
    if not repository.remove_peer(session, aet.strip()):
        raise NotFound(f"no AE {aet.strip()!r} is registered")


# --- reading what was received ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One instance as a C-STORE request delivers it: the request's SOP class and instance,
    the presentation context's transfer syntax, the data set's bytes as received."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset: bytes
    calling_aet: str  # the AE title (C-STORE), the client id (STOW-RS)
    address: str
    via: str = "C-STORE"  # or "STOW-RS"

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.dataset).hexdigest()


@dataclass(frozen=True)
class Indexed:
    """The attributes the index keeps, read from the data set."""

    study_uid: str
    series_uid: str
    patient_id: str | None
    issuer: str | None  # the issuer as written (an OID from the qualifiers, else 0010,0021)
    issuer_oid: str | None  # the issuer as an OID, when the data set gives one
    patient_name: str | None
    birth_date: date | None
    sex: str | None
    accession_number: str | None
    accession_issuer: str | None  # an OID (Issuer of Accession Number Sequence), if given
    study_date: date | None
    study_description: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    instance_number: int | None


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text[:limit] or None


def _date(ds: Dataset, keyword: str) -> date | None:
    raw = _text(ds, keyword, 32)
    if raw is None or not re.fullmatch(r"\d{8}", raw):
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError:
        return None


def _int(ds: Dataset, keyword: str) -> int | None:
    raw = _text(ds, keyword, 12)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword, 65)
    if value is None or len(value) > 64 or not _UID.match(value):
        raise DatasetMismatch(f"{keyword} is missing or not a UID")
    return value


def _iso_oid(ds: Dataset, keyword: str) -> str | None:
    """The first Universal Entity ID of type ISO that is an OID in the HL7v2 hierarchic
    designator sequence ``keyword`` (Issuer of Patient ID Qualifiers, Issuer of Accession
    Number)."""
    for item in ds.get(keyword) or []:
        entity = _text(item, "UniversalEntityID", 64)
        if entity and _text(item, "UniversalEntityIDType", 16) == "ISO" and _OID.match(entity):
            return entity
    return None


def _issuer(ds: Dataset) -> tuple[str | None, str | None]:
    """(issuer as written, its OID if given as one)."""
    qualified = _iso_oid(ds, "IssuerOfPatientIDQualifiersSequence")
    if qualified is not None:
        return qualified, qualified
    text = _text(ds, "IssuerOfPatientID", 64)
    return text, text if text and _OID.match(text) else None


def read_received(received: Received) -> Indexed:
    """Check and read the data set: :class:`UnreadableDataset` when it cannot be read whole,
    :class:`DatasetMismatch` when it is not the instance announced or lacks its UIDs."""
    try:
        check_framing(received.dataset, received.transfer_syntax)
        ds = parse(received.dataset, received.transfer_syntax)
    except Malformed as exc:
        raise UnreadableDataset(str(exc)) from None
    if _text(ds, "SOPInstanceUID", 65) != received.sop_instance_uid:
        raise DatasetMismatch("SOP Instance UID differs from the request's")
    if _text(ds, "SOPClassUID", 65) != received.sop_class_uid:
        raise DatasetMismatch("SOP Class UID differs from the request's")
    issuer, issuer_oid = _issuer(ds)
    return Indexed(
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        patient_id=_text(ds, "PatientID", 64),
        issuer=issuer,
        issuer_oid=issuer_oid,
        patient_name=_text(ds, "PatientName", 324),
        birth_date=_date(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex", 16),
        accession_number=_text(ds, "AccessionNumber", 16),
        accession_issuer=_iso_oid(ds, "IssuerOfAccessionNumberSequence"),
        study_date=_date(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription", 64),
        modality=_text(ds, "Modality", 16),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 64),
        instance_number=_int(ds, "InstanceNumber"),
    )


def blob_key(now: date) -> str:
    """A key of its own for each reception: two associations sending one instance at once
    never write over each other's bytes (the index keeps one, the other is deleted)."""
    return f"imaging/{now:%Y/%m}/{uuid.uuid4().hex}.dcm"


# --- the patient -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    patient: PatientRef | None
    issuer: str | None  # the authority the PatientID was read in (an OID), else as written
    note: str | None  # why no patient


def resolve(
    session: Session, config: IdentityConfig, indexed: Indexed, peer_authority: str | None
) -> Resolution:
    """The regional patient the data set's PatientID designates (the rules of the module)."""
    if indexed.patient_id is None:
        return Resolution(None, indexed.issuer, "the data set has no PatientID")
    authority = indexed.issuer_oid
    if authority is None and indexed.issuer is not None:
        authority = identity_service.authority_by_namespace(session, indexed.issuer)
        if authority is None:
            note = f"the issuer {indexed.issuer!r} is neither an OID nor a registered domain"
            return Resolution(None, indexed.issuer, note)
    if authority is None:
        authority = peer_authority
    if authority is None:
        note = "no issuer of the PatientID, and none registered for the sending AE"
        return Resolution(None, None, note)
    try:
        found = identity_service.resolve_patient(session, config, authority, indexed.patient_id)
    except (UnknownDomain, UnknownPatient, Conflict) as exc:
        return Resolution(None, authority, exc.message)
    return Resolution(found, authority, None)


def _reconcile(
    study: StudyState,
    indexed: Indexed,
    resolution: Resolution,
    current: PatientRef | None,
    corrected_away: frozenset[tuple[str | None, str | None]] = frozenset(),
) -> bool:
    """Keep the study's patient (``current``: the one it now is, merges followed), or flag the
    study (never attach it to a guess); whether the study changed. An instance naming an
    identifier the cell has corrected away (``corrected_away``, :mod:`.correction`) changes
    nothing: the cell has ruled on it, and the instance is filed under the corrected patient."""
    named = (indexed.patient_id, resolution.issuer)
    if named in corrected_away and named != (study.source_patient_id, study.source_issuer):
        return False
    same_id = (study.source_patient_id, study.source_issuer) == named
    found = resolution.patient
    if not same_id:
        study.patient_status = CONFLICT
        study.patient_note = (
            f"an instance names the patient {indexed.patient_id!r} of {resolution.issuer!r}, "
            f"the study {study.source_patient_id!r} of {study.source_issuer!r}"
        )
        return True
    if study.patient_status == UNKNOWN and found is not None:
        study.patient_id, study.patient_status, study.patient_note = found.id, RESOLVED, None
        return True
    if (
        study.patient_status == RESOLVED
        and found is not None
        and (current is None or found.id != current.id)
    ):
        study.patient_status = CONFLICT
        study.patient_note = (
            f"the patient identifier now designates {found.rri}, "
            f"not {current.rri if current else 'an active patient'}"
        )
        return True
    return False


# --- filing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filed:
    """What filing an instance did: its study, the study's patient (merges followed)."""

    study: StudyState
    patient: PatientRef | None


def file_instance(
    session: Session,
    config: IdentityConfig,
    received: Received,
    indexed: Indexed,
    *,
    peer_authority: str | None,
    key: str,
) -> Filed | None:
    """Index the instance whose file was written under ``key`` (no commit): its study and
    series created if new, the study's patient resolved or flagged. ``None`` when the SOP
    instance is archived already with the same bytes (a resend, or another association's
    filing of it at the same moment: the store is then a success with nothing to do);
    :class:`DuplicateInstance` when it is archived with other content (the original is kept).

    Most instances join a study and series filed already: the series is looked up first and
    the instance's row inserted into it at once (that insert is the duplicate check), then the
    study locked and reconciled; the study and series are inserted only when absent."""
    now = utcnow()
    series = repository.series(session, indexed.series_uid)
    inserted = False
    if series is not None:  # the usual case: the instance's insert is the duplicate check
        inserted = _instance(session, received, indexed, series[0], key, now)
        if not inserted:
            return None
    resolution = resolve(session, config, indexed, peer_authority)
    study, patient = _study(session, received, indexed, resolution, now)
    if series is None:
        series = _series(session, indexed, study.id, now)
    if series[1] != study.id:
        raise DatasetMismatch(f"series {indexed.series_uid} belongs to another study")
    if not inserted and not _instance(session, received, indexed, series[0], key, now):
        return None  # filed by another association meanwhile
    return Filed(study, patient)


def _study(
    session: Session, received: Received, indexed: Indexed, resolution: Resolution, now: datetime
) -> tuple[StudyState, PatientRef | None]:
    """The instance's study, its row locked (a correction by the cell, :mod:`.correction`, and
    this filing, one at a time): created if new, else its patient reconciled; and the active
    patient it is attached to, if any."""
    found = resolution.patient
    study = repository.study_state(session, indexed.study_uid)
    if study is None:
        created = repository.insert_if_absent(
            session,
            Study,
            {
                "study_uid": indexed.study_uid,
                "patient_id": found.id if found else None,
                "patient_status": RESOLVED if found else UNKNOWN,
                "patient_note": resolution.note,
                "source_patient_id": indexed.patient_id,
                "source_issuer": resolution.issuer,
                "patient_name": indexed.patient_name,
                "patient_birth_date": indexed.birth_date,
                "patient_sex": indexed.sex,
                "accession_number": indexed.accession_number,
                "accession_issuer": indexed.accession_issuer,
                "study_date": indexed.study_date,
                "study_description": indexed.study_description,
                "sending_aet": received.calling_aet,
                "created_at": now,
                "updated_at": now,
            },
        )
        study = repository.study_state(session, indexed.study_uid)
        assert study is not None
        if created is not None:
            return study, found
    # An earlier instance of the study created it: its patient now (merges followed), which
    # is the one this instance's identifier designates when it did not change.
    before = study.patient_id
    current = _current(session, before, found)
    named = (indexed.patient_id, resolution.issuer)
    # The cell's corrections matter only to an instance naming another identifier.
    away = (
        repository.corrected_away(session, study.id)
        if named != (study.source_patient_id, study.source_issuer)
        else frozenset()
    )
    if _reconcile(study, indexed, resolution, current, away):
        repository.update_study_patient(session, study, now)
    if study.patient_status != RESOLVED:
        return study, None
    return study, current if study.patient_id == before else found


def _series(session: Session, indexed: Indexed, study_id: int, now: datetime) -> tuple[int, int]:
    """The new series' id and its study's id (inserted unless another association did)."""
    repository.insert_if_absent(
        session,
        Series,
        {
            "series_uid": indexed.series_uid,
            "study_id": study_id,
            "modality": indexed.modality,
            "series_number": indexed.series_number,
            "series_description": indexed.series_description,
            "created_at": now,
        },
    )
    series = repository.series(session, indexed.series_uid)
    assert series is not None
    return series


def _current(
    session: Session, patient_id: int | None, found: PatientRef | None
) -> PatientRef | None:
    """The active patient ``patient_id`` now is: ``found`` when it is that patient (the
    identity server's resolution follows merges to an active patient), else looked up."""
    if patient_id is None:
        return None
    if found is not None and found.id == patient_id:
        return found
    return identity_service.current_patient(session, patient_id)


def _instance(
    session: Session,
    received: Received,
    indexed: Indexed,
    series_id: int,
    key: str,
    now: datetime,
) -> bool:
    """Insert the instance's row; ``False`` when the SOP instance is archived already with the
    same bytes (:class:`DuplicateInstance` with other bytes)."""
    values = {
        "sop_instance_uid": received.sop_instance_uid,
        "series_id": series_id,
        "sop_class_uid": received.sop_class_uid,
        "transfer_syntax_uid": received.transfer_syntax,
        "instance_number": indexed.instance_number,
        "size": len(received.dataset),
        "sha256": received.sha256,
        "blob_key": key,
        "sending_aet": received.calling_aet,
        "received_at": now,
    }
    if repository.insert_if_absent(session, Instance, values) is not None:
        return True
    found = repository.instance_content(session, received.sop_instance_uid)
    assert found is not None
    if found != (received.sha256, len(received.dataset)):
        raise DuplicateInstance(
            f"SOP instance {received.sop_instance_uid} is archived with other content"
        )
    return False


# --- audit ---------------------------------------------------------------------------------------


def audit_entry(
    received: Received,
    *,
    outcome: str = Outcome.SUCCESS,
    problem: str | None = None,
    filed: Filed | None = None,
) -> AuditEntry:
    """The audit record of one C-STORE request (category ``dicom``) or one instance of a
    STOW-RS request (category ``dicomweb``)."""
    detail: dict[str, object] = {
        "sop_instance_uid": received.sop_instance_uid,
        "sop_class_uid": received.sop_class_uid,
        "transfer_syntax": received.transfer_syntax,
        "size": len(received.dataset),
    }
    if filed is not None:
        detail.update(
            study_uid=filed.study.study_uid,
            patient_status=filed.study.patient_status,
        )
    return AuditEntry(
        category="dicom" if received.via == "C-STORE" else "dicomweb",
        interaction=received.via,
        action="C",
        outcome=outcome,
        outcome_desc=problem,
        agent_kind="client",
        agent_id=received.calling_aet[:128] or None,
        source_ip=received.address[:64] or None,
        patient_ref=f"Patient/{filed.patient.rri}" if filed and filed.patient else None,
        resource_type="ImagingStudy" if filed else None,
        entity_ref=f"ImagingStudy/{filed.study.study_uid}" if filed else None,
        detail=json.dumps(detail, separators=(",", ":")),
    )


def refusal_entry(calling_aet: str, address: str, reason: str) -> AuditEntry:
    """The audit record of a refused association."""
    return AuditEntry(
        category="dicom",
        interaction="A-ASSOCIATE",
        action="E",
        outcome=Outcome.MINOR_FAILURE,
        outcome_desc=reason,
        agent_kind="client",
        agent_id=calling_aet[:128] or None,
        source_ip=address[:64] or None,
    )
