"""The identitovigilance cell's corrections of archived studies (issue 16, reconciliation).

A study the archive could not attach to a regional patient is flagged (``unknown``: its
PatientID designates nobody the identity server knows; ``conflict``: its instances disagree).
The cell lists the flagged studies (:func:`studies`) and corrects one (:func:`correct`): attach
it to a regional patient, given by an identifier of a registered authority (an IPP, an INS) or
by its regional identifier (RRI), and/or change its accession number; always with a reason.
A study already attached can be re-attached the same way (a wrong attachment found later).
Each correction is kept (:class:`~enrs.imaging.models.StudyCorrection`: before and after,
who, when, why; :func:`history`) and audited by the caller (:func:`audit_detail`).

What is corrected is the archive's index, never the stored bytes. The archive keeps each data
set exactly as received (its SHA-256 is in the index, and a later C-STORE of the same instance
is recognized by it); the study's ``source_patient_id``/``source_issuer`` become the identifier
it is filed under (the patient's identifier in the authority the cell chose, or the RRI in the
regional authority) and ``accession_number`` the corrected one. Retrieval (C-GET/C-MOVE,
WADO, not part of this module) is to patch PatientID (0010,0020), the Issuer of Patient ID and
its qualifiers, and the Accession Number on the way out from the index, so that what leaves
the archive carries the corrected values while the original stays as it came.

Later instances of a corrected study still carry the PatientID the modality sent; the
reconciliation of :mod:`.service` does not re-flag the study for naming an identifier the cell
has corrected away (:func:`~enrs.imaging.repository.corrected_away`), only for a third one.

Concurrency: the study's row is locked for the correction (a filing of one of its instances
waits, and so does another correction); a form shown earlier carries the study's
:func:`stamp`, and a correction whose stamp no longer matches (corrected meanwhile, or its
status changed by a new instance) is refused with :class:`~enrs.kit.errors.Conflict`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.imaging import repository
from enrs.imaging.models import CONFLICT, RESOLVED, UNKNOWN, Study, StudyCorrection
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, NotFound, Unprocessable

FLAGGED = (UNKNOWN, CONFLICT)
STATUSES = (RESOLVED, UNKNOWN, CONFLICT)
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_SH = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 SH: no backslash, no control
MAX_REASON = 2000


@dataclass(frozen=True)
class StudyRow:
    """A study as the cell reads it: ``patient`` is its regional patient now (merges
    followed), ``None`` when it has none."""

    study: Study
    patient: PatientRef | None


@dataclass(frozen=True)
class StudyPage:
    rows: list[StudyRow]
    total: int


@dataclass(frozen=True)
class Corrected:
    """What :func:`correct` did: the study after, the history row, the patients before and
    after (``None``: none)."""

    study: Study
    correction: StudyCorrection
    before: PatientRef | None
    after: PatientRef | None


def _patient_now(session: Session, patient_id: int | None) -> PatientRef | None:
    return identity_service.current_patient(session, patient_id) if patient_id else None


def studies(
    session: Session,
    *,
    status: str | None = None,
    flagged: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> StudyPage:
    """The studies of a status (``flagged``: ``unknown`` and ``conflict``), oldest first, a
    page of ``limit`` from ``offset``. 400 for an unknown status or a bad page."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    if flagged and status == RESOLVED:
        raise BadRequest("a resolved study is not flagged")
    if not 0 < limit <= 1000 or offset < 0:
        raise BadRequest("a page is 1 to 1000 studies from an offset of 0 or more")
    statuses = (status,) if status else FLAGGED if flagged else None
    found, total = repository.studies(session, statuses, limit=limit, offset=offset)
    return StudyPage([StudyRow(s, _patient_now(session, s.patient_id)) for s in found], total)


def study(session: Session, study_uid: str) -> StudyRow:
    """The study ``study_uid`` (404 when the archive has none)."""
    found = repository.study(session, study_uid.strip())
    if found is None:
        raise NotFound(f"no study {study_uid.strip()!r} in the archive")
    return StudyRow(found, _patient_now(session, found.patient_id))


def history(session: Session, study_uid: str) -> tuple[StudyRow, list[StudyCorrection]]:
    """The study and its corrections, oldest first (404 when the archive has no such study)."""
    row = study(session, study_uid)
    return row, repository.corrections(session, row.study.id)


def stamp(session: Session, found: Study) -> str:
    """What a correction form shows the study as: its last correction, status and patient.
    It changes with each correction and each change the archive makes to the attachment."""
    last = repository.last_correction_id(session, found.id)
    return f"{last}-{found.patient_status}-{found.patient_id or 0}"


