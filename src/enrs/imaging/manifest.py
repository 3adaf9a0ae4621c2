"""The KOS manifest of a study (IHE RAD XDS-I.b "Imaging Document Source"; ANS CI-SIS
DRIM-M): a Key Object Selection Document (SOP class 1.2.840.10008.5.1.4.1.1.88.59, PS3.3
A.35.4) titled (113030, DCM, "Manifest") whose Current Requested Procedure Evidence Sequence
lists every series and instance of the study, each series with the archive's AE title, the
Retrieve Location UID and its WADO-RS URL.

A study is **complete** when a report of it is filed (:mod:`.reports`) and no instance has
come for ``ENRS_IMAGING_MANIFEST_QUIET_MINUTES``; or when asked (``enrs imaging study manifest
UID``). The manifest is then stored in the archive as an instance of the study (WADO-RS and
C-GET serve it) and filed in the document repository (``application/dicom``, formatCode
1.2.840.10008.5.1.4.1.1.88.59, type 18748-4, the Study Instance UID and accession number in
the referenceIdList, the modalities in the eventCodeList), so the DMP feed sends it with the
report (its qualified INS and opposition rules apply). An instance received after a manifest
makes the next round build a new one that **replaces** the previous (RPLC).

The round (:func:`run_round`, the ``imaging-documents`` listener every minute, or ``enrs
imaging documents run``) first files the waiting reports of studies now resolved, then builds
the manifests due. One study per transaction, audited (category ``imaging``). The listener's
rounds weigh only the studies that may have changed (:class:`Watch`), not the whole archive.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from enrs.documents.terminology import Binding, Concept, Terminology
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.imaging import reports, service
from enrs.imaging import repository as archive
from enrs.imaging.encoding import dataset_of, parse, part10
from enrs.imaging.models import RESOLVED, Instance, Series, Study
from enrs.imaging.report_models import FILED, MANIFEST, REPORT, WAITING, StudyDocument
from enrs.imaging.repository import study_instances
from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, after_rollback, utcnow
from enrs.kit.errors import Conflict, EnrsError, NotFound
from enrs.kit.listeners import Listener, run_rounds
from enrs.kit.storage import open_storage
from enrs.kit.storage.base import BlobStorage
from enrs.settings import Settings

log = logging.getLogger(__name__)

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
MANIFEST_CONCEPT = ("113030", "DCM", "Manifest")
OURS = reports.REPORT_CLASSES | {KOS_CLASS}  # not images of the study
NO_IMAGE = "no image of the study in the archive yet: filed when one comes"
SR_ROOT = "1.2.840.10008.5.1.4.1.1.88."  # the SR family, KOS included: not images


@dataclass(frozen=True)
class Where:
    """Where the manifest says the instances are: the archive's AE title, its WADO-RS base,
    the Retrieve Location UID (the Imaging Document Source's OID)."""

    aet: str
    wado_base: str
    location_uid: str

    @classmethod
    def of(cls, settings: Settings) -> Where:
        return cls(settings.dicom_aet, f"{settings.base_url}/dicomweb", f"{settings.oid_root}.6")


# --- the KOS ----------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _issuer_item(oid: str) -> Dataset:
    item = Dataset()
    item.UniversalEntityID, item.UniversalEntityIDType = oid, "ISO"
    return item


def _patient(kos: Dataset, study: Study) -> None:
    kos.PatientName = study.patient_name or ""
    kos.PatientID = study.source_patient_id or ""
    if study.source_issuer:
        kos.IssuerOfPatientID = study.source_issuer
        if study.source_issuer.replace(".", "").isdigit():
            kos.IssuerOfPatientIDQualifiersSequence = Sequence([_issuer_item(study.source_issuer)])
    kos.PatientBirthDate = (
        study.patient_birth_date.strftime("%Y%m%d") if study.patient_birth_date else ""
    )
    kos.PatientSex = study.patient_sex or ""


def _evidence(
    study: Study, listed: list[tuple[Instance, str]], where: Where
) -> tuple[Sequence, Sequence]:
    """The Current Requested Procedure Evidence Sequence and the TID 2010 content items."""
    by_series: dict[str, list[Instance]] = {}
    for instance, series_uid in listed:
        by_series.setdefault(series_uid, []).append(instance)
    series_items, content = [], []
    for series_uid, instances in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.RetrieveAETitle = where.aet
        item.RetrieveLocationUID = where.location_uid
        item.RetrieveURL = f"{where.wado_base}/studies/{study.study_uid}/series/{series_uid}"
        refs = []
        for instance in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = instance.sop_class_uid
            ref.ReferencedSOPInstanceUID = instance.sop_instance_uid
            refs.append(ref)
            entry = Dataset()
            entry.RelationshipType = "CONTAINS"
            composite = instance.sop_class_uid.startswith(SR_ROOT) or (
                instance.sop_class_uid in reports.REPORT_CLASSES
            )
            entry.ValueType = "COMPOSITE" if composite else "IMAGE"
            own = Dataset()
            own.ReferencedSOPClassUID = instance.sop_class_uid
            own.ReferencedSOPInstanceUID = instance.sop_instance_uid
            entry.ReferencedSOPSequence = Sequence([own])
            content.append(entry)
        item.ReferencedSOPSequence = Sequence(refs)
        series_items.append(item)
    study_item = Dataset()
    study_item.StudyInstanceUID = study.study_uid
    study_item.ReferencedSeriesSequence = Sequence(series_items)
    return Sequence([study_item]), Sequence(content)


def build_kos(
    study: Study, listed: list[tuple[Instance, str]], where: Where, now: datetime
) -> Dataset:
    """The KOS manifest listing ``listed`` (instance, series UID) of ``study``."""
    kos = Dataset()
    kos.SOPClassUID = KOS_CLASS
    kos.SOPInstanceUID = generate_uid()
    kos.SpecificCharacterSet = "ISO_IR 192"
    _patient(kos, study)
    kos.StudyInstanceUID = study.study_uid
    kos.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
    kos.StudyTime = ""
    kos.ReferringPhysicianName = ""
    kos.StudyID = ""
    kos.AccessionNumber = study.accession_number or ""
    if study.accession_number and study.accession_issuer:
        kos.IssuerOfAccessionNumberSequence = Sequence([_issuer_item(study.accession_issuer)])
    kos.StudyDescription = study.study_description or ""
    kos.Modality = "KO"
    kos.SeriesInstanceUID = generate_uid()
    kos.SeriesNumber = 9999
    kos.ReferencedPerformedProcedureStepSequence = Sequence([])
    kos.Manufacturer = "ENRS"
    kos.InstanceNumber = 1
    kos.ContentDate, kos.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    evidence, content = _evidence(study, listed, where)
    kos.CurrentRequestedProcedureEvidenceSequence = evidence
    kos.ValueType = "CONTAINER"
    kos.ConceptNameCodeSequence = Sequence([_code(*MANIFEST_CONCEPT)])
    kos.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    kos.ContentTemplateSequence = Sequence([template])
    kos.ContentSequence = content
    return kos


def _encoded(kos: Dataset) -> bytes:
    """The data set in Explicit VR Little Endian, without file meta information."""
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, kos)
    return out.getvalue()


