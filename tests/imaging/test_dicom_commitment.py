"""Storage Commitment Push Model (PS3.4 J) against the real listener. DCMTK has no Storage
Commitment SCU: pynetdicom's AE is the requesting modality."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select

from enrs.imaging.models import Instance
from enrs.kit.audit.models import AuditRecord
from tests.imaging.conftest import AET, Archived, ct_dataset, write

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
    return item


def _commit(archive: Archived, aet: str, refs: list[Dataset]) -> tuple[int, list[Any]]:
    """Ask the archive to commit ``refs`` as ``aet``: the N-ACTION status and the
    N-EVENT-REPORTs received on the association (event type, data set)."""
    reports: list[Any] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information))  # type: ignore[union-attr]
        got.set()
        return 0x0000, None

    ae = AE(ae_title=aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1", archive.port, ae_title=AET, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    assert assoc.is_established
    info = Dataset()
    info.TransactionUID = generate_uid()
    info.ReferencedSOPSequence = refs
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        if status.Status == 0:
            got.wait(10)
    finally:
        assoc.release()
    return int(status.Status), reports


def test_commitment_of_stored_and_unknown_instances(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    ds = ct_dataset()
    done = archive.storescu(write(ds, tmp_path / "ct.dcm"))
    assert done.returncode == 0, done.stderr
    unknown = generate_uid()
    status, reports = _commit(archive, "MODALITY", [_ref(CTImageStorage, ds.SOPInstanceUID)])
    assert status == 0
    [(event_type, report)] = reports
    assert event_type == 1  # all committed
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert "FailedSOPSequence" not in report
    refs = [
        _ref(CTImageStorage, ds.SOPInstanceUID),
        _ref(CTImageStorage, unknown),
        _ref(MRImageStorage, ds.SOPInstanceUID),  # the wrong class
    ]
    status, [(event_type, report)] = _commit(archive, "MODALITY", refs)
    assert status == 0 and event_type == 2
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [
        (unknown, 0x0112),
        (ds.SOPInstanceUID, 0x0119),
    ]
    # an instance whose bytes are lost is not committed
    with archive.db.transaction(write=False) as session:
        key = session.scalars(select(Instance.blob_key)).one()
    archive.storage.delete(key)
    status, [(event_type, report)] = _commit(
        archive, "MODALITY", [_ref(CTImageStorage, ds.SOPInstanceUID)]
    )
    assert event_type == 2 and report.FailedSOPSequence[0].FailureReason == 0x0110
    with archive.db.transaction(write=False) as session:
        found = select(AuditRecord).where(AuditRecord.interaction == "N-ACTION")
        records = list(session.scalars(found.order_by(AuditRecord.seq)))
    assert [json.loads(r.detail or "{}")["failed"] for r in records] == [0, 2, 1]


def test_commitment_refused_without_the_store_right(archive: Archived) -> None:
    archive.register("VIEWER", store=False)
    status, reports = _commit(archive, "VIEWER", [_ref(CTImageStorage, generate_uid())])
    assert status == 0x0124 and reports == []
    status, reports = _commit(archive, "VIEWER", [])
    assert status == 0x0124


def test_commitment_without_references(archive: Archived) -> None:
    archive.register("MODALITY")
    status, reports = _commit(archive, "MODALITY", [])
    assert status == 0x0120 and reports == []


@pytest.mark.parametrize("wait", [0.0, 1.0], ids=["at-once", "after-the-report-left"])
def test_the_report_comes_on_a_new_association_after_a_release(
    archive: Archived, tmp_path: Path, wait: float
) -> None:
    """The modality releases once the N-ACTION is answered (at once, or after the archive
    sent the report on the association), and does not take DIMSE requests on it: the report
    comes on a new association to its registered port (the archive proposing the SCP role)
    within seconds, not after a DIMSE timeout (30 s) on the first one."""
    reports: list[Any] = []
    got = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information))  # type: ignore[union-attr]
        got.set()
        return 0x0000, None

    modality = AE(ae_title="MODALITY")
    modality.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = modality.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        archive.register("MODALITY", port=server.server_address[1])
        ds = ct_dataset()
        assert archive.storescu(write(ds, tmp_path / "ct.dcm")).returncode == 0
        requester = AE(ae_title="MODALITY")
        requester.add_requested_context(StorageCommitmentPushModel)
        requester.acse_timeout = 40  # longer than the archive's DIMSE timeout
        assoc = requester.associate("127.0.0.1", archive.port, ae_title=AET)
        # The requester's side of the association serves no request (the report included).
        assoc._serve_request = lambda msg, context_id: None  # type: ignore[method-assign]
        info = Dataset()
        info.TransactionUID = generate_uid()
        info.ReferencedSOPSequence = [_ref(CTImageStorage, ds.SOPInstanceUID)]
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
        assert status.Status == 0
        time.sleep(wait)
        released = time.monotonic()
        assoc.release()
        assert got.wait(15), "no report on a new association"
        assert time.monotonic() - released < 15
        if not wait:
            assert assoc.is_released  # released at once: answered as a release
    finally:
        modality.shutdown()
    [(event_type, report)] = reports
    assert event_type == 1 and report.TransactionUID == info.TransactionUID
