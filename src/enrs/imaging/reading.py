"""Teleradiology and second reading: studies of the archive read at a distance by a group of
radiologists (an on-call night rota, the radiologists covering emergency sites without one),
and the mammography screening programme's double reading.

- A site asks for a reading of a study whose patient the archive resolved
  (:func:`request_reading`): to a reading group, ``teleradiology`` (one report) or
  ``screening`` (two independent readings), ``routine`` or ``urgent``, due by a time
  (:data:`DUE` after the request by default).
- Each radiologist of the group sees the group's worklist (:func:`worklist`): readings open to
  claim, those they claimed, the overdue ones first. They claim a reading, may release it,
  write and sign it (:func:`claim`, :func:`release`, :func:`sign`). Every change names the
  version the page showed (``Reading.version``): a reading changed in between (two
  radiologists claiming at once) is refused with :class:`ReadingChanged` (409), never
  overwritten. A signed reading (the reader's name, RPPS, time) never changes again.
- Screening: the first and second readings are independent. The same person never reads both
  (:class:`SameReader`, 403), and neither result is shown to anyone but its own reader until
  both are signed (:func:`shown`). If their assessments (BI-RADS-like, :data:`ASSESSMENTS`)
  differ, a third reading is opened (the discordance step: a third radiologist, who sees both,
  decides); if they agree, or once the third is signed, the request is done.
- When a request is done, its report (plain UTF-8 text: the study, the site, each signed
  reading) is filed in the document repository for the study's patient
  (:func:`enrs.documents.upload.file_upload`, type LOINC 18748-4 "CR d'imagerie médicale",
  authored by the last signer): the requesting site reads it through its care relationship,
  the care circle likewise (:mod:`enrs.documents.access`). The turnaround time is signature
  minus request (:func:`turnaround`). A site that registered its MLLP endpoint also gets the
  report as an ``ORU^R01`` (:mod:`.reading_oru`, from the event :data:`DONE_EVENT`).

Who reads: a professional (an account with an RPPS) who is a member of the request's group
(``enrs imaging reading group add NAME --member RPPS``); who asks: a professional of the
requesting site (one of the sites of their activities in the directory). Services only flush;
the caller commits and audits (the portal, :mod:`enrs.portal.reading`, audits each page and
change with the patient).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from enrs.documents.access import Reader
from enrs.documents.upload import Upload, file_upload
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.imaging import reading_repository as repository
from enrs.imaging.models import RESOLVED, Study
from enrs.imaging.reading_models import (
    CLAIMED,
    DISCORDANT,
    DONE,
    FIRST,
    OPEN,
    REPORT,
    SCREENING,
    SECOND,
    SIGNED,
    TELERADIOLOGY,
    THIRD,
    WAITING,
    Reading,
    ReadingGroup,
    ReadingMember,
    ReadingRequest,
)
from enrs.imaging.reading_oru import DONE_EVENT
from enrs.imaging.report_models import FILED, StudyDocument
from enrs.imaging.report_models import REPORT as REPORT_ROW
from enrs.kit.db import utcnow
from enrs.kit.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from enrs.kit.events import emit
from enrs.kit.storage.base import BlobStorage

KINDS = (TELERADIOLOGY, SCREENING)
PRIORITIES = ("routine", "urgent")
DUE = {"urgent": timedelta(hours=1), "routine": timedelta(hours=24)}
# The screening programme's assessment of a reading (ACR BI-RADS categories 0 to 5).
ASSESSMENTS = {
    "0": "ACR 0 — examens complémentaires nécessaires",
    "1": "ACR 1 — normal",
    "2": "ACR 2 — bénin",
    "3": "ACR 3 — probablement bénin",
    "4": "ACR 4 — suspect",
    "5": "ACR 5 — très évocateur de malignité",
}
REPORT_TYPE = "18748-4"  # JDV_J07: "CR d'imagerie médicale"
FACILITY_TYPE = "SA43"  # JDV_J02: "Secteur non défini"
PRACTICE_SETTING = "AMBULATOIRE"  # JDV_J04
MAX_CONCLUSION = 20_000
_RPPS = re.compile(r"^[0-9]{11}$")
_FINESS = re.compile(r"^[0-9][0-9AB][0-9]{7}$")


class ReadingChanged(Conflict):
    """The reading changed since the page showed it (another radiologist claimed it first)."""


class SameReader(Forbidden):
    """The same radiologist cannot read both screening readings (or decide their discord)."""


@dataclass(frozen=True)
class Filing:
    """Where a done request's report is filed: the repository's storage, the identity
    domains, the platform's OID root, the repository's size limit."""

    storage: BlobStorage
    config: IdentityConfig
    oid_root: str
    max_bytes: int
    zone: ZoneInfo


# --- groups ----------------------------------------------------------------------------------


def add_group(session: Session, name: str, members: list[str]) -> ReadingGroup:
    """Register the group ``name`` (or add to it) with the professionals ``members`` (RPPS).
    400 for a bad name or RPPS."""
    name = name.strip()
    if not name or len(name) > 64:
        raise BadRequest("a reading group's name: 1 to 64 characters")
    for rpps in members:
        if not _RPPS.match(rpps):
            raise BadRequest(f"{rpps!r} is not an RPPS number (11 digits)")
    found = repository.group(session, name)
    if found is None:
        found = ReadingGroup(name=name, created_at=utcnow())
        session.add(found)
        session.flush()
    known = set(repository.members(session, found.id))
    for rpps in dict.fromkeys(members):
        if rpps not in known:
            session.add(ReadingMember(group_id=found.id, rpps=rpps, created_at=utcnow()))
    session.flush()
    return found


def groups(session: Session) -> list[tuple[ReadingGroup, list[str]]]:
    """Every group with its members' RPPS."""
    return [(g, repository.members(session, g.id)) for g in repository.groups(session)]


