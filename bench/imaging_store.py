"""C-STORE ingest into the imaging archive: issue 16's figures, next to Debian's Orthanc receiving
the same load in the same run.

    .venv/bin/python -m bench.imaging_store [--ct 200] [--mg 10] [--associations 1,4]
        [--postgres] [--dicom-workers 1] [--no-orthanc] [--json PATH]

Synthetic instances made with pydicom (no patient's data): ``--ct`` CT-like images of 512 × 512
× 16 bits (~0.5 MB each) and ``--mg`` mammography-like ones (Digital Mammography X-Ray For
Presentation, 3328 × 3072 × 16 bits, ~20 MB each), pixels pseudo-random, all of one made-up
patient. For each number of concurrent associations in ``--associations``, a new set of UIDs is
written and the files are dealt round-robin to that many DCMTK ``storescu`` processes started at
once (each sends its share in one association, Explicit VR Little Endian as written), first to
one server then to the other (the order alternates between rounds). Printed for each server and
round: instances/s and MB/s (from the first start to the last exit), the per-instance latency
p50/p95/max of each kind (from storescu's ``Sending file`` to its ``Received Store Response``
line, read as they come), the server's CPU time (user + system, every process of its tree: the
figure to compare on a shared machine), its peak RSS (summed over its process tree) and the
ratio ENRS/Orthanc.

ENRS is the real server: ``enrs serve`` (SQLite in a temporary data dir, or a temporary
PostgreSQL database with ``--postgres``), its DICOM listener on a free port (``ENRS_DICOM_PORT``,
``ENRS_DICOM_AET=ENRS``; ``--dicom-workers N``: ``ENRS_DICOM_WORKERS=N``, N listener processes
on that port), the sender registered with ``enrs imaging ae add MODALITY --store``.
Orthanc (Debian's package: ``apt-get install orthanc``; ``--orthanc PATH`` for another binary)
runs from a temporary JSON configuration: its own DICOM and HTTP ports, storage and index in a
temporary folder, no plugin, ``DicomAlwaysAllowStore`` (any calling AE may store), HTTP on
localhost without authentication (used to wait for it and count what it holds), its other
options Debian's defaults (notably a maximum PDU of 16 KB; ENRS accepts 128 KB).

``TCP_NODELAY=1`` is in the environment of Orthanc and of every storescu: DCMTK, the network
layer of both, reads it and then disables Nagle's algorithm on its sockets. Without it
(``--nagle``) a sender's last small PDU of an instance waits for the receiver's delayed ACK:
one association to Orthanc stalls at ~20 instances/s (measured: 19.6 against 248 with it, 60
CT instances; ENRS, with its larger PDUs and ``TCP_NODELAY`` on its own sockets, unchanged) —
the stall issue 16 names for pynetdicom. Without it the
Orthanc column is skipped, saying so. Every instance must be acknowledged with success by both
(checked, and the count each server holds afterwards: ENRS's ``imaging_instance`` rows, Orthanc's
``/statistics``), else the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)
from sqlalchemy import create_engine, text
from tests.support.live_server import enrs_command, free_port, live_server

from bench._load import ProcTreeSampler, percentiles
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres

MB = 1_000_000
CALLING_AET = "MODALITY"
CT_SIZE = (512, 512)
MG_SIZE = (3328, 3072)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.imaging_store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--ct", type=int, default=200, help="CT-like instances (~0.5 MB) per round")
    add("--mg", type=int, default=10, help="mammography-like instances (~20 MB) per round")
    add("--associations", default="1,4", help="concurrent associations of each round, e.g. 1,4")
    add("--postgres", action="store_true", help="ENRS on a temporary PostgreSQL database")
    add("--pg-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server for --postgres")
    add("--dicom-workers", type=int, default=1, help="ENRS_DICOM_WORKERS: listener processes")
    add("--orthanc", default="Orthanc", help="Orthanc's binary (Debian: apt-get install orthanc)")
    add("--no-orthanc", action="store_true", help="measure ENRS alone")
    add(
        "--nagle",
        action="store_true",
        help="no TCP_NODELAY=1 for storescu and Orthanc (DCMTK then keeps Nagle's algorithm)",
    )
    add("--timeout", type=float, default=1800.0, help="seconds a storescu may take")
    add("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


# --- the instances ----------------------------------------------------------------------------


def _image(sop_class: UID, modality: str, rows: int, columns: int, seed: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "BENCH-0001"
    ds.PatientName = "BENCH^SYNTHETIC"
    ds.PatientBirthDate = "19580101"
    ds.PatientSex = "F"
    ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = random.Random(seed).randbytes(rows * columns * 2)
    return ds


def write_round(folder: Path, ct: int, mg: int, round_no: int) -> list[tuple[str, Path]]:
    """A CT study (one series) and a mammography study of new UIDs; (kind, path) of each file."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[tuple[str, Path]] = []
    for kind, count, sop_class, size in (
        ("ct", ct, CTImageStorage, CT_SIZE),
        ("mg", mg, DigitalMammographyXRayImageStorageForPresentation, MG_SIZE),
    ):
        study, series = generate_uid(), generate_uid()
        for i in range(count):
            ds = _image(sop_class, kind.upper(), *size, seed=round_no * 100_000 + i)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.AccessionNumber = f"B{round_no}{kind.upper()}"
            ds.StudyDate, ds.StudyTime = "20261206", "010000"
            ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
            path = folder / f"{kind}-{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append((kind, path))
    return files