def parse_patient(text: str) -> tuple[str, str]:
    """``AUTHORITY_OID:ID`` as (authority, identifier); 400 when it is not that."""
    authority, sep, value = text.strip().partition(":")
    if not sep or not _OID.match(authority) or not value.strip() or len(value.strip()) > 64:
        raise BadRequest(f"{text!r} is not AUTHORITY_OID:ID (an OID, a colon, the identifier)")
    return authority, value.strip()


def _target(
    session: Session,
    config: IdentityConfig,
    patient: tuple[str, str] | None,
    regional_id: str | None,
) -> tuple[PatientRef, str, str]:
    """The active regional patient designated, and the (PatientID, issuer) to file under."""
    if patient is not None:
        authority, value = patient
        # UnknownDomain (400), UnknownPatient (404), Conflict (an INS of two patients)
        return identity_service.resolve_patient(session, config, authority, value), value, authority
    rri = (regional_id or "").strip()
    found = identity_service.patient_by_rri(session, rri) if rri else None
    if found is None:
        raise NotFound(f"no active regional patient has the regional identifier {rri!r}")
    if found.rri != rri:
        raise Unprocessable(
            f"the regional patient {rri} was merged into {found.rri}: attach to {found.rri}"
        )
    return found, rri, config.rri_authority


def correct(
    session: Session,
    config: IdentityConfig,
    study_uid: str,
    *,
    reason: str,
    actor: str,
    patient: tuple[str, str] | None = None,
    regional_id: str | None = None,
    accession: str | None = None,
    expected: str | None = None,
) -> Corrected:
    """Attach the study to the regional patient ``patient`` (authority, identifier) or
    ``regional_id``, and/or set its accession number; flush only. ``expected``: the
    :func:`stamp` the caller saw. Errors: 400 (no reason, nothing to change, both patient forms,
    a bad accession number, an unknown authority), 404 (no such study, no such active
    patient), 409 (the study changed since ``expected``; an INS of two patients), 422 (a
    regional patient merged into another)."""
    reason = reason.strip()
    if not reason:
        raise BadRequest("a reason is required")
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
    if patient is not None and regional_id is not None:
        raise BadRequest("give the patient by one identifier, not two")
    if accession is not None:
        accession = accession.strip()
        if not _SH.match(accession):
            raise BadRequest(f"{accession!r} is not an accession number (1 to 16 characters)")
    found = repository.study_for_update(session, study_uid.strip())
    if found is None:
        raise NotFound(f"no study {study_uid.strip()!r} in the archive")
    if expected is not None and expected != stamp(session, found):
        raise Conflict(
            f"the study {found.study_uid} changed since it was shown (corrected, or a new "
            "instance arrived): look at it again"
        )
    before = _patient_now(session, found.patient_id)
    after, pid, issuer = before, found.source_patient_id, found.source_issuer
    if patient is not None or regional_id is not None:
        after, pid, issuer = _target(session, config, patient, regional_id)
        if before is not None and after.id == before.id and found.patient_status == RESOLVED:
            pid, issuer = found.source_patient_id, found.source_issuer  # filed so already
    new_accession = accession if accession is not None else found.accession_number
    new_status = RESOLVED if after is not None else found.patient_status
    now = (after.id if after else None, pid, issuer, new_accession, new_status)
    was = (found.patient_id, found.source_patient_id, found.source_issuer,
           found.accession_number, found.patient_status)  # fmt: skip
    if before is not None:
        was = (before.id, *was[1:])
    unchanged = now == was
    if unchanged:
        raise BadRequest("nothing to change: the study is filed so already")
    correction = StudyCorrection(
        study_id=found.id,
        corrected_at=utcnow(),
        actor=actor[:128],
        reason=reason,
        patient_before=found.patient_id,
        patient_after=after.id if after else None,
        source_patient_id_before=found.source_patient_id,
        source_patient_id_after=pid,
        source_issuer_before=found.source_issuer,
        source_issuer_after=issuer,
        accession_before=found.accession_number,
        accession_after=new_accession,
        status_before=found.patient_status,
        status_after=new_status,
    )
    session.add(correction)
    if after is not None:
        found.patient_id, found.patient_status, found.patient_note = after.id, RESOLVED, None
    found.source_patient_id, found.source_issuer = pid, issuer
    found.accession_number = new_accession
    found.updated_at = correction.corrected_at
    session.flush()
    return Corrected(found, correction, before, after)


def audit_detail(done: Corrected) -> str:
    """The audit record's detail of a correction (the patient after is its ``patient_ref``)."""
    c = done.correction
    return json.dumps(
        {
            "study_uid": done.study.study_uid,
            "correction": c.id,
            "patient_before": done.before.rri if done.before else None,
            "patient_after": done.after.rri if done.after else None,
            "patient_id": [c.source_patient_id_before, c.source_patient_id_after],
            "issuer": [c.source_issuer_before, c.source_issuer_after],
            "accession": [c.accession_before, c.accession_after],
            "status": [c.status_before, c.status_after],
            "reason": c.reason,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