def group_named(session: Session, name: str) -> ReadingGroup:
    found = repository.group(session, name.strip())
    if found is None:
        raise NotFound(f"no reading group {name.strip()!r}")
    return found


def is_member(session: Session, reader: Reader, group_id: int) -> bool:
    return reader.rpps is not None and group_id in repository.groups_of(session, reader.rpps)


def is_member_anywhere(session: Session, reader: Reader) -> bool:
    """Whether the professional reads for at least one group."""
    return reader.rpps is not None and bool(repository.groups_of(session, reader.rpps))


# --- requests --------------------------------------------------------------------------------


def _patient_of(session: Session, study: Study) -> PatientRef:
    if study.patient_status != RESOLVED or study.patient_id is None:
        raise Unprocessable(
            f"the study {study.study_uid} is not attached to a regional patient "
            f"({study.patient_status}): it cannot be sent for reading"
        )
    patient = identity_service.current_patient(session, study.patient_id)
    if patient is None:
        raise Unprocessable(f"the patient of the study {study.study_uid} is no longer current")
    return patient


def check_finess(finess: str) -> str:
    """``finess`` stripped, or 422 when it is not a FINESS number."""
    value = finess.strip()
    if not _FINESS.match(value):
        raise Unprocessable(f"{finess!r} is not a FINESS number")
    return value


def request_reading(
    session: Session,
    requester: Reader,
    *,
    study_uid: str,
    group: str,
    kind: str,
    priority: str,
    finess: str,
    reason: str = "",
    due: datetime | None = None,
) -> tuple[ReadingRequest, PatientRef]:
    """Send the archived study ``study_uid`` for reading to ``group``, for the requesting site
    ``finess`` (a site of the requester's). 404 for an unknown study or group, 403 for a site
    not the requester's, 422 for a bad kind, priority or due time, or a study without a
    regional patient."""
    if kind not in KINDS:
        raise Unprocessable(f"kind {kind!r}: teleradiology or screening")
    if priority not in PRIORITIES:
        raise Unprocessable(f"priority {priority!r}: routine or urgent")
    check_finess(finess)
    if finess not in requester.structures:
        raise Forbidden(f"{requester.key} does not practise at the site {finess}")
    study = repository.study(session, study_uid.strip())
    if study is None:
        raise NotFound(f"no study {study_uid.strip()!r} in the archive")
    patient = _patient_of(session, study)
    found = group_named(session, group)
    now = utcnow()
    due_at = due if due is not None else now + DUE[priority]
    if due_at <= now:
        raise Unprocessable("the due time is in the past")
    if len(reason) > MAX_CONCLUSION:
        raise Unprocessable(f"the clinical question: at most {MAX_CONCLUSION} characters")
    asked = ReadingRequest(
        resource_id=str(uuid.uuid4()),
        study_id=study.id,
        patient_id=patient.id,
        requesting_finess=finess,
        requested_by=requester.key[:128],
        group_id=found.id,
        kind=kind,
        priority=priority,
        reason=reason.strip() or None,
        state=OPEN,
        requested_at=now,
        due_at=due_at,
        version=1,
    )
    session.add(asked)
    session.flush()
    for step in (FIRST, SECOND) if kind == SCREENING else (REPORT,):
        _open_reading(session, asked, step)
    session.flush()
    return asked, patient