# --- the study's state -----------------------------------------------------------------------


def _manifests(session: Session, study: Study) -> list[StudyDocument]:
    found = select(StudyDocument).where(
        StudyDocument.study_id == study.id, StudyDocument.kind == MANIFEST
    )
    return list(session.scalars(found.order_by(StudyDocument.id)))


def _listed(session: Session, study: Study) -> list[tuple[Instance, str]]:
    """The study's instances a manifest lists: all but the archive's own manifests."""
    own = {m.sop_instance_uid for m in _manifests(session, study)}
    return [(i, s) for i, s in study_instances(session, study.id) if i.sop_instance_uid not in own]


def due_studies(session: Session, quiet: timedelta, now: datetime) -> list[str]:
    """The studies with a filed report whose last instance (the archive's manifests aside) is
    older than ``quiet``, and that hold more instances than their latest manifest lists."""
    return [uid for _, uid in _weigh(session, quiet, now, None)[0]]


def _weigh(
    session: Session, quiet: timedelta, now: datetime, among: set[int] | None
) -> tuple[list[tuple[int, str]], set[int]]:
    """``(due, not quiet)`` among the studies ``among`` (row ids; ``None``: every study with a
    filed report): those due (row id, UID) as :func:`due_studies` says, and those that would
    be but for the quiet time."""
    if among is not None and not among:
        return [], set()
    ours = select(StudyDocument.sop_instance_uid).where(StudyDocument.kind == MANIFEST)
    last = (
        select(
            Series.study_id,
            func.max(Instance.received_at).label("last"),
            func.count(Instance.id).label("count"),
        )
        .join(Instance, Instance.series_id == Series.id)
        .where(Instance.sop_instance_uid.not_in(ours))
    )
    if among is not None:
        last = last.where(Series.study_id.in_(sorted(among)))
    counted = last.group_by(Series.study_id).subquery()
    built = (
        select(StudyDocument.study_id, func.max(StudyDocument.instance_count).label("listed"))
        .where(StudyDocument.kind == MANIFEST)
        .group_by(StudyDocument.study_id)
        .subquery()
    )
    reported = select(StudyDocument.study_id).where(
        StudyDocument.kind == REPORT, StudyDocument.status == FILED
    )
    found = (
        select(Study.id, Study.study_uid, counted.c.last <= now - quiet)
        .join(counted, counted.c.study_id == Study.id)
        .outerjoin(built, built.c.study_id == Study.id)
        .where(
            Study.id.in_(reported),
            or_(built.c.listed.is_(None), built.c.listed < counted.c.count),
        )
        .order_by(Study.id)
    )
    due, not_quiet = [], set()
    for study_id, study_uid, is_quiet in session.execute(found):
        if is_quiet:
            due.append((study_id, study_uid))
        else:
            not_quiet.add(study_id)
    return due, not_quiet


