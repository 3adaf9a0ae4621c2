"""Storage Commitment reports kept and retried (:mod:`enrs.imaging.commitment`): the requester
releases at once and its own SCP is not listening yet; the report is sent on a new association
once it listens, by the same archive or by one started after a restart; past the retries it
is marked failed. The requester's SCP is pynetdicom's AE (DCMTK has no Storage Commitment)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select

from enrs.imaging import commitment, service
from enrs.imaging.dicom import DicomListener
from enrs.imaging.models import CommitmentReport
from enrs.kit.audit.models import AuditRecord
from enrs.settings import Settings
from tests.imaging.conftest import AET, Archived, ct_dataset, write
from tests.support.live_server import run_enrs

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
    return item


@contextmanager
def _listener(archive: Archived, policy: commitment.Policy) -> Iterator[DicomListener]:
    """Another listener of the same archive (database, storage) sending kept reports with
    ``policy``; the fixture's listener is stopped first (else it would send them too)."""
    archive.listener.stop()
    listener = DicomListener(
        archive.listener.archive, host="127.0.0.1", port=0, aet=AET, commitments=policy
    )
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


@contextmanager
def _modality(port: int) -> Iterator[list[tuple[int, Dataset]]]:
    """The requester's own SCP on ``port``, taking the reports (event type, data set)."""
    reports: list[tuple[int, Dataset]] = []

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.request.EventTypeID, event.event_information))  # type: ignore[union-attr]
        return 0x0000, None

    ae = AE(ae_title="MODALITY")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        yield reports
    finally:
        ae.shutdown()


def _request(port: int, refs: list[Dataset]) -> str:
    """The N-ACTION as MODALITY, released as soon as it is answered: its TransactionUID."""
    requester = AE(ae_title="MODALITY")
    requester.add_requested_context(StorageCommitmentPushModel)
    assoc = requester.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    info = Dataset()
    info.TransactionUID = generate_uid()
    info.ReferencedSOPSequence = refs
    status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)
    assoc.release()
    assert assoc.is_released  # answered, not left to a timeout nor aborted
    assert status.Status == 0
    return str(info.TransactionUID)


def _kept(archive: Archived) -> list[CommitmentReport]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(CommitmentReport).order_by(CommitmentReport.id)))


def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail("not reached in time")


def _attempts(archive: Archived) -> list[AuditRecord]:
    with archive.db.transaction(write=False) as session:
        found = select(AuditRecord).where(AuditRecord.interaction == "N-EVENT-REPORT")
        return list(session.scalars(found.order_by(AuditRecord.seq)))


def _stored(archive: Archived, tmp_path: Path) -> Dataset:
    ds = ct_dataset()
    done = archive.storescu(write(ds, tmp_path / "ct.dcm"))
    assert done.returncode == 0, done.stderr
    return ds


def test_the_report_is_sent_once_the_requester_listens(archive: Archived, tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there yet
    archive.register("MODALITY", port=port)
    ds = _stored(archive, tmp_path)
    unknown = generate_uid()
    refs = [_ref(CTImageStorage, ds.SOPInstanceUID), _ref(CTImageStorage, unknown)]
    with _listener(archive, commitment.Policy(retries=100, interval=0.2, longest=0.5)) as listener:
        transaction = _request(listener.port, refs)
        [row] = _until(lambda: [r for r in _kept(archive) if r.attempts >= 2])
        assert row.status == "pending" and row.transaction_uid == transaction
        assert "no association" in (row.last_error or "")
        with _modality(port) as reports:
            _until(lambda: reports)
            [sent] = _until(lambda: [r for r in _kept(archive) if r.status == "sent"])
    [(event_type, report)] = reports
    assert event_type == 2 and report.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [ds.SOPInstanceUID]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in report.FailedSOPSequence] == [
        (unknown, 0x0112)
    ]
    assert sent.last_error is None and sent.sent_at is not None
    audited = _attempts(archive)
    assert len(audited) == sent.attempts
    assert [r.outcome for r in audited] == ["4"] * (sent.attempts - 1) + ["0"]
    assert {json.loads(r.detail or "{}")["transaction_uid"] for r in audited} == {transaction}