def _open_reading(session: Session, asked: ReadingRequest, step: str) -> None:
    session.add(
        Reading(
            resource_id=str(uuid.uuid4()), request_id=asked.id, step=step, state=WAITING, version=1
        )
    )


def request_by_id(session: Session, resource_id: str) -> ReadingRequest:
    found = repository.request(session, resource_id)
    if found is None:
        raise NotFound(f"no reading request {resource_id!r}")
    return found


def patient_of(session: Session, asked: ReadingRequest) -> PatientRef:
    """The request's patient (followed through merges)."""
    patient = identity_service.current_patient(session, asked.patient_id)
    if patient is None:
        raise Unprocessable("the request's patient is no longer current")
    return patient


def study_of(session: Session, asked: ReadingRequest) -> Study:
    return repository.study_by_id(session, asked.study_id)


def group_of(session: Session, asked: ReadingRequest) -> ReadingGroup:
    return session.get_one(ReadingGroup, asked.group_id)


def may_follow(session: Session, reader: Reader, asked: ReadingRequest) -> bool:
    """A reader of the group, or a professional of the requesting site, sees the request."""
    return is_member(session, reader, asked.group_id) or (
        asked.requesting_finess in reader.structures
    )


def requests_of_my_sites(session: Session, reader: Reader) -> list[ReadingRequest]:
    """The requests of the sites where the professional practises (most recent first)."""
    if not reader.structures:
        return []
    return repository.requests_of_sites(session, reader.structures)


def turnaround(asked: ReadingRequest) -> timedelta | None:
    """Request to signed report (None while not done)."""
    if asked.completed_at is None:
        return None
    return asked.completed_at - asked.requested_at


def is_overdue(asked: ReadingRequest, now: datetime | None = None) -> bool:
    return asked.state != DONE and asked.due_at < (now or utcnow())


# --- the worklist ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    """A reading on a radiologist's worklist."""

    reading: Reading
    request: ReadingRequest
    mine: bool
    late: bool


def _excluded(reader: Reader, reading: Reading, siblings: list[Reading]) -> bool:
    """Screening: the other independent reading of one the reader holds, or the third of a
    request they read, is not theirs to take (the rule of :func:`claim` and the lists)."""
    if reading.step == REPORT or reading.reader_rpps == reader.rpps:
        return False
    return any(s.reader_rpps == reader.rpps for s in siblings if s.id != reading.id)


def may_claim(reader: Reader, reading: Reading, siblings: list[Reading]) -> bool:
    """Whether the reader may take this reading now (open, and not excluded)."""
    return reading.state == WAITING and not _excluded(reader, reading, siblings)


def worklist(session: Session, reader: Reader) -> list[WorkItem]:
    """The radiologist's worklist across their groups: the readings they claimed and those
    open to claim (not other people's, not the other half of a screening pair they read),
    overdue first, then by due time. 403 for someone in no reading group."""
    if reader.rpps is None:
        raise Forbidden("the reading worklist is for professionals with an RPPS")
    group_ids = repository.groups_of(session, reader.rpps)
    if not group_ids:
        raise Forbidden("you read for no reading group")
    rows = repository.open_work(session, group_ids)
    by_request: dict[int, list[Reading]] = {}
    for reading, asked in rows:
        by_request.setdefault(asked.id, []).append(reading)
    now = utcnow()
    items = []
    for reading, asked in rows:
        mine = reading.state == CLAIMED and reading.reader_rpps == reader.rpps
        if not mine and reading.state != WAITING:
            continue
        if _excluded(reader, reading, by_request[asked.id]):
            continue
        items.append(WorkItem(reading, asked, mine, is_overdue(asked, now)))
    return sorted(items, key=lambda i: (not i.late, i.request.due_at))