@dataclass
class Watch:
    """What the listener's rounds have looked at, so that a round weighs only the studies that
    may have become due instead of counting every instance of the archive each minute: those
    that received an instance or a report (a reading signed in the platform: :mod:`.reading`)
    since the round before the last one (a round of overlap: on
    PostgreSQL ids are given before the commit, and transactions commit out of id order),
    those whose reports the round filed, those not quiet yet and those that failed. The first
    round weighs every study, as ``enrs imaging documents run`` does."""

    # The highest instance and study document ids at each of the last two rounds.
    marks: tuple[tuple[int, int], tuple[int, int]] | None = None
    pending: set[int] = field(default_factory=set)

    def studies(self, session: Session, filed: set[int]) -> set[int] | None:
        """The studies (row ids) this round weighs; ``None``: every one."""
        top = (
            session.scalar(select(func.max(Instance.id))) or 0,
            session.scalar(select(func.max(StudyDocument.id))) or 0,
        )
        if self.marks is None:
            self.marks = (top, top)
            return None
        (instances, documents), self.marks = self.marks[0], (self.marks[1], top)
        fresh = (
            select(Series.study_id)
            .join(Instance, Instance.series_id == Series.id)
            .where(Instance.id > instances)
            .distinct()
        )
        reported = select(StudyDocument.study_id).where(
            StudyDocument.id > documents, StudyDocument.kind == REPORT
        )
        found = set(session.scalars(fresh)) | set(session.scalars(reported))
        return found | filed | self.pending


# --- building and filing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    study_uid: str
    sop_instance_uid: str
    document_id: str
    instances: int
    replaces: str | None


def patient_of(session: Session, study: Study) -> PatientRef | None:
    if study.patient_status != RESOLVED or study.patient_id is None:
        return None
    return identity_service.current_patient(session, study.patient_id)


