"""Imaging reports and the KOS manifest (issue 16, Archive): a CT study then its report stored
by DCMTK's storescu; the report filed in the document repository, the study's KOS manifest
(XDS-I.b) built, archived and filed; both sent by the DMP feed to the fake DMP with their
XDS-I metadata. Bad reports are refused whole; an unresolved patient's report waits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from enrs.documents import dmp_feed
from enrs.documents.dmp import XdsDmpAdapter
from enrs.documents.models import DocumentEntry
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.matching.engine import matcher_for
from enrs.imaging import correction, manifest
from enrs.imaging.models import Instance, Study
from enrs.imaging.report_models import StudyDocument
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import utcnow
from enrs.settings import Settings
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.support.fake_dmp import FakeDmp
from tests.support.identities import person
from tests.support.live_server import run_enrs

CHU = "1.2.250.1.71.4.2.2.1"
FINESS = "970000011"
INS = "2610497209123"
INS = f"{INS}{97 - int(INS) % 97:02d}"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
STUDY_UID_REF = "urn:ihe:iti:xds:2016:studyInstanceUID"


@pytest.fixture
def kos_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"imaging_finess": FINESS, "imaging_manifest_quiet_minutes": 0}
    )


@pytest.fixture
def dmp() -> Iterator[FakeDmp]:
    fake = FakeDmp().start()
    yield fake
    fake.stop()


def _patient(archive: Archived, ipp: str, *, ins: bool = True) -> str:
    with archive.db.transaction() as session:
        if identity_service.authority_by_namespace(session, "CHU") is None:
            domains.add(session, archive.config, CHU, namespace="CHU")
        extra = {"ins": INS, "status": "QUAL"} if ins else {}
        fed = identity_service.feed(
            session, matcher_for(None), person(CHU, ipp, **extra), actor="test",
            config=archive.config,
        )  # fmt: skip
        return fed.rri


def _report(study: Dataset, sop_class: str, *, patient_id: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in (
        "StudyInstanceUID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyDate",
        "StudyDescription",
        "IssuerOfPatientID",
    ):
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)  # fmt: skip
    ds.PatientID = patient_id or study.PatientID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 99, 1
    ds.ContentDate, ds.ContentTime = "20261205", "113000"
    return ds


def pdf_report(study: Dataset, content: bytes = PDF, **options: str) -> Dataset:
    ds = _report(study, "1.2.840.10008.5.1.4.1.1.104.1", **options)
    ds.Modality = "DOC"
    ds.DocumentTitle = "CR TDM THORAX"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.BurnedInAnnotation = "YES"
    ds.EncapsulatedDocument = content + (b"\x00" if len(content) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(content)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def sr_report(study: Dataset, *, content: bool = True) -> Dataset:
    ds = _report(study, "1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    ds.ContinuityOfContent = "SEPARATE"
    if content:
        finding = Dataset()
        finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
        finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
        finding.TextValue = "Pas de nodule suspect."
        ds.ContentSequence = [finding]
    return ds


def _store(archive: Archived, tmp_path: Path, *datasets: Dataset) -> None:
    files = [write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm") for ds in datasets]
    done = archive.storescu(*files)
    assert done.returncode == 0, done.stderr
    assert "Status: Success" in done.stderr or "Success" in done.stderr


def _entries(archive: Archived) -> list[DocumentEntry]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(DocumentEntry).order_by(DocumentEntry.id)))


def _rows(archive: Archived) -> list[StudyDocument]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(StudyDocument).order_by(StudyDocument.id)))


def _kos(archive: Archived, sop_uid: str) -> Dataset:
    with archive.db.transaction(write=False) as session:
        found = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one()
    return dcmread(BytesIO(archive.storage.get(found.blob_key)))


def _send(archive: Archived, dmp: FakeDmp) -> dmp_feed.Tally:
    with XdsDmpAdapter(dmp.url, timeout=5.0) as adapter:
        return dmp_feed.send_due(archive.db, archive.storage, adapter, source_id=f"{CHU}.4")


def _ct_study(uid: str) -> list[Dataset]:
    first, second = generate_uid(), generate_uid()
    return [
        ct_dataset(patient_id="IPP-16", issuer="CHU", study_uid=uid, series_uid=s, seed=n)
        for n, s in enumerate((first, first, second))
    ]


def test_a_report_and_the_kos_manifest_reach_the_dmp(
    archive: Archived, tmp_path: Path, kos_settings: Settings, dmp: FakeDmp
) -> None:
    archive.register("MODALITY")
    rri = _patient(archive, "IPP-16")
    uid = generate_uid()
    images = _ct_study(uid)
    _store(archive, tmp_path, *images)
    report = pdf_report(images[0])
    _store(archive, tmp_path, report)
    [row] = _rows(archive)
    assert (row.kind, row.status, row.sop_instance_uid) == (
        "report",
        "waiting",
        report.SOPInstanceUID,
    )

    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests, done.failed) == (1, 1, 0)
    pdf_entry, kos_entry = _entries(archive)
    assert (pdf_entry.mime_type, pdf_entry.type_code, pdf_entry.unique_id) == (
        "application/pdf", "18748-4", report.SOPInstanceUID,
    )  # fmt: skip
    assert archive.storage.get(pdf_entry.blob_key) == PDF
    assert (kos_entry.mime_type, kos_entry.format_code, kos_entry.type_code) == (
        "application/dicom", "1.2.840.10008.5.1.4.1.1.88.59", "18748-4",
    )  # fmt: skip
    with archive.db.transaction(write=False) as session:
        patient = identity_service.current_patient(session, pdf_entry.patient_id)
        assert patient is not None and patient.rri == rri and kos_entry.patient_id == patient.id

    kos = _kos(archive, kos_entry.unique_id)
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.file_meta.MediaStorageSOPClassUID == kos.SOPClassUID
    concept = kos.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == (
        "113030", "DCM", "Manifest",
    )  # fmt: skip
    assert (kos.StudyInstanceUID, kos.PatientID, kos.AccessionNumber) == (uid, "IPP-16", "ACC0001")
    [evidence] = kos.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == uid
    listed = {}
    for series in evidence.ReferencedSeriesSequence:
        assert series.RetrieveAETitle == "ENRS"
        assert series.RetrieveURL == (
            f"http://testserver/dicomweb/studies/{uid}/series/{series.SeriesInstanceUID}"
        )
        for ref in series.ReferencedSOPSequence:
            listed[ref.ReferencedSOPInstanceUID] = ref.ReferencedSOPClassUID
    expected = {ds.SOPInstanceUID: ds.SOPClassUID for ds in [*images, report]}
    assert listed == expected
    assert {item.ValueType for item in kos.ContentSequence} == {"IMAGE", "COMPOSITE"}

    tally = _send(archive, dmp)  # no qualified INS problem: the patient's INS is qualified
    assert tally.sent == 2, tally
    held = {d.unique_id: d for d in dmp.documents()}
    sent_pdf, sent_kos = held[report.SOPInstanceUID], held[kos.SOPInstanceUID]
    assert sent_pdf.mime_type == "application/pdf" and sent_pdf.content == PDF
    assert sent_kos.mime_type == "application/dicom"
    assert sent_kos.codes["formatCode"] == [
        ("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1")
    ]
    assert sent_kos.codes["typeCode"] == [("18748-4", "2.16.840.1.113883.6.1")]
    for sent in (sent_pdf, sent_kos):
        refs = sent.slots["urn:ihe:iti:xds:2013:referenceIdList"]
        assert f"{uid}^^^^{STUDY_UID_REF}" in refs
        assert f"ACC0001^^^&{CHU}&ISO^urn:ihe:iti:xds:2013:accession" in refs
        assert sent.events == [("CT", "1.2.840.10008.2.16.4")]
    assert dcmread(BytesIO(sent_kos.content)).SOPInstanceUID == kos.SOPInstanceUID

    # A late instance: the next round builds a new manifest that replaces the first (RPLC).
    late = ct_dataset(patient_id="IPP-16", issuer="CHU", study_uid=uid, seed=9)
    _store(archive, tmp_path, late)
    assert manifest.run_round(archive.db, archive.storage, kos_settings).manifests == 1
    assert manifest.run_round(archive.db, archive.storage, kos_settings).manifests == 0
    entries = _entries(archive)
    new_kos = entries[-1]
    assert entries[1].status == "superseded" and new_kos.replaces_id == entries[1].id
    assert late.SOPInstanceUID in {
        r.ReferencedSOPInstanceUID
        for s in _kos(archive, new_kos.unique_id)
        .CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    }
    assert _send(archive, dmp).sent == 1
    replacing = {d.unique_id: d for d in dmp.documents()}[new_kos.unique_id]
    assert replacing.replaces == sent_kos.entry_uuid
    with archive.db.transaction(write=False) as session:
        audited = session.scalars(
            select(AuditRecord.interaction).where(AuditRecord.category == "imaging")
        ).all()
    assert sorted(audited) == ["file-report", "manifest", "manifest"]


RIS = "1.2.250.1.71.4.2.7.1"  # the RIS that numbers the exams, not the IPP domain


def _numbered_by(ds: Dataset, entity: str, kind: str = "ISO") -> Dataset:
    issuer = Dataset()
    issuer.UniversalEntityID, issuer.UniversalEntityIDType = entity, kind
    ds.IssuerOfAccessionNumberSequence = [issuer]
    return ds


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [((RIS, "ISO"), RIS), (("ris.chu.example", "DNS"), CHU), (("RIS-CHU", "ISO"), CHU)],
    ids=["ris-oid", "not-iso", "not-an-oid"],
)
def test_the_accession_numbers_own_issuer_reaches_the_dmp(
    archive: Archived,
    tmp_path: Path,
    kos_settings: Settings,
    dmp: FakeDmp,
    issuer: tuple[str, str],
    expected: str,
) -> None:
    """DRIM-M's exam identifier is the accession number in the authority that gave it: the
    Issuer of Accession Number Sequence when the modality sends it as an OID (ISO), in the
    filed documents, the DMP's referenceIdList and the KOS; otherwise the PatientID's issuer
    (the facility's domain) stands for it, as before."""
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    uid = generate_uid()
    images = [_numbered_by(ds, *issuer) for ds in _ct_study(uid)]
    _store(archive, tmp_path, *images, pdf_report(images[0]))
    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests, done.failed) == (1, 1, 0)
    with archive.db.transaction(write=False) as session:
        study = session.scalars(select(Study).where(Study.study_uid == uid)).one()
        assert study.accession_issuer == (RIS if expected == RIS else None)
    kos = _kos(archive, _entries(archive)[1].unique_id)
    if expected == RIS:
        [given] = kos.IssuerOfAccessionNumberSequence
        assert (given.UniversalEntityID, given.UniversalEntityIDType) == (RIS, "ISO")
    else:
        assert "IssuerOfAccessionNumberSequence" not in kos
    assert _send(archive, dmp).sent == 2
    for sent in dmp.documents():
        refs = sent.slots["urn:ihe:iti:xds:2013:referenceIdList"]
        accession = [r for r in refs if r.endswith("^urn:ihe:iti:xds:2013:accession")]
        assert accession == [f"ACC0001^^^&{expected}&ISO^urn:ihe:iti:xds:2013:accession"]


