"""The archive's receiving side with DCMTK's echoscu and storescu against the real listener."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from enrs.imaging import service
from enrs.imaging.encoding import dataset_of, part10
from enrs.imaging.models import Instance, Series, Study
from enrs.kit.audit.models import AuditRecord
from tests.imaging.conftest import Archived, ct_dataset, dataset_bytes, write


def test_echo_of_a_registered_ae(archive: Archived) -> None:
    archive.register("MODALITY", store=False)
    done = archive.echoscu()
    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stderr


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_associations_leave_no_descriptor_open(archive: Archived) -> None:
    """Each accepted association has a pipe of its own (what wakes its DUL thread): closed
    when the association ends, whatever the number of associations."""
    archive.register("MODALITY", store=False)
    assert archive.echoscu().returncode == 0  # the listener's own descriptors opened
    before = _descriptors()
    for _ in range(20):
        done = archive.echoscu()
        assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10  # (an association's thread ends just after its release)
    while _descriptors() > before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _descriptors() <= before + 5  # 20 associations would have left 40 open


def test_a_ct_instance_is_stored_as_received_and_indexed(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    ds = ct_dataset()
    path = write(ds, tmp_path / "ct.dcm")
    done = archive.storescu(path)
    assert done.returncode == 0, done.stderr
    assert "Received Store Response (Success)" in done.stderr
    with archive.db.transaction(write=False) as session:
        instance = session.scalars(select(Instance)).one()
        series = session.get(Series, instance.series_id)
        assert series is not None
        study = session.get(Study, series.study_id)
        assert study is not None
        assert instance.sop_instance_uid == ds.SOPInstanceUID
        assert instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
        assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
        assert series.series_uid == ds.SeriesInstanceUID and series.modality == "CT"
        assert study.study_uid == ds.StudyInstanceUID
        assert study.accession_number == "ACC0001" and str(study.study_date) == "2026-12-05"
        assert study.source_patient_id == "IPP-0001" and study.sending_aet == "MODALITY"
        stored = archive.storage.get(instance.blob_key)
        audit = session.scalars(select(AuditRecord).where(AuditRecord.category == "dicom")).one()
    sent = dataset_bytes(path)
    assert dataset_of(stored) == sent  # the data set kept byte for byte
    assert instance.size == len(sent)
    assert stored[128:132] == b"DICM"
    assert audit.interaction == "C-STORE" and audit.outcome == "0"
    assert audit.agent_id == "MODALITY" and audit.entity_ref == f"ImagingStudy/{study.study_uid}"


def _instances(archive: Archived) -> list[Instance]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(Instance).order_by(Instance.id)))


def _dicom_audit(archive: Archived) -> list[AuditRecord]:
    with archive.db.transaction(write=False) as session:
        found = select(AuditRecord).where(AuditRecord.category == "dicom")
        return list(session.scalars(found.order_by(AuditRecord.seq)))


def test_an_unknown_ae_is_rejected_at_association(archive: Archived, tmp_path: Path) -> None:
    path = write(ct_dataset(), tmp_path / "ct.dcm")
    done = archive.storescu(path, aet="STRANGER")
    assert done.returncode != 0
    assert "Association Rejected" in done.stderr
    assert "Result: Rejected Permanent, Source: Service User" in done.stderr
    assert "Reason: Calling AE Title Not Recognized" in done.stderr
    echo = archive.echoscu(aet="STRANGER")
    assert echo.returncode != 0 and "Calling AE Title Not Recognized" in echo.stderr
    assert _instances(archive) == []
    [first, _] = _dicom_audit(archive)
    assert first.interaction == "A-ASSOCIATE" and first.agent_id == "STRANGER"
    assert first.outcome == "4" and "not registered" in (first.outcome_desc or "")


def test_a_known_ae_from_another_host_is_rejected(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY", host="192.0.2.10")  # TEST-NET-1: never this machine
    done = archive.echoscu()
    assert done.returncode != 0
    assert "Reason: Calling AE Title Not Recognized" in done.stderr
    [refusal] = _dicom_audit(archive)
    assert "not from its host 192.0.2.10" in (refusal.outcome_desc or "")


def test_an_association_calling_another_ae_title_is_rejected(archive: Archived) -> None:
    archive.register("MODALITY")
    done = subprocess.run(
        ["echoscu", "-v", "-aet", "MODALITY", "-aec", "OTHERPACS", "127.0.0.1", str(archive.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "Result: Rejected Permanent, Source: Service User" in done.stderr
    assert "Reason: Called AE Title Not Recognized" in done.stderr
    [refusal] = _dicom_audit(archive)
    assert refusal.interaction == "A-ASSOCIATE" and refusal.agent_id == "MODALITY"
    assert "called AE title 'OTHERPACS'" in (refusal.outcome_desc or "")
    assert archive.echoscu().returncode == 0  # the archive's own title: accepted


def test_an_ae_without_the_store_right_is_refused(archive: Archived, tmp_path: Path) -> None:
    archive.register("VIEWER", store=False)
    assert archive.echoscu(aet="VIEWER").returncode == 0
    path = write(ct_dataset(), tmp_path / "ct.dcm")
    done = archive.storescu(path, aet="VIEWER")
    assert done.returncode != 0
    assert "Association Accepted" in done.stderr
    assert "Received Store Response (Unknown Status: 0x124)" in done.stderr  # Not Authorized
    assert _instances(archive) == []
    [refused] = _dicom_audit(archive)
    assert refused.interaction == "C-STORE" and refused.outcome == "4"
    assert "not registered to store" in (refused.outcome_desc or "")
    assert list(archive.storage.iter_keys("imaging")) == []


def test_a_resent_instance_is_a_success_and_another_content_is_refused(
    archive: Archived, tmp_path: Path
) -> None:
    archive.register("MODALITY")
    original = ct_dataset(seed=1)
    first = write(original, tmp_path / "first.dcm")
    assert archive.storescu(first).returncode == 0
    again = archive.storescu(first)
    assert again.returncode == 0, again.stderr
    assert "Received Store Response (Success)" in again.stderr
    [kept] = _instances(archive)
    other = ct_dataset(
        seed=2,
        sop_uid=original.SOPInstanceUID,
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
    )
    changed = write(other, tmp_path / "changed.dcm")
    refused = archive.storescu(changed)
    assert refused.returncode != 0
    assert "Received Store Response (Unknown Status: 0x111)" in refused.stderr  # Duplicate
    assert _instances(archive) == [kept] or [i.id for i in _instances(archive)] == [kept.id]
    [instance] = _instances(archive)
    assert instance.sha256 == kept.sha256 and instance.blob_key == kept.blob_key
    assert dataset_of(archive.storage.get(kept.blob_key)) == dataset_bytes(first)
    assert list(archive.storage.iter_keys("imaging")) == [kept.blob_key]  # nothing else kept
    outcomes = [(r.outcome, r.outcome_desc) for r in _dicom_audit(archive)]
    assert outcomes[:2] == [("0", None), ("0", "archived already")]
    assert outcomes[2][0] == "4" and "other content" in (outcomes[2][1] or "")


def _send_raw(port: int, path: Path, aet: str = "MODALITY") -> int:
    """Send the file's data set as it is, without reading it (pynetdicom's SCU given a path,
    with STORE_SEND_CHUNKED_DATASET, sends the bytes after the file meta information raw):
    its C-STORE status."""
    from pynetdicom import AE, _config

    assert _config.STORE_SEND_CHUNKED_DATASET
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    scu = AE(ae_title=aet)
    scu.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = scu.associate("127.0.0.1", port, ae_title="ENRS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(status.Status)


def test_a_truncated_or_wrong_data_set_fails_and_the_listener_keeps_serving(
    archive: Archived, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pynetdicom._config.STORE_SEND_CHUNKED_DATASET", True)
    archive.register("MODALITY")
    whole = write(ct_dataset(), tmp_path / "whole.dcm").read_bytes()
    for cut in (1000, 3):  # inside the pixel data; inside the last element's header
        truncated = tmp_path / f"truncated-{cut}.dcm"
        truncated.write_bytes(whole[:-cut] if cut > 3 else whole + b"\xe0\x7f\x10")
        assert _send_raw(archive.port, truncated) == 0xC000  # Cannot understand
    # A file whose meta information (so the request) announces another instance.
    mismatch = tmp_path / "mismatch.dcm"
    mismatch.write_bytes(
        part10(
            dataset_of(whole),
            sop_class="1.2.840.10008.5.1.4.1.1.2",
            sop_instance="1.2.3.4",
            transfer_syntax="1.2.840.10008.1.2.1",
            source_aet="",
        )
    )
    assert _send_raw(archive.port, mismatch) == 0xA900
    no_study = ct_dataset()
    del no_study.StudyInstanceUID
    assert _send_raw(archive.port, write(no_study, tmp_path / "no-study.dcm")) == 0xA900
    assert _instances(archive) == []
    assert list(archive.storage.iter_keys("imaging")) == []
    good = write(ct_dataset(), tmp_path / "good.dcm")
    done = archive.storescu(good)
    assert done.returncode == 0, done.stderr
    assert len(_instances(archive)) == 1
    failures = [r for r in _dicom_audit(archive) if r.outcome != "0"]
    assert len(failures) == 4
    assert "runs past the end" in (failures[0].outcome_desc or "")
    assert "header cut" in (failures[1].outcome_desc or "")


def test_other_classes_and_transfer_syntaxes_are_kept_as_sent(
    archive: Archived, tmp_path: Path
) -> None:
    """An MR image in Implicit VR Little Endian, a mammography image compressed RLE Lossless:
    each stored in its own transfer syntax, its data set byte for byte."""
    import numpy as np
    from pydicom.uid import (
        DigitalMammographyXRayImageStorageForPresentation,
        ImplicitVRLittleEndian,
        MRImageStorage,
        RLELossless,
    )

    archive.register("MODALITY")
    mr = ct_dataset()
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.Modality = "MR"
    mr.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    mg = ct_dataset(size=256)
    mg.SOPClassUID = mg.file_meta.MediaStorageSOPClassUID = (
        DigitalMammographyXRayImageStorageForPresentation
    )
    mg.Modality = "MG"
    pixels = np.frombuffer(mg.PixelData, dtype=np.uint16).reshape(256, 256)
    mg.compress(RLELossless, pixels)
    files = [write(mr, tmp_path / "mr.dcm"), write(mg, tmp_path / "mg.dcm")]
    done = archive.storescu(files[0], options=("-xi",))  # implicit VR little endian only
    assert done.returncode == 0, done.stderr
    done = archive.storescu(files[1], options=("-xr",))  # RLE lossless first
    assert done.returncode == 0, done.stderr
    assert "Converting transfer syntax: RLE Lossless -> RLE Lossless" in done.stderr
    by_uid = {i.sop_instance_uid: i for i in _instances(archive)}
    for ds, path, syntax in ((mr, files[0], ImplicitVRLittleEndian), (mg, files[1], RLELossless)):
        instance = by_uid[ds.SOPInstanceUID]
        assert (instance.sop_class_uid, instance.transfer_syntax_uid) == (ds.SOPClassUID, syntax)
        assert dataset_of(archive.storage.get(instance.blob_key)) == dataset_bytes(path)


def test_an_association_on_a_descriptor_above_1024(archive: Archived, tmp_path: Path) -> None:
    """A busy process holds more than 1,024 files and sockets: an association whose socket gets
    a descriptor numbered above 1024 is served (``select()`` cannot watch it; the listener
    polls). The last CI lost every association late in the suite this way."""
    import os
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > 1200, f"this test needs more than 1,200 open files (ulimit -n is {soft})"
    archive.register("MODALITY")
    held: list[int] = []
    try:
        with open(tmp_path / "held", "wb") as file:
            while len(held) < 1100:
                held.append(os.dup(file.fileno()))
        assert max(held) >= 1024
        path = write(ct_dataset(), tmp_path / "ct.dcm")
        done = archive.storescu(path)
        assert done.returncode == 0 and "Success" in done.stderr + done.stdout, done.stderr
    finally:
        for fd in held:
            os.close(fd)


def test_an_instance_filed_meanwhile_is_a_duplicate_of_its_content(
    archive: Archived, tmp_path: Path
) -> None:
    """Filing an instance another association filed meanwhile (its row there already): the
    same bytes are archived already, kept under the first key; other bytes are refused; either
    way one row, the original's."""
    archive.register("MODALITY")
    ds = ct_dataset()
    path = write(ds, tmp_path / "first.dcm")
    assert archive.storescu(path).returncode == 0
    [first] = _instances(archive)

    def received(dataset: bytes) -> service.Received:
        return service.Received(
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=first.transfer_syntax_uid,
            dataset=dataset,
            calling_aet="MODALITY",
            address="127.0.0.1",
        )

    same = received(dataset_bytes(path))
    with archive.db.transaction() as session:
        filed = service.file_instance(
            session,
            archive.config,
            same,
            service.read_received(same),
            peer_authority=None,
            key="imaging/other.dcm",
        )
        assert filed is None  # archived already: nothing filed, the first row kept
    other_ds = ct_dataset(
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_uid=ds.SOPInstanceUID,
        seed=2,
    )
    other = received(dataset_bytes(write(other_ds, tmp_path / "other.dcm")))
    with pytest.raises(service.DuplicateInstance), archive.db.transaction() as session:
        service.file_instance(
            session,
            archive.config,
            other,
            service.read_received(other),
            peer_authority=None,
            key="imaging/another.dcm",
        )
    assert [(i.id, i.blob_key, i.sha256) for i in _instances(archive)] == [
        (first.id, first.blob_key, first.sha256)
    ]