def _store(
    session: Session, storage: BlobStorage, config: IdentityConfig, kos: Dataset, aet: str
) -> bytes:
    """The KOS as an instance of its study in the archive (blob deleted on rollback); its
    DICOM file."""
    data = _encoded(kos)
    received = service.Received(
        KOS_CLASS, kos.SOPInstanceUID, ExplicitVRLittleEndian, data, aet, "", via="manifest"
    )
    indexed = service.read_received(received)
    key = service.blob_key(utcnow())
    content = part10(
        data, sop_class=KOS_CLASS, sop_instance=kos.SOPInstanceUID,
        transfer_syntax=ExplicitVRLittleEndian, source_aet=aet,
    )  # fmt: skip
    storage.put(key, content, "application/dicom")
    after_rollback(session, lambda: storage.delete(key))
    service.file_instance(session, config, received, indexed, peer_authority=None, key=key)
    return content


def build_manifest(
    session: Session,
    storage: BlobStorage,
    config: IdentityConfig,
    settings: Settings,
    study_uid: str,
    *,
    now: datetime | None = None,
) -> Built | None:
    """Build, archive and file the study's manifest (flush only); ``None`` when its current
    manifest lists every instance already. 404 unknown study; 409 a study whose patient is
    not resolved (the manifest is never filed to a guessed patient) or without instances."""
    study = archive.study_for_update(session, study_uid)
    if study is None:
        raise NotFound(f"no study {study_uid} in the archive")
    patient = patient_of(session, study)
    if patient is None:
        raise Conflict(f"study {study_uid}: its patient is {study.patient_status}, not resolved")
    listed = _listed(session, study)
    if not listed:
        raise Conflict(f"study {study_uid} has no instance to list")
    previous = _manifests(session, study)
    latest = previous[-1] if previous else None
    if latest is not None and latest.instance_count == len(listed):
        return None
    moment = now or utcnow()
    kos = build_kos(study, listed, Where.of(settings), moment)
    content = _store(session, storage, config, kos, settings.dicom_aet)
    replaces = latest.document_id if latest is not None and settings.imaging_finess else None
    doc = reports.ImagingDocument(
        kos.SOPInstanceUID,
        content,
        "application/dicom",
        _kos_format(),
        f"Manifeste d'imagerie — {study.study_description or 'examen'}"[:256],
        moment,
        reports.modalities_of(session, study),
        replaces,
    )
    document_id = reports.file_document(
        session, storage, config, study, patient, doc, finess=settings.imaging_finess
    )
    session.add(
        StudyDocument(
            study_id=study.id, kind=MANIFEST, sop_instance_uid=kos.SOPInstanceUID,
            status=FILED, document_id=document_id, instance_count=len(listed),
            created_at=moment, updated_at=moment,
        )
    )  # fmt: skip
    session.flush()
    return Built(study_uid, kos.SOPInstanceUID, document_id, len(listed), replaces)


def _kos_format() -> Concept:
    return Terminology.load().check(Binding.FORMAT, None, KOS_CLASS)


def manifest_entry(
    study: Study, patient: PatientRef | None, built: Built | None, interaction: str = "manifest"
) -> AuditEntry:
    """The audit record of a manifest built, or (``file-report``) of reports filed."""
    detail = {"study_uid": study.study_uid}
    if built is not None:
        detail.update(kos=built.sop_instance_uid, document=built.document_id)
    return AuditEntry(
        category="imaging",
        interaction=interaction,
        action="C",
        outcome=Outcome.SUCCESS,
        agent_kind="system",
        agent_id=reports.ARCHIVE_KEY,
        patient_ref=f"Patient/{patient.rri}" if patient else None,
        resource_type="ImagingStudy",
        entity_ref=f"ImagingStudy/{study.study_uid}",
        detail=json.dumps(detail, separators=(",", ":")),
    )


# --- the round -------------------------------------------------------------------------------


@dataclass
class Round:
    reports: int = 0
    manifests: int = 0
    failed: int = 0


def _waiting_studies(session: Session) -> list[int]:
    found = select(StudyDocument.study_id).where(
        StudyDocument.kind == REPORT, StudyDocument.status == WAITING
    )
    return sorted(set(session.scalars(found)))