def test_an_sr_report_is_filed_as_text(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    images = _ct_study(generate_uid())
    _store(archive, tmp_path, images[0], sr_report(images[0]))
    assert manifest.run_round(archive.db, archive.storage, kos_settings).reports == 1
    text_entry = _entries(archive)[0]
    assert text_entry.mime_type == "text/plain"
    text = archive.storage.get(text_entry.blob_key).decode("utf-8")
    assert text == "Diagnostic imaging report\nFinding : Pas de nodule suspect.\n"


def test_bad_reports_are_refused_whole_and_the_listener_keeps_serving(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    images = _ct_study(generate_uid())
    _store(archive, tmp_path, images[0])
    bad = {
        "empty SR": sr_report(images[0], content=False),
        "not a PDF": pdf_report(images[0], content=b"<html>not a pdf</html>"),
    }
    for name, ds in bad.items():
        done = archive.storescu(write(ds, tmp_path / f"{name}.dcm"))
        assert "Error: DataSetDoesNotMatchSOPClass" in done.stderr, (name, done.stderr)
    with archive.db.transaction(write=False) as session:
        uids = set(session.scalars(select(Instance.sop_instance_uid)))
    assert uids == {images[0].SOPInstanceUID}  # nothing kept of the refused reports
    assert _rows(archive) == [] and _entries(archive) == []
    with archive.db.transaction(write=False) as session:
        why = set(
            session.scalars(select(AuditRecord.outcome_desc).where(AuditRecord.outcome != "0"))
        )
    assert why == {"the SR has no content (0040,A730)", "the Encapsulated PDF does not hold a PDF"}
    assert archive.echoscu().returncode == 0
    _store(archive, tmp_path, pdf_report(images[0]))
    assert manifest.run_round(archive.db, archive.storage, kos_settings).reports == 1


def test_a_report_of_an_unknown_patient_waits_for_the_cell(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    uid = generate_uid()
    [image] = [ct_dataset(patient_id="IPP-404", issuer="CHU", study_uid=uid)]
    _patient(archive, "IPP-16")
    _store(archive, tmp_path, image, pdf_report(image))
    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests) == (0, 0)
    [row] = _rows(archive)
    assert row.status == "waiting" and "unknown" in (row.note or "")
    assert _entries(archive) == []  # never filed to a guessed patient
    with archive.db.transaction() as session:
        correction.correct(
            session, archive.config, uid, reason="IPP erroné", actor="test",
            patient=(CHU, "IPP-16"),
        )  # fmt: skip
    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests) == (1, 1)
    assert [e.mime_type for e in _entries(archive)] == ["application/pdf", "application/dicom"]


def test_a_study_is_complete_after_the_quiet_period_or_when_asked(
    archive: Archived, tmp_path: Path, settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    images = _ct_study(generate_uid())
    uid = images[0].StudyInstanceUID
    _store(archive, tmp_path, *images, pdf_report(images[0]))
    assert settings.imaging_manifest_quiet_minutes == 30
    done = manifest.run_round(archive.db, archive.storage, settings)
    assert (done.reports, done.manifests) == (1, 0)  # the study may still grow
    with archive.db.transaction(write=False) as session:
        later = utcnow() + timedelta(minutes=31)
        assert manifest.due_studies(session, timedelta(minutes=30), later) == [uid]
        assert manifest.due_studies(session, timedelta(minutes=30), utcnow()) == []

    asked = run_enrs(settings, "imaging", "study", "manifest", uid)
    assert asked.returncode == 0, asked.stderr
    assert "4 instance(s)" in asked.stdout and "DocumentReference/" in asked.stdout
    kos_entry = _entries(archive)[-1]
    assert kos_entry.mime_type == "application/dicom"
    assert f"http://testserver/dicomweb/studies/{uid}/series/" in str(
        _kos(archive, kos_entry.unique_id)
        .CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .RetrieveURL
    )
    with archive.db.transaction(write=False) as session:  # up to date: not due any more
        later = utcnow() + timedelta(minutes=31)
        assert manifest.due_studies(session, timedelta(minutes=30), later) == []
    again = run_enrs(settings, "imaging", "study", "manifest", uid)
    assert again.returncode == 0 and "manifest up to date" in again.stdout
    unknown = run_enrs(settings, "imaging", "study", "manifest", "1.2.3.4.5")
    assert unknown.returncode != 0 and "no study 1.2.3.4.5" in unknown.stderr
    assert len(_entries(archive)) == 2


def test_the_listeners_rounds_weigh_only_the_studies_that_changed(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    """The listener's rounds (a :class:`~enrs.imaging.manifest.Watch`) weigh the studies that
    received an instance or had a report filed since the round before, not every study of the
    archive: a manifest made stale behind their back (its count lowered by hand here) is left
    to a full round (``enrs imaging documents run``)."""
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    first = _ct_study(generate_uid())
    _store(archive, tmp_path, *first, pdf_report(first[0]))
    watch = manifest.Watch()
    done = manifest.run_round(archive.db, archive.storage, kos_settings, watch)
    assert (done.reports, done.manifests) == (1, 1)  # the first round weighs every study
    second = _ct_study(generate_uid())
    _store(archive, tmp_path, *second, pdf_report(second[0]))
    done = manifest.run_round(archive.db, archive.storage, kos_settings, watch)
    assert (done.reports, done.manifests) == (1, 1)
    late = ct_dataset(patient_id="IPP-16", issuer="CHU", study_uid=first[0].StudyInstanceUID)
    _store(archive, tmp_path, late)
    assert manifest.run_round(archive.db, archive.storage, kos_settings, watch).manifests == 1
    assert manifest.run_round(archive.db, archive.storage, kos_settings, watch).manifests == 0
    with archive.db.transaction() as session:
        [kos] = session.scalars(
            select(StudyDocument)
            .join(Study, Study.id == StudyDocument.study_id)
            .where(
                StudyDocument.kind == "manifest",
                Study.study_uid == second[0].StudyInstanceUID,
            )
        )
        kos.instance_count -= 1
    assert manifest.run_round(archive.db, archive.storage, kos_settings, watch).manifests == 0
    assert manifest.run_round(archive.db, archive.storage, kos_settings).manifests == 1
    assert manifest.run_round(archive.db, archive.storage, kos_settings, watch).manifests == 0


def test_a_report_of_a_study_without_images_waits_for_them(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    [image, *_] = _ct_study(generate_uid())
    _store(archive, tmp_path, pdf_report(image))  # the archive holds nothing of that study
    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests, done.failed) == (0, 0, 0)
    [row] = _rows(archive)
    assert (row.status, row.note) == ("waiting", manifest.NO_IMAGE)
    assert _entries(archive) == []
    _store(archive, tmp_path, image)
    done = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done.reports, done.manifests, done.failed) == (1, 1, 0)


def test_an_encapsulated_cda_report_is_filed_as_its_xml(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    [image, *_] = _ct_study(generate_uid())
    cda = (Path(__file__).parents[1] / "documents" / "data" / "n1_pdf.xml").read_bytes()
    report = pdf_report(image, content=cda)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.2"
    report.MIMETypeOfEncapsulatedDocument = "text/xml"
    broken = pdf_report(image, content=b"<ClinicalDocument>")
    broken.SOPClassUID = broken.file_meta.MediaStorageSOPClassUID = report.SOPClassUID
    refused = archive.storescu(write(broken, tmp_path / "broken.dcm"), options=("-R",))
    assert "Error: DataSetDoesNotMatchSOPClass" in refused.stderr
    _store(archive, tmp_path, image)
    done = archive.storescu(write(report, tmp_path / "cda.dcm"), options=("-R",))  # (CDA: -R)
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
    assert manifest.run_round(archive.db, archive.storage, kos_settings).reports == 1
    [entry, _kos_entry] = _entries(archive)
    assert entry.mime_type == "text/xml" and archive.storage.get(entry.blob_key) == cda
    assert entry.format_code == "urn:ihe:iti:xds-sd:pdf:2008"


def test_without_a_qualified_ins_the_report_and_manifest_wait_for_the_dmp(
    archive: Archived, tmp_path: Path, kos_settings: Settings, dmp: FakeDmp
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16", ins=False)
    images = _ct_study(generate_uid())
    _store(archive, tmp_path, images[0], pdf_report(images[0]))
    assert manifest.run_round(archive.db, archive.storage, kos_settings).manifests == 1
    assert len(_entries(archive)) == 2  # filed in the regional repository all the same
    assert _send(archive, dmp).held == 2
    assert dmp.calls == 0


def test_a_cda_of_another_patient_is_not_filed_and_flagged(
    archive: Archived, tmp_path: Path, kos_settings: Settings
) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-16")
    with archive.db.transaction() as session:  # the CDA's recordTarget: another patient
        domains.add(session, archive.config, "1.2.250.1.999.7.2", namespace="OTHER")
        other = person("1.2.250.1.999.7.2", "IPP-77001", birth_name="MARTIN", given_names=["Paul"])
        identity_service.feed(
            session, matcher_for(None), other, actor="test", config=archive.config
        )
    [image, *_] = _ct_study(generate_uid())
    cda = (Path(__file__).parents[1] / "documents" / "data" / "n1_pdf.xml").read_bytes()
    report = pdf_report(image, content=cda)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.2"
    _store(archive, tmp_path, image)
    done = archive.storescu(write(report, tmp_path / "cda.dcm"), options=("-R",))
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr
    done_round = manifest.run_round(archive.db, archive.storage, kos_settings)
    assert (done_round.reports, done_round.manifests, done_round.failed) == (0, 0, 1)
    [row] = _rows(archive)
    assert row.status == "waiting" and "another patient" in (row.note or "")
    assert _entries(archive) == []
    assert list(archive.storage.iter_keys("documents")) == []  # no content left behind