# --- what a page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A reading as one person may see it: ``hidden`` when its result is withheld (the other
    independent screening reading, while both are not signed)."""

    reading: Reading
    hidden: bool
    claimable: bool


def shown(session: Session, reader: Reader, asked: ReadingRequest) -> list[Shown]:
    """The request's readings as ``reader`` may see them (blinding of the double reading)."""
    readings = repository.readings(session, asked.id)
    pair = [r for r in readings if r.step in (FIRST, SECOND)]
    both_signed = len(pair) == 2 and all(r.state == SIGNED for r in pair)
    return [
        Shown(
            r,
            r.step in (FIRST, SECOND) and not both_signed and r.reader_rpps != reader.rpps,
            may_claim(reader, r, readings),
        )
        for r in readings
    ]


# --- claim, release, sign --------------------------------------------------------------------


def reading_by_id(session: Session, resource_id: str) -> Reading:
    found = repository.reading(session, resource_id)
    if found is None:
        raise NotFound(f"no reading {resource_id!r}")
    return found


def _reading_for(
    session: Session, reader: Reader, resource_id: str
) -> tuple[Reading, ReadingRequest]:
    """The reading and its request (locked), for a member of the request's group."""
    reading = repository.reading(session, resource_id)
    if reading is None:
        raise NotFound(f"no reading {resource_id!r}")
    asked = repository.request_by_id(session, reading.request_id, for_update=True)
    if not is_member(session, reader, asked.group_id):
        raise Forbidden("you do not read for this request's reading group")
    return reading, asked


def _changed(session: Session, reading: Reading, version: int, **values: object) -> Reading:
    if not repository.change_reading(session, reading.id, version, **values):
        raise ReadingChanged(
            "this reading was changed in the meantime (claimed by someone else?): nothing "
            "was done; reload the page"
        )
    session.refresh(reading)
    return reading


def claim(session: Session, reader: Reader, resource_id: str, version: int) -> Reading:
    """The radiologist takes the reading, as of ``version``. 409 when it changed since
    (another claimed it first) or is not open; 403 outside the group, or for the other half of
    a screening pair they read (:class:`SameReader`)."""
    reading, asked = _reading_for(session, reader, resource_id)
    if reading.state != WAITING:
        who = reading.reader_name or reading.reader_rpps or "?"
        raise ReadingChanged(f"this reading is already taken ({who})")
    if _excluded(reader, reading, repository.readings(session, asked.id)):
        raise SameReader(
            "you read another reading of this screening: its readings are made by "
            "different radiologists"
        )
    return _changed(
        session,
        reading,
        version,
        state=CLAIMED,
        reader_rpps=reader.rpps,
        reader_name=reader.name[:256],
        claimed_at=utcnow(),
    )


def release(session: Session, reader: Reader, resource_id: str, version: int) -> Reading:
    """Give back a reading one claimed and did not sign (its draft is dropped)."""
    reading, _ = _reading_for(session, reader, resource_id)
    if reading.state != CLAIMED or reading.reader_rpps != reader.rpps:
        raise Conflict("only a reading you claimed and did not sign is released")
    return _changed(
        session,
        reading,
        version,
        state=WAITING,
        reader_rpps=None,
        reader_name=None,
        claimed_at=None,
        conclusion=None,
        assessment=None,
    )


def sign(
    session: Session,
    reader: Reader,
    resource_id: str,
    version: int,
    *,
    conclusion: str,
    assessment: str | None,
    filing: Filing,
) -> tuple[Reading, ReadingRequest]:
    """Sign the reading one claimed: its conclusion (and, for screening, its assessment), the
    reader's name, RPPS and the time, never changed after. Then the request moves on: done
    (its report filed) for teleradiology, for a concordant screening pair or its third
    reading; a third reading opened for a discordant pair. 409 when the reading is not one's
    claimed one or changed since; 422 for an empty or too long conclusion, a missing or
    unknown assessment."""
    reading, asked = _reading_for(session, reader, resource_id)
    if reading.state == SIGNED:
        raise Conflict("this reading is signed: a signed report never changes")
    if reading.state != CLAIMED or reading.reader_rpps != reader.rpps:
        raise Conflict("claim the reading before signing it")
    text = conclusion.strip()
    if not text or len(text) > MAX_CONCLUSION:
        raise Unprocessable(f"the conclusion: 1 to {MAX_CONCLUSION} characters")
    if asked.kind == SCREENING:
        if assessment not in ASSESSMENTS:
            raise Unprocessable("a screening reading gives its assessment (ACR 0 to 5)")
    else:
        assessment = None
    now = utcnow()
    _changed(
        session,
        reading,
        version,
        state=SIGNED,
        signed_at=now,
        conclusion=text,
        assessment=assessment,
        reader_name=reader.name[:256],
    )
    _advance(session, reader, asked, reading, filing, now)
    return reading, asked


