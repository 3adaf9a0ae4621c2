"""Who may read a study of the imaging archive: the rule, in one place. WADO-RS (:mod:`.web`)
checks each study with :func:`readable_study`; a search (QIDO-RS) applies
:func:`visible_clause` to its query of ``imaging_study``. Both follow the document repository's
care-relationship rule (:mod:`enrs.documents.access`, its reader and its ``patient_access``).

1. **Admins.** A person with the role ``admin`` or ``identitovigilance`` (the regional cell)
   reads every study, those of an unknown patient or in conflict too (they reconcile them).
2. **Own studies.** A system client reads the studies it stored itself by STOW-RS (the study's
   sender is its client id), whatever the patient.
3. **Care relationship.** Any other reader (a professional, a facility's system client) reads a
   study only when its patient is resolved (``patient_status`` ``resolved``) and the reader has
   a care relationship with that patient (:func:`enrs.documents.access.patient_access`: a
   structure of theirs has the patient in care, a declared access or *bris de glace*, the care
   circle). A patient's opposition to all sharing leaves each reader only their own studies
   (rule 2).
4. A study whose patient is ``unknown`` or in ``conflict`` is read only under rules 1 and 2.
5. **Access code.** A browser session opened with a study's access code (:mod:`.share`) reads
   that study and nothing else, whatever the rules above say (the code's study is checked
   first; its session ends when the code expires or is revoked).

A study one may not read answers 403, as a document does (:mod:`enrs.documents.endpoints`), and
the refusal is audited with the patient when there is one; an unknown UID answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, false, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from enrs.documents.access import PatientAccess, Reader, patient_access, reader_of
from enrs.identity import service as identity_service
from enrs.identity.service import PatientRef
from enrs.imaging.models import RESOLVED, Study
from enrs.imaging.share_models import Share
from enrs.kit.errors import Forbidden
from enrs.kit.security.principal import Principal

ADMINS = frozenset({"admin", "identitovigilance"})
# The role and subject prefix of the principal of an access code's session (:mod:`.share`).
SHARE_ROLE = "imaging-share"
SHARE_SUBJECT = "imaging-share:"


def is_admin(principal: Principal) -> bool:
    """Rule 1: a person of the regional cell."""
    return principal.kind == "user" and bool(principal.roles & ADMINS)


@dataclass(frozen=True)
class StudyReader:
    """Who reads studies: the document repository's reader, whether an admin, and the sender
    name a system client's own STOW-RS studies carry."""

    reader: Reader
    admin: bool
    sender: str | None
    share_study: int | None = None  # an access code's session: the one study it reads

    @property
    def key(self) -> str:
        return self.reader.key


def share_of(principal: Principal) -> int | None:
    """The access code (its id) whose session ``principal`` is, if it is one."""
    if principal.kind != "user" or SHARE_ROLE not in principal.roles:
        return None
    if not principal.subject.startswith(SHARE_SUBJECT):
        return None
    return int(principal.subject.removeprefix(SHARE_SUBJECT))


def study_reader(session: Session, principal: Principal) -> StudyReader:
    share_id = share_of(principal)
    if share_id is not None:
        share = session.get(Share, share_id)
        # -1: no study (a code gone meanwhile reads nothing).
        study_id = share.study_id if share is not None else -1
        return StudyReader(reader_of(session, principal), False, None, study_id)
    sender = (principal.client_id or principal.subject) if principal.kind == "client" else None
    return StudyReader(reader_of(session, principal), is_admin(principal), sender)


class StudyForbidden(Forbidden):
    """A study the reader may not read (its patient, if any, named for the audit trail)."""

    def __init__(self, patient: PatientRef | None, message: str) -> None:
        super().__init__(message)
        self.patient = patient


@dataclass(frozen=True)
class Granted:
    """Why a study is read: its patient (``None`` when unknown or in conflict) and, for a
    care relationship, the access (an emergency one flags the audit record)."""

    patient: PatientRef | None
    access: PatientAccess | None


def patient_of(session: Session, study: Study) -> PatientRef | None:
    """The regional patient the study is now attached to (merges followed), if resolved."""
    if study.patient_status != RESOLVED or study.patient_id is None:
        return None
    return identity_service.current_patient(session, study.patient_id)


def _own(who: StudyReader, study: Study) -> bool:
    return who.sender is not None and study.sending_aet == who.sender


def readable_study(session: Session, who: StudyReader, study: Study) -> Granted:
    """The rule for one study: what lets ``who`` read it, else :class:`StudyForbidden`."""
    patient = patient_of(session, study)
    if who.share_study is not None:
        if study.id != who.share_study:
            raise StudyForbidden(patient, "an access code opens its own study only")
        return Granted(patient, None)
    if who.admin or _own(who, study):
        return Granted(patient, None)
    if patient is None:
        raise StudyForbidden(
            None, f"the patient of study {study.study_uid} is {study.patient_status}"
        )
    return Granted(patient, care_relationship(session, who, patient))


def care_relationship(session: Session, who: StudyReader, patient: PatientRef) -> PatientAccess:
    """Rule 3 for a patient's studies: the care relationship that lets ``who`` read them,
    else :class:`StudyForbidden` (the portal's list of a patient's studies asks it first)."""
    ids = identity_service.merged_patient_ids(session, patient.id)
    granted = patient_access(session, who.reader, ids)
    if not granted.shared:
        why = "opposes sharing" if granted.opposed_all else "has no care relationship with"
        raise StudyForbidden(patient, f"the patient {why} {who.key}")
    return granted


def own_clause(who: StudyReader) -> ColumnElement[bool]:
    """Rule 2 as SQL."""
    return Study.sending_aet == who.sender if who.sender is not None else false()


def visible_clause(
    session: Session, who: StudyReader, patient: PatientRef | None = None
) -> ColumnElement[bool]:
    """The rule as a clause on ``imaging_study`` for a search: every study for an admin;
    otherwise the reader's own studies and, when the search names ``patient``, that patient's
    studies if the reader has a care relationship with them (the patient's access is asked
    once, as the document searches do; a search that names no patient finds only the reader's
    own studies); an access code's session finds its study only."""
    if who.share_study is not None:
        return Study.id == who.share_study
    if who.admin:
        return true()
    own = own_clause(who)
    if patient is None:
        return own
    ids = identity_service.merged_patient_ids(session, patient.id)
    of_patient = and_(Study.patient_status == RESOLVED, Study.patient_id.in_(ids))
    if not patient_access(session, who.reader, ids).shared:
        return and_(of_patient, own)
    return of_patient