def test_a_report_kept_survives_a_restart(archive: Archived, tmp_path: Path) -> None:
    port = _free_port()
    archive.register("MODALITY", port=port)
    ds = _stored(archive, tmp_path)
    policy = commitment.Policy(retries=100, interval=0.2, longest=0.5)
    with _listener(archive, policy) as listener:
        transaction = _request(listener.port, [_ref(CTImageStorage, ds.SOPInstanceUID)])
        _until(lambda: [r for r in _kept(archive) if r.attempts >= 1])
    [before] = _kept(archive)  # the archive is stopped: nothing sends it any more
    assert before.status == "pending"
    with _modality(port) as reports, _listener(archive, policy):  # the archive started again
        _until(lambda: reports)
        [after] = _until(lambda: [r for r in _kept(archive) if r.status == "sent"])
    [(event_type, report)] = reports
    assert event_type == 1 and report.TransactionUID == transaction
    assert after.attempts == before.attempts + 1


def test_a_report_is_failed_after_the_retries(
    archive: Archived, settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()  # never listens
    archive.register("MODALITY", port=port)
    ds = _stored(archive, tmp_path)
    with _listener(archive, commitment.Policy(retries=2, interval=0.05)) as listener:
        transaction = _request(listener.port, [_ref(CTImageStorage, ds.SOPInstanceUID)])
        [row] = _until(lambda: [r for r in _kept(archive) if r.status == "failed"])
    assert row.attempts == 3 and "no association" in (row.last_error or "")
    assert [r.outcome for r in _attempts(archive)] == ["4", "4", "8"]
    listed = run_enrs(settings, "imaging", "commitments")
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.startswith(f"{row.id}\tfailed\tMODALITY\t{transaction}\tevent 1\tattempts 3")
    unknown = run_enrs(settings, "imaging", "commitments", "--retry", str(row.id + 1))
    assert (
        unknown.returncode != 0 and f"no Storage Commitment report {row.id + 1}" in unknown.stderr
    )
    again = run_enrs(settings, "imaging", "commitments", "--retry", str(row.id))  # repaired
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        f"{row.id}\tpending\tMODALITY\t{transaction}\tevent 1\tattempts 0"
    )
    with _modality(port) as reports, _listener(archive, commitment.Policy(retries=2)):
        _until(lambda: reports)
        [sent] = _until(lambda: [r for r in _kept(archive) if r.status == "sent"])
    assert sent.attempts == 1 and reports[0][1].TransactionUID == transaction
    resent = run_enrs(settings, "imaging", "commitments", "--retry", str(row.id))
    assert resent.returncode != 0 and "was delivered" in resent.stderr


def test_an_unregistered_requester_is_retried_then_failed(
    archive: Archived, settings: Settings, tmp_path: Path
) -> None:
    """The AE removed from the registry after a first attempt: no address to send to; the
    next attempts say so, the report is given up like any other."""
    archive.register("MODALITY", port=_free_port())
    ds = _stored(archive, tmp_path)
    policy = commitment.Policy(retries=5, interval=0.2, longest=0.5)
    with _listener(archive, policy) as listener:
        _request(listener.port, [_ref(CTImageStorage, ds.SOPInstanceUID)])
        _until(lambda: [r for r in _kept(archive) if r.attempts >= 1])
        with archive.db.transaction() as session:
            service.remove_peer(session, "MODALITY")
        [row] = _until(lambda: [r for r in _kept(archive) if r.status == "failed"])
    assert row.attempts == 6 and row.last_error == "AE MODALITY is not registered"
    errors = [r.outcome_desc for r in _attempts(archive)]
    assert "no association" in (errors[0] or "") and errors[-1] == row.last_error
    assert run_enrs(settings, "imaging", "commitments", "--all").stdout.count("\tfailed\t") == 1


def test_the_back_off_doubles_up_to_its_longest() -> None:
    policy = commitment.Policy(retries=8, interval=30)
    assert [policy.delay(n) for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600
    ]  # fmt: skip
    assert commitment.Policy(interval=7200).delay(3) == 7200  # never shorter than the interval