def _advance(
    session: Session,
    reader: Reader,
    asked: ReadingRequest,
    reading: Reading,
    filing: Filing,
    now: datetime,
) -> None:
    if asked.kind == SCREENING and reading.step in (FIRST, SECOND):
        pair = [r for r in repository.readings(session, asked.id) if r.step in (FIRST, SECOND)]
        if any(r.state != SIGNED for r in pair):
            return
        if pair[0].assessment != pair[1].assessment:
            asked.state, asked.version = DISCORDANT, asked.version + 1
            _open_reading(session, asked, THIRD)
            session.flush()
            return
    asked.state, asked.completed_at, asked.version = DONE, now, asked.version + 1
    session.flush()
    asked.document_id = _file_report(session, reader, asked, filing)
    # The study's report, as one from the RIS would be: its KOS manifest is then built
    # (:mod:`.manifest`), and the DMP feed sends both.
    session.add(
        StudyDocument(
            study_id=asked.study_id,
            kind=REPORT_ROW,
            sop_instance_uid=generate_uid(),  # the row's key: a written report has no instance
            status=FILED,
            document_id=asked.document_id,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    # The requesting site's ORU^R01 (:mod:`.reading_oru`), sent after the commit.
    emit(session, DONE_EVENT, {"patient_id": asked.patient_id, "request": asked.resource_id})


# --- the report ------------------------------------------------------------------------------

STEP_FR = {
    REPORT: "Lecture",
    FIRST: "Première lecture",
    SECOND: "Deuxième lecture",
    THIRD: "Troisième lecture (discordance)",
}


def report_text(session: Session, asked: ReadingRequest, zone: ZoneInfo) -> str:
    """The report filed for a done request (plain text, French)."""
    study = study_of(session, asked)

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%d/%m/%Y %H:%M") if moment else "—"

    kind = (
        "Dépistage organisé du cancer du sein — double lecture"
        if asked.kind == SCREENING
        else "Téléradiologie"
    )
    lines = [
        f"Compte rendu de lecture — {kind}",
        "",
        f"Examen : {study.study_description or 'sans description'}"
        f" du {study.study_date.strftime('%d/%m/%Y') if study.study_date else '—'}",
        f"UID de l'étude : {study.study_uid}",
        f"N° d'accession : {study.accession_number or '—'}",
        f"Site demandeur (FINESS) : {asked.requesting_finess}",
        f"Groupe de lecture : {group_of(session, asked).name}",
        f"Demandé le {when(asked.requested_at)}, priorité {asked.priority}",
    ]
    if asked.reason:
        lines += ["", f"Question clinique : {asked.reason}"]
    for reading in repository.readings(session, asked.id):
        if reading.state != SIGNED:
            continue
        lines += ["", f"{STEP_FR[reading.step]} :"]
        if reading.assessment is not None:
            lines.append(f"Classification : {ASSESSMENTS[reading.assessment]}")
        lines += [
            reading.conclusion or "",
            f"Signé par {reading.reader_name} (RPPS {reading.reader_rpps}) le "
            f"{when(reading.signed_at)}",
        ]
    taken = turnaround(asked)
    if taken is not None:
        minutes = int(taken.total_seconds() // 60)
        lines += ["", f"Délai de lecture : {minutes // 60} h {minutes % 60:02d} min"]
    return "\n".join(lines) + "\n"


def _file_report(session: Session, reader: Reader, asked: ReadingRequest, filing: Filing) -> str:
    """File the report in the patient's record; its DocumentReference id."""
    patient = patient_of(session, asked)
    study = study_of(session, asked)
    title = f"CR de lecture — {study.study_description or 'imagerie'}"[:256]
    content = report_text(session, asked, filing.zone).encode("utf-8")
    return file_upload(
        session,
        filing.storage,
        filing.config,
        reader,
        patient,
        Upload(
            content,
            "text/plain",
            REPORT_TYPE,
            title,
            asked.completed_at,
            FACILITY_TYPE,
            PRACTICE_SETTING,
        ),
        oid_root=filing.oid_root,
        max_bytes=filing.max_bytes,
    )
