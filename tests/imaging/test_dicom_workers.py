"""The DICOM listener of ``enrs serve`` in several processes (ENRS_DICOM_WORKERS) accepting on
one port: concurrent DCMTK storescu senders all succeed and each instance is indexed once, the
processes stop with ``enrs serve``, and one that dies stops the platform, saying so."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from enrs.imaging.models import Instance, Series, Study
from enrs.kit.db import Database
from tests.imaging.conftest import ct_dataset, write
from tests.support.live_server import LiveServer, enrs_command, free_port, live_server
from tests.support.waiting import wait_until


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = _parent(int(entry.name))
            except OSError:
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _holders(port: int, state: str) -> Counter[int]:
    """The processes holding sockets of 127.0.0.1:``port`` in ``state`` (0A: listening, 01:
    connected), each with how many."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == state:
            inodes.add(f"socket:[{fields[9]}]")
    holders: Counter[int] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        holders[int(entry.name)] += sum(link in inodes for link in links)
    return +holders


def _listening(port: int) -> set[int]:
    return set(_holders(port, "0A"))


def _started(port: int, workers: int) -> bool:
    """Whether ``workers`` processes listen, the same ones half a second later: a fork on its
    way to ``exec`` holds its parent's sockets for a moment, and is not one of them."""
    first = _listening(port)
    time.sleep(0.5)
    return len(first) == workers and _listening(port) == first


def _dcmtk(tool: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _storescu(port: int, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["storescu", "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port),
         *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@contextmanager
def _serving(tmp_path: Path, database_url: str, workers: int) -> Iterator[tuple[LiveServer, int]]:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    added = subprocess.run(
        enrs_command("imaging", "ae", "add", "MODALITY", "--host", "127.0.0.1", "--port", "104",
                     "--store"),
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    port = free_port()
    dicom = {
        "ENRS_DICOM_PORT": str(port),
        "ENRS_DICOM_AET": "ARCHIVE",
        "ENRS_DICOM_WORKERS": str(workers),
    }
    with live_server(data_dir=data_dir, database_url=database_url, extra_env=dicom) as server:
        # the listener's processes may start after the HTTP one answers
        assert wait_until(lambda: _started(port, workers), timeout=60), server.log()
        assert wait_until(lambda: _dcmtk("echoscu", port).returncode == 0), server.log()
        yield server, port


def test_four_senders_into_two_processes_each_instance_indexed_once(
    tmp_path: Path, database_url: str
) -> None:
    study, series = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
    common = write(ct_dataset(study_uid=study, series_uid=series, seed=99), tmp_path / "common.dcm")
    batches: list[list[Path]] = []
    for sender in range(4):
        folder = tmp_path / f"sender{sender}"
        folder.mkdir()
        own = [
            write(
                ct_dataset(study_uid=study, series_uid=series, seed=sender * 10 + i, size=64),
                folder / f"{i}.dcm",
            )
            for i in range(6)
        ]
        batches.append([common, *own])  # the same instance from every sender: filed once
    with _serving(tmp_path, database_url, workers=2) as (_server, port):
        assert len(_listening(port)) == 2
        senders = [_storescu(port, batch) for batch in batches]
        outputs = [sender.communicate(timeout=120) for sender in senders]
        assert [s.returncode for s in senders] == [0, 0, 0, 0], outputs
        assert not any("Error" in err or "Failed" in err for _, err in outputs), outputs
    db = Database(database_url)
    try:
        with db.transaction(write=False) as session:
            uids = list(session.scalars(select(Instance.sop_instance_uid)))
            assert session.scalar(select(func.count()).select_from(Study)) == 1
            assert session.scalar(select(func.count()).select_from(Series)) == 1
    finally:
        db.dispose()
    sent = {_sop_uid(path) for batch in batches for path in batch}
    assert len(uids) == len(set(uids)) == 25
    assert set(uids) == sent


def _sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_new_associations_go_to_the_least_busy_process(tmp_path: Path, database_url: str) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    with _serving(tmp_path, database_url, workers=2) as (_server, port):
        held = []
        try:
            for _ in range(4):  # one after the other: each process gets two
                assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVE")
                assert assoc.is_established
                held.append(assoc)
            counts = _holders(port, "01")
            assert sorted(counts.values()) == [2, 2] and set(counts) == _listening(port), counts
        finally:
            for assoc in held:
                assoc.release()


def test_the_listener_processes_stop_with_enrs_serve(tmp_path: Path, database_url: str) -> None:
    with _serving(tmp_path, database_url, workers=3) as (server, port):
        listening = _listening(port)
        assert len(listening) == 3
        tree = _descendants(server.process.pid)
        assert listening <= tree
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.log()
    assert wait_until(lambda: not any(_alive(pid) for pid in tree), timeout=30)
    refused = _dcmtk("echoscu", port)
    assert refused.returncode != 0


def test_a_listener_process_that_dies_stops_the_platform_and_says_so(
    tmp_path: Path, database_url: str
) -> None:
    with _serving(tmp_path, database_url, workers=2) as (server, port):
        tree = _descendants(server.process.pid)
        listening = _listening(port)
        child = next(pid for pid in listening if _parent(pid) in listening)  # leader's child
        os.kill(child, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 1, server.log()
        log = server.log()
        assert "enrs-dicom: process(es) enrs-dicom-1 (-9) stopped; stopping the group" in log, log
        assert "listener(s) dicom stopped; stopping the platform" in log, log
    assert wait_until(lambda: not any(_alive(pid) for pid in tree), timeout=30)
