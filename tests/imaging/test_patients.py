"""Patient reconciliation of stored studies: through the identity server, never a guess."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select

from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.matching.engine import matcher_for
from enrs.identity.updates import link_identities
from enrs.imaging.models import Study
from enrs.kit.audit.models import AuditRecord
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.support.identities import person

CHU = "1.2.250.1.71.4.2.2.1"


def _patient(archive: Archived, ipp: str) -> str:
    """A regional patient fed by the CHU (its domain registered, namespace CHU); its RRI."""
    with archive.db.transaction() as session:
        if identity_service.authority_by_namespace(session, "CHU") is None:
            domains.add(session, archive.config, CHU, namespace="CHU")
        fed = identity_service.feed(
            session, matcher_for(None), person(CHU, ipp), actor="test", config=archive.config
        )
        return fed.rri


def _study(archive: Archived, uid: str) -> Study:
    with archive.db.transaction(write=False) as session:
        found = session.scalars(select(Study).where(Study.study_uid == uid)).one()
        return found


def _store(archive: Archived, tmp_path: Path, ds: Dataset, aet: str = "MODALITY") -> None:
    done = archive.storescu(write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), aet=aet)
    assert done.returncode == 0, done.stderr


def test_an_unknown_patient_is_stored_and_flagged(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    _patient(archive, "IPP-77")
    cases = {
        "unregistered issuer": ct_dataset(patient_id="IPP-77", issuer="HOSP-X"),
        "unknown identifier": ct_dataset(patient_id="IPP-404", issuer="CHU"),
        "no issuer, none for the AE": ct_dataset(patient_id="IPP-77"),
        "no PatientID": ct_dataset(patient_id=None),
    }
    for ds in cases.values():
        _store(archive, tmp_path, ds)
    notes = {}
    for case, ds in cases.items():
        study = _study(archive, ds.StudyInstanceUID)
        assert (study.patient_status, study.patient_id) == ("unknown", None), case
        notes[case] = study.patient_note or ""
    assert "'HOSP-X' is neither an OID nor a registered domain" in notes["unregistered issuer"]
    assert "IPP-404" in notes["unknown identifier"]
    assert "none registered for the sending AE" in notes["no issuer, none for the AE"]
    assert "no PatientID" in notes["no PatientID"]
    with archive.db.transaction(write=False) as session:
        stores = session.scalars(select(AuditRecord).where(AuditRecord.interaction == "C-STORE"))
        assert [r.patient_ref for r in stores] == [None] * 4


def test_a_known_patient_is_attached(archive: Archived, tmp_path: Path) -> None:
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    archive.register("CHU-CT", authority=CHU)  # its PatientIDs are the CHU's IPPs
    by_namespace = ct_dataset(patient_id="IPP-77", issuer="CHU")
    by_oid = ct_dataset(patient_id="IPP-77", issuer=CHU)
    by_qualifiers = ct_dataset(patient_id="IPP-77")
    qualifier = Dataset()
    qualifier.UniversalEntityID, qualifier.UniversalEntityIDType = CHU, "ISO"
    by_qualifiers.IssuerOfPatientIDQualifiersSequence = [qualifier]
    by_ae = ct_dataset(patient_id="IPP-77")
    for ds in (by_namespace, by_oid, by_qualifiers):
        _store(archive, tmp_path, ds)
    _store(archive, tmp_path, by_ae, aet="CHU-CT")
    patient = identity_service.patient_by_rri
    with archive.db.transaction(write=False) as session:
        expected = patient(session, rri)
        assert expected is not None
        for ds in (by_namespace, by_oid, by_qualifiers, by_ae):
            study = session.scalars(
                select(Study).where(Study.study_uid == ds.StudyInstanceUID)
            ).one()
            assert (study.patient_status, study.patient_id) == ("resolved", expected.id)
            assert study.source_issuer == CHU and study.source_patient_id == "IPP-77"
        refs = session.scalars(
            select(AuditRecord.patient_ref).where(AuditRecord.interaction == "C-STORE")
        )
        assert list(refs) == [f"Patient/{rri}"] * 4


def test_instances_naming_another_patient_flag_the_study(archive: Archived, tmp_path: Path) -> None:
    _patient(archive, "IPP-77")
    _patient(archive, "IPP-78")
    archive.register("MODALITY")
    first = ct_dataset(patient_id="IPP-77", issuer="CHU")
    _store(archive, tmp_path, first)
    assert _study(archive, first.StudyInstanceUID).patient_status == "resolved"
    other = ct_dataset(patient_id="IPP-78", issuer="CHU", study_uid=first.StudyInstanceUID, seed=3)
    _store(archive, tmp_path, other)
    study = _study(archive, first.StudyInstanceUID)
    assert study.patient_status == "conflict"
    assert "'IPP-78'" in (study.patient_note or "") and "'IPP-77'" in (study.patient_note or "")


def test_a_study_of_an_unknown_patient_is_attached_once_known(
    archive: Archived, tmp_path: Path
) -> None:
    archive.register("MODALITY")
    with archive.db.transaction() as session:
        domains.add(session, archive.config, CHU, namespace="CHU")
    first = ct_dataset(patient_id="IPP-90", issuer="CHU")
    _store(archive, tmp_path, first)
    assert _study(archive, first.StudyInstanceUID).patient_status == "unknown"
    _patient(archive, "IPP-90")  # the CHU's ADT feed brings the patient afterwards
    _store(archive, tmp_path, ct_dataset(patient_id="IPP-90", issuer="CHU",
                                         study_uid=first.StudyInstanceUID, seed=4))  # fmt: skip
    study = _study(archive, first.StudyInstanceUID)
    assert study.patient_status == "resolved" and study.patient_id is not None


def test_a_study_follows_its_patient_through_a_link(archive: Archived, tmp_path: Path) -> None:
    """The CHU links its two identities (ADT^A24): the study's patient is retired into the
    other one; the study's next instance resolves to that one, which is the same person."""
    _patient(archive, "IPP-77")
    survivor = _patient(archive, "IPP-78")
    archive.register("MODALITY")
    first = ct_dataset(patient_id="IPP-77", issuer="CHU")
    _store(archive, tmp_path, first)
    with archive.db.transaction() as session:
        link_identities(
            session, authority=CHU, first_ipp="IPP-78", second_ipp="IPP-77", actor="test"
        )
    more = ct_dataset(patient_id="IPP-77", issuer="CHU", study_uid=first.StudyInstanceUID, seed=5)
    _store(archive, tmp_path, more)
    study = _study(archive, first.StudyInstanceUID)
    assert study.patient_status == "resolved", study.patient_note
    with archive.db.transaction(write=False) as session:
        assert study.patient_id is not None
        now = identity_service.current_patient(session, study.patient_id)
        assert now is not None and now.rri == survivor