def file_reports_of(
    session: Session, storage: BlobStorage, config: IdentityConfig, settings: Settings, study: Study
) -> int:
    """File the study's waiting reports if its patient is resolved (flush only); how many."""
    rows = list(
        session.scalars(
            select(StudyDocument).where(
                StudyDocument.study_id == study.id,
                StudyDocument.kind == REPORT,
                StudyDocument.status == WAITING,
            )
        )
    )
    patient = patient_of(session, study)
    images = [i for i, _ in study_instances(session, study.id) if i.sop_class_uid not in OURS]
    if patient is None or not images:
        for row in rows:
            row.note = reports.why_waiting(study) if patient is None else NO_IMAGE
        return 0
    loaded = []
    for row in rows:
        instance = archive.instance(session, row.sop_instance_uid)
        assert instance is not None
        data = dataset_of(storage.get(instance.blob_key))
        loaded.append((row, instance.sop_class_uid, parse(data, instance.transfer_syntax_uid)))
    count = reports.file_waiting(
        session, storage, config, study, patient, loaded, finess=settings.imaging_finess
    )
    append_entries(session.connection(), [manifest_entry(study, patient, None, "file-report")])
    return count


def _note_refusal(db: Database, study_id: int, message: str) -> None:
    """Flag the study's waiting reports with why the repository refused them (they stay
    waiting: the cell corrects the study or the sender resends)."""
    with db.transaction() as session:
        rows = session.scalars(
            select(StudyDocument).where(
                StudyDocument.study_id == study_id,
                StudyDocument.kind == REPORT,
                StudyDocument.status == WAITING,
            )
        )
        for row in rows:
            row.note, row.updated_at = (
                f"refused by the document repository: {message}"[:2000],
                utcnow(),
            )


def run_round(
    db: Database, storage: BlobStorage, settings: Settings, watch: Watch | None = None
) -> Round:
    """File the waiting reports of resolved studies, then build the manifests due (of the
    studies ``watch`` says may be, else of every study)."""
    config = IdentityConfig.from_settings(settings)
    done = Round()
    with db.transaction(write=False) as session:
        waiting = _waiting_studies(session)
    filed: set[int] = set()
    for study_id in waiting:
        try:
            with db.transaction() as session:
                study = session.get(Study, study_id)
                assert study is not None
                count = file_reports_of(session, storage, config, settings, study)
            done.reports += count
            if count:
                filed.add(study_id)
        except EnrsError as exc:  # the repository refuses it (a CDA of another patient…)
            log.warning("reports of study %s not filed: %s", study_id, exc.message)
            _note_refusal(db, study_id, exc.message)
            done.failed += 1
        except Exception:
            log.exception("reports of study %s not filed", study_id)
            done.failed += 1
    quiet = timedelta(minutes=settings.imaging_manifest_quiet_minutes)
    with db.transaction(write=False) as session:
        among = watch.studies(session, filed) if watch is not None else None
        due, pending = _weigh(session, quiet, utcnow(), among)
    for study_id, study_uid in due:
        try:
            with db.transaction() as session:
                built = build_manifest(session, storage, config, settings, study_uid)
                if built is not None:
                    study = archive.study(session, study_uid)
                    assert study is not None
                    entry = manifest_entry(study, patient_of(session, study), built)
                    append_entries(session.connection(), [entry])
                    done.manifests += 1
        except Exception:
            log.exception("manifest of study %s not built", study_uid)
            done.failed += 1
            pending.add(study_id)  # weighed again next round
    if watch is not None:
        watch.pending = pending
    return done


def describe(settings: Settings) -> str:
    return f"imaging reports and KOS manifests, quiet {settings.imaging_manifest_quiet_minutes} min"


def run(settings: Settings) -> None:
    """The ``imaging-documents`` listener of ``enrs serve``: a round every minute, by one
    process at a time (the database's ``imaging-documents`` lock)."""

    def prepare(db: Database, _stack: ExitStack) -> Callable[[], object]:
        storage, watch = open_storage(settings), Watch()
        return lambda: run_round(db, storage, settings, watch)

    run_rounds(settings, "imaging-documents", 60, prepare)


LISTENER = Listener("imaging-documents", describe, run)
