"""The listener under faults: an association cut mid-transfer, concurrent associations into
one study; and the socket option that keeps one association fast."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select, text

from enrs.identity.config import IdentityConfig
from enrs.imaging import service
from enrs.imaging.dicom import Archive, DicomListener
from enrs.imaging.encoding import dataset_of
from enrs.imaging.filing import (
    DOES_NOT_MATCH_SOP_CLASS,
    SUCCESS,
    Caller,
    _blob_writers,
    _Group,
    _Waiting,
)
from enrs.imaging.models import Instance, Series, Study
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database, utcnow
from enrs.kit.storage import open_storage
from enrs.settings import Settings
from tests.conftest import BACKEND
from tests.imaging.conftest import Archived, ct_dataset, dataset_bytes, write


@contextlib.contextmanager
def cutting_proxy(port: int, after: int) -> Iterator[int]:
    """A TCP proxy to the listener that forwards ``after`` bytes of the first connection's
    client side, then drops both sides: an association lost mid-transfer."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def run() -> None:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", port))

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)

        threading.Thread(target=back, daemon=True).start()
        sent = 0
        with contextlib.suppress(OSError):
            while sent < after and (data := client.recv(min(65536, after - sent))):
                upstream.sendall(data)
                sent += len(data)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        done.wait(30)
        server.close()