# --- sending ----------------------------------------------------------------------------------


@dataclass
class Sender:
    """One storescu process and the latencies read from its log as they come."""

    files: list[tuple[str, Path]]
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"ct": [], "mg": []})
    successes: int = 0
    log: list[str] = field(default_factory=list)
    returncode: int | None = None


def _dcmtk_env(nodelay: bool) -> dict[str, str]:
    """The environment of a DCMTK program (storescu, Orthanc): ``TCP_NODELAY=1`` makes DCMTK's
    network layer disable Nagle's algorithm on its sockets."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def _run_sender(sender: Sender, port: int, called: str, timeout: float, nodelay: bool) -> None:
    kinds = {str(path): kind for kind, path in sender.files}
    command = ["storescu", "-v", "-aet", CALLING_AET, "-aec", called, "127.0.0.1", str(port),
               *kinds]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_dcmtk_env(nodelay),
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    current: tuple[str, float] | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic()
        sender.log.append(line)
        if line.startswith("I: Sending file: "):
            current = (kinds.get(line.removeprefix("I: Sending file: ").strip(), "?"), now)
        elif line.startswith("I: Received Store Response") and current is not None:
            if "(Success)" in line:
                sender.successes += 1
                sender.latencies[current[0]].append(now - current[1])
            current = None
    sender.returncode = proc.wait()
    timer.cancel()


def send(
    files: list[tuple[str, Path]],
    port: int,
    called: str,
    associations: int,
    timeout: float,
    nodelay: bool = True,
) -> dict[str, Any]:
    """Deal ``files`` to ``associations`` storescu processes started at once."""
    senders = [Sender(files[i::associations]) for i in range(associations)]
    threads = [
        threading.Thread(target=_run_sender, args=(s, port, called, timeout, nodelay))
        for s in senders
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    failed = [s for s in senders if s.returncode != 0 or s.successes != len(s.files)]
    if failed:
        raise RuntimeError(
            f"storescu to {called}: {sum(s.successes for s in senders)}/{len(files)} stored; "
            f"log of one that failed:\n{''.join(failed[0].log[-30:])}"
        )
    size = sum(path.stat().st_size for _, path in files)
    figures: dict[str, Any] = {
        "instances": len(files),
        "mb": round(size / MB, 1),
        "seconds": round(elapsed, 2),
        "instances_per_s": round(len(files) / elapsed, 1),
        "mb_per_s": round(size / MB / elapsed, 1),
    }
    for kind in ("ct", "mg"):
        values = [round(v * 1000) for s in senders for v in s.latencies[kind]]
        p50, p95, top = percentiles(values, (50, 95, 100))
        figures[f"{kind}_ms"] = {"p50": p50, "p95": p95, "max": top}
    return figures


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    aet: str
    sampler: ProcTreeSampler
    count: Any  # () -> int: the instances it holds


def _enrs(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(enrs_command(*args), env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"enrs {' '.join(args)}: {done.stderr}")
    return done.stdout


@contextmanager
def enrs_server(tmp: Path, database_url: str, workers: int = 1) -> Iterator[Server]:
    data_dir = tmp / "enrs"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    _enrs(env, "migrate")
    _enrs(env, "imaging", "ae", "add", CALLING_AET, "--host", "127.0.0.1", "--port", "104",
          "--store")  # fmt: skip
    port = free_port()
    dicom = {
        "ENRS_DICOM_PORT": str(port),
        "ENRS_DICOM_AET": "ENRS",
        "ENRS_DICOM_HOST": "127.0.0.1",
        "ENRS_DICOM_WORKERS": str(workers),
    }
    engine = create_engine(database_url)

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM imaging_instance")).scalar_one())

    with live_server(
        data_dir=data_dir, database_url=database_url, extra_env=dicom, start_timeout=120
    ) as live:
        _wait_echo(port, "ENRS")
        with ProcTreeSampler(live.process.pid) as sampler:
            yield Server("ENRS", port, "ENRS", sampler, count)
    engine.dispose()


@contextmanager
def orthanc_server(tmp: Path, binary: str, nodelay: bool) -> Iterator[Server]:
    folder = tmp / "orthanc"
    folder.mkdir()
    port, http_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {},
        "SaveJobs": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    env = _dcmtk_env(nodelay)
    with open(folder / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=log, cwd=folder, env=env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}), see its log")
            try:
                if httpx.get(f"{base}/system", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer in 60 s")
            time.sleep(0.2)
        _wait_echo(port, "ORTHANC")

        def count() -> int:
            return int(httpx.get(f"{base}/statistics", timeout=30).json()["CountInstances"])

        with ProcTreeSampler(proc.pid) as sampler:
            yield Server("Orthanc", port, "ORTHANC", sampler, count)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_echo(port: int, called: str) -> None:
    deadline = time.monotonic() + 60
    command = ["echoscu", "-aet", CALLING_AET, "-aec", called, "127.0.0.1", str(port)]
    while subprocess.run(command, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{called} does not answer C-ECHO on port {port}")
        time.sleep(0.3)


def _cpu(server: Server) -> float:
    return sum(cpu for _rss, cpu in server.sampler.snapshot().values())


def _rss(server: Server) -> int:
    return sum(rss for rss, _cpu in server.sampler.snapshot().values())


# --- the run ----------------------------------------------------------------------------------


def _line(name: str, f: dict[str, Any]) -> str:
    ct, mg = f["ct_ms"], f["mg_ms"]
    return (
        f"  {name:<8} {f['instances_per_s']:>7.1f} inst/s {f['mb_per_s']:>6.1f} MB/s "
        f"{f['seconds']:>7.1f} s  CT p50/p95/max {ct['p50']:.0f}/{ct['p95']:.0f}/{ct['max']:.0f} ms"
        f"  MG p50/p95/max {mg['p50']:.0f}/{mg['p95']:.0f}/{mg['max']:.0f} ms"
        f"  CPU {f['server_cpu_s']:.1f} s  peak RSS {f['peak_rss_mb']:.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    levels = [int(n) for n in args.associations.split(",")]
    if shutil.which("storescu") is None:
        print("DCMTK's storescu is missing: apt-get install dcmtk", file=sys.stderr)
        return 1
    with_orthanc = not args.no_orthanc and shutil.which(args.orthanc) is not None
    if not args.no_orthanc and not with_orthanc:
        print(
            f"Orthanc ({args.orthanc}) is not installed: its column is skipped "
            "(apt-get install orthanc, or --orthanc PATH)"
        )
    results: dict[str, Any] = {
        "dcmtk_tcp_nodelay": not args.nagle,
        "ct": args.ct,
        "mg": args.mg,
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
        "rounds": [],
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-imgbench-")))
        if args.postgres:
            database_url = stack.enter_context(temporary_postgres(args.pg_admin_url))
        else:
            database_url = f"sqlite:///{tmp / 'enrs' / 'enrs.db'}"
        results["database"] = database_url.split(":", 1)[0].split("+")[0]
        results["dicom_workers"] = args.dicom_workers
        servers = [stack.enter_context(enrs_server(tmp, database_url, args.dicom_workers))]
        if with_orthanc:
            servers.append(stack.enter_context(orthanc_server(tmp, args.orthanc, not args.nagle)))
        for server in servers:
            server.sampler.reset_peak()
        idle = {s.name: round(_rss(s) / 2**20) for s in servers}
        results["idle_rss_mb"] = idle
        print(
            f"{args.ct} CT (~0.5 MB) + {args.mg} MG (~20 MB) instances per round, ENRS on "
            f"{results['database']}, {args.dicom_workers} DICOM process(es); idle RSS "
            + ", ".join(f"{name} {mb} MB" for name, mb in idle.items())
        )
        for round_no, associations in enumerate(levels, 1):
            folder = tmp / f"round{round_no}"
            files = write_round(folder, args.ct, args.mg, round_no)
            order = servers if round_no % 2 else servers[::-1]
            found: dict[str, Any] = {"associations": associations}
            for server in order:
                server.sampler.reset_peak()
                before, held = _cpu(server), server.count()
                load = os.getloadavg()[0]
                figures = send(
                    files, server.port, server.aet, associations, args.timeout, not args.nagle
                )
                figures["server_cpu_s"] = round(_cpu(server) - before, 1)
                time.sleep(2 * server.sampler.interval)
                figures["peak_rss_mb"] = round(server.sampler.peak_rss / 2**20)
                figures["loadavg_1m"] = round(load, 2)
                stored = server.count() - held
                if stored != len(files):
                    print(f"{server.name} holds {stored} new instances, not {len(files)}")
                    return 1
                found[server.name] = figures
            shutil.rmtree(folder)
            print(f"{associations} association(s):")
            for server in servers:
                print(_line(server.name, found[server.name]))
            if with_orthanc:
                e, o = found["ENRS"], found["Orthanc"]
                found["ratio_enrs_orthanc"] = {
                    "instances_per_s": round(e["instances_per_s"] / o["instances_per_s"], 2),
                    "server_cpu": round(e["server_cpu_s"] / max(o["server_cpu_s"], 0.1), 2),
                }
                print(
                    "  ENRS/Orthanc: throughput "
                    f"{found['ratio_enrs_orthanc']['instances_per_s']:.2f}, server CPU "
                    f"{found['ratio_enrs_orthanc']['server_cpu']:.2f}"
                )
            results["rounds"].append(found)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