def _count(archive: Archived, model: type) -> int:
    with archive.db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_association_cut_mid_transfer_stores_nothing(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    big = write(ct_dataset(size=512), tmp_path / "big.dcm")  # 512 KiB of pixels
    with cutting_proxy(archive.port, after=200_000) as port:
        cut = subprocess.run(
            ["storescu", "-aet", "MODALITY", "-aec", "ENRS", "127.0.0.1", str(port), str(big)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert cut.returncode != 0
    assert _count(archive, Instance) == 0 and _count(archive, Study) == 0
    assert list(archive.storage.iter_keys("imaging")) == []
    done = archive.storescu(big)  # the listener serves on, the same instance goes in whole
    assert done.returncode == 0, done.stderr
    assert _count(archive, Instance) == 1


def test_concurrent_associations_into_one_study(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    first = ct_dataset()
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    batches = [
        [
            write(
                ct_dataset(study_uid=study, series_uid=series, seed=10 * b + i),
                tmp_path / f"{b}-{i}.dcm",
            )
            for i in range(3)
        ]
        for b in range(4)
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda files: archive.storescu(*files), batches))
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert (_count(archive, Study), _count(archive, Series), _count(archive, Instance)) == (
        1,
        1,
        12,
    )


@pytest.mark.skipif(BACKEND != "postgresql", reason="SQLite writers wait for each other")
def test_a_study_series_and_instance_created_meanwhile_each_are_tried_again(
    archive: Archived, tmp_path: Path
) -> None:
    """On PostgreSQL, associations into one study (several listener processes, or several
    threads) may each find the study, the series, then the instance missing and insert it while
    another commits it: each is a unique violation. A trigger plays that other association once
    per table: the instance's filing meets three of them in a row, and still files it."""
    archive.register("MODALITY")
    with archive.db.engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION taken_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF nextval(TG_ARGV[0]::regclass) = 1 THEN RAISE unique_violation USING "
            "MESSAGE = TG_TABLE_NAME || ' row committed meanwhile by another association'; "
            "END IF; RETURN NEW; END $$"
        ))  # fmt: skip
        for table in ("imaging_study", "imaging_series", "imaging_instance"):
            conn.execute(text(f"CREATE SEQUENCE taken_{table}"))
            conn.execute(text(
                f"CREATE TRIGGER taken_once BEFORE INSERT ON {table} FOR EACH ROW "
                f"EXECUTE FUNCTION taken_once('taken_{table}')"
            ))  # fmt: skip
    done = archive.storescu(write(ct_dataset(), tmp_path / "ct.dcm"))
    assert "Received Store Response (Success)" in done.stderr, done.stderr
    with archive.db.engine.connect() as conn:
        tries = [
            conn.scalar(
                text("SELECT pg_sequence_last_value(CAST(:s AS regclass))"), {"s": f"taken_{table}"}
            )
            for table in ("imaging_study", "imaging_series", "imaging_instance")
        ]
    assert min(tries) >= 2, tries  # each table's first insert refused, a later one made
    assert (_count(archive, Study), _count(archive, Series), _count(archive, Instance)) == (1, 1, 1)
    assert len(list(archive.storage.iter_keys("imaging"))) == 1


def test_accepted_sockets_have_tcp_nodelay(archive: Archived) -> None:
    archive.register("MODALITY", store=False)
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", archive.port, ae_title="ENRS")
    assert assoc.is_established
    try:
        peer = assoc.dul.socket  # our end: find the listener's end by the peer address
        assert peer is not None and peer.socket is not None
        ours = peer.socket.getsockname()
        accepted = [
            a.dul.socket.socket
            for a in archive.listener.ae.active_associations
            if a.dul.socket is not None
            and a.dul.socket.socket is not None
            and a.dul.socket.socket.getpeername() == ours
        ]
        assert len(accepted) == 1
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert peer.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # not ours
    finally:
        assoc.release()


def test_a_registry_that_cannot_be_read_rejects_for_now(settings: Settings, tmp_path: Path) -> None:
    """The AE registry unreadable: the association is rejected as transient (the sender tries
    again later), not as an unknown AE."""
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated: no tables
    audit = AuditWriter(db)
    archive = Archive(db, open_storage(settings), audit, IdentityConfig.from_settings(settings))
    listener = DicomListener(archive, host="127.0.0.1", port=0, aet="ENRS")
    listener.start()
    try:
        echo = subprocess.run(
            ["echoscu", "-aet", "MODALITY", "-aec", "ENRS", "127.0.0.1", str(listener.port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        listener.stop()
        audit.close()
        db.dispose()
    assert echo.returncode != 0
    assert "Result: Rejected Transient, Source: Service Provider (Presentation Related)" in (
        echo.stderr
    )
    assert "Reason: Temporary Congestion" in echo.stderr


def test_a_storage_that_cannot_be_written_refuses_and_keeps_nothing(
    archive: Archived, tmp_path: Path
) -> None:
    archive.register("MODALITY")
    ct = write(ct_dataset(), tmp_path / "ct.dcm")
    root = Path(archive.storage.root)  # type: ignore[attr-defined]
    blocked = root / "imaging"  # a file where the blobs' folder must go: mkdir fails
    shutil.rmtree(blocked, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    blocked.write_bytes(b"")
    refused = archive.storescu(ct)
    assert "Received Store Response (Refused: OutOfResources)" in refused.stderr, refused.stderr
    assert _count(archive, Instance) == 0 and _count(archive, Study) == 0
    blocked.unlink()
    done = archive.storescu(ct)  # the disk is back: the same instance goes in
    assert "Received Store Response (Success)" in done.stderr, done.stderr
    assert _count(archive, Instance) == 1


def _failing_inserts(db: Database, on: bool, table: str = "imaging_instance") -> None:
    """A database that refuses new rows of ``table`` (as a full disk would), or again accepts
    them."""
    with db.engine.begin() as conn:
        if db.engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS refuse_rows"))
            if on:
                conn.execute(text(
                    f"CREATE TRIGGER refuse_rows BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'no space left'); END"
                ))  # fmt: skip
            return
        conn.execute(text(f"DROP TRIGGER IF EXISTS refuse_rows ON {table}"))
        if on:
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION refuse_rows() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no space left'; END $$"
            ))  # fmt: skip
            conn.execute(text(
                f"CREATE TRIGGER refuse_rows BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_rows()"
            ))  # fmt: skip


def test_an_index_that_cannot_be_written_keeps_no_blob(archive: Archived, tmp_path: Path) -> None:
    archive.register("MODALITY")
    ct = write(ct_dataset(size=512), tmp_path / "ct.dcm")
    _failing_inserts(archive.db, True)
    try:
        refused = archive.storescu(ct)
    finally:
        _failing_inserts(archive.db, False)
    assert "Received Store Response (Success)" not in refused.stderr, refused.stderr
    assert _count(archive, Instance) == 0 and _count(archive, Study) == 0
    assert list(archive.storage.iter_keys("imaging")) == []  # the blob written meanwhile: gone
    done = archive.storescu(ct)
    assert "Received Store Response (Success)" in done.stderr, done.stderr
    assert _count(archive, Instance) == 1
    assert len(list(archive.storage.iter_keys("imaging"))) == 1


class _SlowDisk:
    """The archive's real storage behind a disk that holds each write until told to go on."""

    def __init__(self, storage: Any) -> None:
        self.storage, self.writing, self.go = storage, threading.Event(), threading.Event()

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self.writing.set()
        assert self.go.wait(30)
        return self.storage.put(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def test_no_instance_is_indexed_before_its_blob_is_written(
    archive: Archived, tmp_path: Path
) -> None:
    archive.register("MODALITY")
    ct = write(ct_dataset(), tmp_path / "ct.dcm")
    filing = archive.listener.archive
    slow = _SlowDisk(filing.storage)
    filing.storage = slow  # type: ignore[assignment]
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(archive.storescu, ct)
        assert slow.writing.wait(30)
        time.sleep(0.5)  # the index is checked and written meanwhile, not committed
        assert _count(archive, Instance) == 0 and _count(archive, Study) == 0
        slow.go.set()
        done = sending.result(60)
    assert "Received Store Response (Success)" in done.stderr, done.stderr
    assert _count(archive, Instance) == 1
    with archive.db.transaction(write=False) as session:
        key = session.scalar(select(Instance.blob_key))
    assert key is not None and dataset_of(archive.storage.get(key)) == dataset_bytes(ct)


class _HeldDisk(_SlowDisk):
    """A disk that holds writes until ``count`` of them are waiting."""

    def __init__(self, storage: Any, count: int) -> None:
        super().__init__(storage)
        self.count, self.waiting, self.mutex = count, 0, threading.Lock()

    def put(self, *args: Any, **kwargs: Any) -> Any:
        with self.mutex:
            self.waiting += 1
            if self.waiting >= self.count:
                self.writing.set()
        assert self.go.wait(30)
        return self.storage.put(*args, **kwargs)


def test_an_instance_refused_in_a_group_leaves_the_others_filed(
    archive: Archived, tmp_path: Path
) -> None:
    """Concurrent associations' instances are filed together (one transaction); one refused
    among them is undone alone: its new study is not kept, the others are stored."""
    archive.register("MODALITY")
    first = ct_dataset()
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    assert "(Success)" in archive.storescu(write(first, tmp_path / "first.dcm")).stderr
    valid = [
        write(ct_dataset(study_uid=study, series_uid=series, seed=i), tmp_path / f"{i}.dcm")
        for i in range(2, 5)
    ]
    # a new study naming the series of another: refused after its study row was written
    astray = write(ct_dataset(series_uid=series, seed=9), tmp_path / "astray.dcm")
    filing = archive.listener.archive
    held = _HeldDisk(filing.storage, count=4)
    filing.storage = held  # type: ignore[assignment]
    with ThreadPoolExecutor(4) as pool:
        sending = [pool.submit(archive.storescu, f) for f in [*valid, astray]]
        assert held.writing.wait(30)  # the four wait on the disk: they are filed as one group
        time.sleep(0.3)
        held.go.set()
        results = [s.result(60) for s in sending]
    for done in results[:3]:
        assert "Received Store Response (Success)" in done.stderr, done.stderr
    assert "Received Store Response (Error: DataSetDoesNotMatchSOPClass)" in results[3].stderr, (
        results[3].stderr
    )
    assert (_count(archive, Study), _count(archive, Series), _count(archive, Instance)) == (1, 1, 4)
    assert len(list(archive.storage.iter_keys("imaging"))) == 4  # the refused one's blob: gone


def test_a_group_whose_commit_fails_keeps_nothing(archive: Archived, tmp_path: Path) -> None:
    """The audit trail refuses the group's records at commit: every instance of the group is
    refused, none indexed, their blobs deleted; the listener serves on."""
    archive.register("MODALITY")
    study = ct_dataset()
    files = [
        write(ct_dataset(study_uid=study.StudyInstanceUID, seed=i), tmp_path / f"{i}.dcm")
        for i in range(3)
    ]
    filing = archive.listener.archive
    held = _HeldDisk(filing.storage, count=3)
    filing.storage = held  # type: ignore[assignment]
    _failing_inserts(archive.db, True, table="audit_record")
    try:
        with ThreadPoolExecutor(3) as pool:
            sending = [pool.submit(archive.storescu, f) for f in files]
            assert held.writing.wait(30)
            time.sleep(0.3)
            held.go.set()
            results = [s.result(60) for s in sending]
    finally:
        _failing_inserts(archive.db, False, table="audit_record")
    for refused in results:
        assert "Received Store Response (Refused: OutOfResources)" in refused.stderr, refused.stderr
    assert _count(archive, Instance) == 0 and _count(archive, Study) == 0
    assert list(archive.storage.iter_keys("imaging")) == []
    again = archive.storescu(*files)
    assert again.stderr.count("Received Store Response (Success)") == 3, again.stderr
    assert _count(archive, Instance) == 3


def test_the_first_instance_of_a_group_refused_leaves_nothing_to_the_next(
    archive: Archived, tmp_path: Path
) -> None:
    """The first instance of a group transaction is filed without a savepoint: refused after
    it wrote rows (a new study naming another study's series), the transaction is rolled
    back, and the instance filed next in the group commits its own rows only."""
    archive.register("MODALITY")
    first = ct_dataset()
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    assert "(Success)" in archive.storescu(write(first, tmp_path / "first.dcm")).stderr
    filing = archive.listener.archive
    caller = Caller("MODALITY", "127.0.0.1", may_store=True, authority=None)

    def waiting(ds: Any, name: str) -> _Waiting:
        received = service.Received(
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=ExplicitVRLittleEndian,
            dataset=dataset_bytes(write(ds, tmp_path / name)),
            calling_aet="MODALITY",
            address="127.0.0.1",
        )
        key = service.blob_key(utcnow())
        writing = _blob_writers().submit(filing._put, key, received, caller)
        return _Waiting(received, service.read_received(received), caller, key, writing)

    astray = waiting(ct_dataset(series_uid=series, seed=9), "astray.dcm")
    valid = waiting(ct_dataset(study_uid=study, series_uid=series, seed=2), "valid.dcm")
    group = _Group(filing, astray)
    group.index(astray)
    group.members.append(valid)
    group.index(valid)
    group.finish()
    group.close()
    assert astray.status[0] == DOES_NOT_MATCH_SOP_CLASS and valid.status == (SUCCESS, None)
    assert (_count(archive, Study), _count(archive, Series), _count(archive, Instance)) == (1, 1, 2)
    assert len(list(archive.storage.iter_keys("imaging"))) == 2  # the refused one's blob: gone
