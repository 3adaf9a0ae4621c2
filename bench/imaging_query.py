"""C-FIND and QIDO-RS latency with a large index, and WADO-RS retrieval against reading the same
files from disk: issue 16's remaining imaging figures.

    .venv/bin/python -m bench.imaging_query [--instances 1000000] [--repeat 100] [--baseline 10]
        [--wado-studies 3] [--wado-instances 100] [--postgres] [--json PATH]

**The index.** Rows written straight into a migrated database (``enrs migrate``) with SQLAlchemy
Core executemany, as the archive's filing leaves them (:mod:`enrs.imaging.filing`): one
``identity_patient`` row per regional patient, ``imaging_study`` / ``imaging_series`` /
``imaging_instance`` rows with the attributes C-STORE indexes, ``blob_key``s of its form (no
bytes behind them: these are only queried). The shape, drawn with a fixed seed study after study
until ``--instances`` is reached, follows the region's activity (issue 16: 700–800 examinations a
day, ~40 GB, so ~100 instances per study on average): CT 35 % of the studies (4 series of 30–90
instances), MR 10 % (6 series of 15–35), CR/DX 35 % (1–2 series of 1–2), MG 15 % (1 series of 4),
US 5 % (1 series of 5–15); dates spread over 14 days (1,000,000 instances: ~10,000 studies,
~700 a day), one patient for every 4 studies on average (~2,500), each filed by one of 5 sending
sites (its assigning authority an OID, the PatientID its IPP there); 95 % of the studies
``resolved`` to their regional patient, 4 % ``unknown``, 1 % ``conflict``; family names from a
list where ~4 % start with ``DUP``. SQLite is not ANALYZEd (the archive never does it);
PostgreSQL tables are ``VACUUM ANALYZE``d (what autovacuum does to a grown table). No identity
domain nor source identity is loaded: a QIDO-RS search naming PatientID and issuer then matches
them as filed (one look-up for a domain, found absent).

**The queries**, against the real server (``enrs serve``, its DICOM listener and HTTP), each kind
``--repeat`` times in a row, its targets drawn at random from the index: C-FIND from a pynetdicom
SCU in this process (one association, ``TCP_NODELAY`` set on its socket as the archive does on
its own), the time from sending the request to the final response (every pending match received);
QIDO-RS with httpx (one keep-alive connection), the portal session of a user of the
identitovigilance cell (``enrs users create --role identitovigilance``: the role that sees every
study), the time to the whole JSON body. Printed per kind: answers per query, p50 / p95 / max
latency and queries/s; the server's peak RSS (its process tree).

**The baseline**, measured in the same run: the same query kinds on an index ``--baseline``
times smaller (a separate database and server), so that what grows with the index shows as a
ratio (a query that uses an index keeps ~1.0; a scan grows with the table); and the floor of each
protocol: C-ECHO on the same association, ``GET /healthz`` on the same connection.

**WADO-RS**: ``--wado-studies`` studies of ``--wado-instances`` synthetic CT images each
(512 × 512 × 16 bits, ~0.5 MB; pixels pseudo-random) stored for real by DCMTK's ``storescu``
into the large index's server, then retrieved with httpx streaming, whole studies
(``/dicomweb/studies/{uid}``, multipart) and instance by instance
(``…/instances/{sop}``); MB/s of the bodies received. Baselines in the same run, best of 3
rounds as well: reading the same blobs straight from the storage folder (``data_dir/blobs``: the
encrypted files as stored, the same bytes plus a few dozen per blob) with ``O_DIRECT`` (from the
device, not the page cache: "reading the same files from disk") and normally (from the page
cache, which holds them: they were just written, and the server reads them from there too),
and reading them through the kit's storage API (:meth:`BlobStorage.get`: read, decrypt and
check). Each way is printed with its ratio to both plain reads. The whole studies are also
retrieved by as many clients at once as there are studies (each its own study); for the WADO-RS
ways, the server's peak RSS (its process tree, sampled every 0.2 s) is printed as well.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from sqlalchemy import Engine, create_engine, insert, text
from tests.imaging.conftest import ct_dataset, write
from tests.support.live_server import enrs_command, live_server

from bench._load import ProcTreeSampler, percentiles
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from enrs.identity.models import RegionalPatient
from enrs.imaging.models import CONFLICT, RESOLVED, UNKNOWN, Instance, Series, Study
from enrs.kit.storage.base import BLOB_SUFFIX

MB = 1_000_000
QUERY_AET = "QUERY"
STORE_AET = "MODALITY"
PASSWORD = "Bench-imaging-2026!"
ROOT = "1.2.826.0.1.3680043.10.1207."  # UIDs of the synthetic index: ROOT + kind + counter
FIRST_DAY = date(2026, 11, 22)
DAYS = 14
SITES = [f"1.2.250.1.999.{n}.1.2" for n in range(1, 6)]  # the sending sites' authorities
FAMILIES = [
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL",
    "FOURNIER", "GIRARD", "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT",
]  # fmt: skip
GIVEN = ["JEAN", "MARIE", "PIERRE", "ANNE", "LOUIS", "CLAIRE", "PAUL", "JULIE", "HUGO", "EMMA"]
# modality -> (share of the studies, SOP class, series per study, instances per series)
MIX: dict[str, tuple[float, str, tuple[int, int], tuple[int, int]]] = {
    "CT": (0.35, CTImageStorage, (4, 4), (30, 90)),
    "MR": (0.10, MRImageStorage, (6, 6), (15, 35)),
    "DX": (0.35, DigitalXRayImageStorageForPresentation, (1, 2), (1, 2)),
    "MG": (0.15, DigitalMammographyXRayImageStorageForPresentation, (1, 1), (4, 4)),
    "US": (0.05, UltrasoundImageStorage, (1, 1), (5, 15)),
}
DESCRIPTIONS = {"CT": "TDM THORAX", "MR": "IRM GENOU", "DX": "RADIO THORAX", "MG": "MAMMOGRAPHIE",
                "US": "ECHO ABDOMEN"}  # fmt: skip


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.imaging_query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--instances", type=int, default=100_000, help="instances in the index (1000000: issue 16)")
    add("--baseline", type=int, default=10, help="the baseline index is this many times smaller")
    add("--repeat", type=int, default=100, help="queries of each kind")
    add("--wado-studies", type=int, default=3, help="CT studies stored for WADO-RS (0: none)")
    add("--wado-instances", type=int, default=100, help="CT instances (~0.5 MB) per such study")
    add("--seed", type=int, default=16)
    add("--postgres", action="store_true", help="temporary PostgreSQL databases")
    add("--pg-admin-url", default=PG_ADMIN_URL, help="PostgreSQL server for --postgres")
    add("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


# --- the index --------------------------------------------------------------------------------


@dataclass
class Shape:
    """What was loaded, and the targets the queries draw from."""

    instances: int = 0
    series: int = 0
    studies: int = 0
    patients: list[tuple[str, str]] = field(default_factory=list)  # (PatientID, issuer)
    study_uids: list[str] = field(default_factory=list)
    ct_series: list[tuple[str, str]] = field(default_factory=list)  # (study UID, series UID)
    seconds: float = 0.0


class _Rows:
    """Rows of one table written by executemany in chunks of ``chunk``."""

    def __init__(self, engine: Engine, table: Any, *parents: _Rows, chunk: int = 20_000) -> None:
        self.engine, self.table, self.parents, self.chunk = engine, table, parents, chunk
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        for parent in self.parents:  # the rows they reference first (foreign keys)
            parent.flush()
        if self.rows:
            with self.engine.begin() as conn:
                conn.execute(insert(self.table), self.rows)
            self.rows = []


def _modality(rng: random.Random) -> str:
    pick, total = rng.random(), 0.0
    for modality, (share, *_rest) in MIX.items():
        total += share
        if pick < total:
            return modality
    return "CT"


def load_index(engine: Engine, instances: int, seed: int) -> Shape:
    """Write an index of about ``instances`` instances (see the module); what it holds."""
    began = time.monotonic()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    shape = Shape()
    patients_table = _Rows(engine, RegionalPatient.__table__)
    studies = _Rows(engine, Study.__table__)
    series = _Rows(engine, Series.__table__, studies)
    images = _Rows(engine, Instance.__table__, series)
    people: list[dict[str, Any]] = []
    person: dict[str, Any]
    while shape.instances < instances:
        shape.studies += 1
        if not people or rng.random() < 0.25:  # a new patient: 4 studies each on average
            n = len(people) + 1
            person = {
                "id": n,
                "pid": f"IPP{n:07d}",
                "issuer": rng.choice(SITES),
                "name": f"{rng.choice(FAMILIES)}^{rng.choice(GIVEN)}",
                "birth": date(1930, 1, 1) + timedelta(days=rng.randrange(32_000)),
                "sex": rng.choice("MF"),
            }
            people.append(person)
            patients_table.add(
                {"id": n, "rri": f"B{n:015d}", "active": True, "created_at": now,
                 "updated_at": now}
            )  # fmt: skip
            shape.patients.append((person["pid"], person["issuer"]))
        else:
            person = rng.choice(people)
        modality = _modality(rng)
        _share, sop_class, n_series, n_images = MIX[modality]
        status = rng.choices([RESOLVED, UNKNOWN, CONFLICT], weights=[95, 4, 1])[0]
        study_uid = f"{ROOT}1.{shape.studies}"
        shape.study_uids.append(study_uid)
        studies.add(
            {
                "id": shape.studies,
                "study_uid": study_uid,
                "patient_id": person["id"] if status == RESOLVED else None,
                "patient_status": status,
                "patient_note": None if status == RESOLVED else "bench: not resolved",
                "source_patient_id": person["pid"],
                "source_issuer": person["issuer"],
                "patient_name": person["name"],
                "patient_birth_date": person["birth"],
                "patient_sex": person["sex"],
                "accession_number": f"A{shape.studies:09d}",
                "study_date": FIRST_DAY + timedelta(days=rng.randrange(DAYS)),
                "study_description": DESCRIPTIONS[modality],
                "sending_aet": f"SITE{SITES.index(person['issuer']) + 1}",
                "created_at": now,
                "updated_at": now,
            }
        )
        for number in range(1, rng.randint(*n_series) + 1):
            shape.series += 1
            series_uid = f"{ROOT}2.{shape.series}"
            if modality == "CT":
                shape.ct_series.append((study_uid, series_uid))
            series.add(
                {"id": shape.series, "series_uid": series_uid, "study_id": shape.studies,
                 "modality": modality, "series_number": number,
                 "series_description": f"{DESCRIPTIONS[modality]} {number}", "created_at": now}
            )  # fmt: skip
            for image in range(1, rng.randint(*n_images) + 1):
                shape.instances += 1
                sop = f"{ROOT}3.{shape.instances}"
                digest = hashlib.sha256(sop.encode()).hexdigest()
                images.add(
                    {
                        "id": shape.instances,
                        "sop_instance_uid": sop,
                        "series_id": shape.series,
                        "sop_class_uid": sop_class,
                        "transfer_syntax_uid": ExplicitVRLittleEndian,
                        "instance_number": image,
                        "size": 525_000,
                        "sha256": digest,
                        "blob_key": f"imaging/2026/11/{digest[:32]}.dcm",
                        "sending_aet": f"SITE{SITES.index(person['issuer']) + 1}",
                        "received_at": now,
                        "storage_tier": "warm",
                    }
                )
    patients_table.flush()
    images.flush()
    _after_load(engine)
    shape.seconds = time.monotonic() - began
    return shape


def _after_load(engine: Engine) -> None:
    """PostgreSQL: the id sequences past the loaded ids (the WADO-RS studies are stored after),
    and the statistics autovacuum would have gathered."""
    if engine.dialect.name != "postgresql":
        return
    tables = ("identity_patient", "imaging_study", "imaging_series", "imaging_instance")
    with engine.begin() as conn:
        for table in tables:
            sequence = f"pg_get_serial_sequence('{table}', 'id')"
            conn.execute(text(f"SELECT setval({sequence}, max(id)) FROM {table}"))  # noqa: S608
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(text(f"VACUUM ANALYZE {table}"))


# --- the server -------------------------------------------------------------------------------


@dataclass
class Archive:
    base_url: str
    dicom_port: int
    data_dir: Path
    database_url: str
    sampler: ProcTreeSampler
    http: httpx.Client  # with the cell's portal session


def _enrs(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(enrs_command(*args), env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"enrs {' '.join(args)}: {done.stderr}")


def migrate(data_dir: Path, database_url: str) -> None:
    """``enrs migrate``, the query and store AEs and the cell's user."""
    data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    _enrs(env, "migrate")
    for aet, flag in ((QUERY_AET, "--retrieve"), (STORE_AET, "--store")):
        _enrs(env, "imaging", "ae", "add", aet, "--host", "127.0.0.1", "--port", "104", flag)
    _enrs(env, "users", "create", "cellule", "--name", "Cellule", "--role", "identitovigilance",
          "--password", PASSWORD)  # fmt: skip


def _log_in(http: httpx.Client) -> None:
    page = http.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"username": "cellule", "password": PASSWORD, "csrf": csrf}
    answer = http.post("/login", data=form)
    if answer.status_code != 303:
        raise RuntimeError(f"log in: {answer.status_code} {answer.text[:300]}")


@contextmanager
def archive(data_dir: Path, database_url: str) -> Iterator[Archive]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dicom = {"ENRS_DICOM_PORT": str(port), "ENRS_DICOM_AET": "ENRS", "ENRS_DICOM_HOST": "127.0.0.1"}
    with (
        live_server(
            data_dir=data_dir, database_url=database_url, extra_env=dicom, start_timeout=120
        ) as live,
        httpx.Client(base_url=live.base_url, timeout=120) as http,
        ProcTreeSampler(live.process.pid) as sampler,
    ):
        _log_in(http)
        yield Archive(live.base_url, port, data_dir, database_url, sampler, http)


# --- C-FIND and QIDO-RS -----------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A query kind: its name and how to run one query of it (the number of answers)."""

    name: str
    run: Callable[[random.Random], int]


def _timed(kind: Kind, repeat: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    kind.run(rng)  # warm-up: the first of a kind pays imports and caches
    latencies_us: list[int] = []
    answers: list[int] = []
    began = time.perf_counter()
    for _ in range(repeat):
        start = time.perf_counter_ns()
        answers.append(kind.run(rng))
        latencies_us.append((time.perf_counter_ns() - start) // 1000)
    elapsed = time.perf_counter() - began
    p50, p95, top = percentiles(latencies_us, (50, 95, 100))
    return {
        "answers_mean": round(sum(answers) / len(answers), 1),
        "p50_ms": round(p50 / 1000, 2),
        "p95_ms": round(p95 / 1000, 2),
        "max_ms": round(top / 1000, 2),
        "per_s": round(repeat / elapsed, 1),
    }


def _find(assoc: Any, model: str, **keys: str) -> int:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    found = 0
    for status, identifier in assoc.send_c_find(ds, model):
        if status is None:
            raise RuntimeError("C-FIND: no answer (association aborted or timed out)")
        if status.Status in (0xFF00, 0xFF01):
            found += identifier is not None
        elif status.Status != 0x0000:
            raise RuntimeError(f"C-FIND {keys}: status 0x{status.Status:04X}")
    return found


def cfind_kinds(assoc: Any, shape: Shape) -> list[Kind]:
    patient_root = PatientRootQueryRetrieveInformationModelFind
    study_root = StudyRootQueryRetrieveInformationModelFind

    def patient(rng: random.Random) -> int:
        pid, issuer = rng.choice(shape.patients)
        return _find(assoc, patient_root, QueryRetrieveLevel="PATIENT", PatientID=pid,
                     IssuerOfPatientID=issuer, PatientName="", PatientBirthDate="",
                     NumberOfPatientRelatedStudies="")  # fmt: skip

    def name(rng: random.Random) -> int:
        return _find(assoc, patient_root, QueryRetrieveLevel="PATIENT", PatientName="DUP*",
                     PatientID="", IssuerOfPatientID="", PatientBirthDate="")  # fmt: skip

    def studies(rng: random.Random) -> int:
        pid, issuer = rng.choice(shape.patients)
        return _find(assoc, study_root, QueryRetrieveLevel="STUDY", PatientID=pid,
                     IssuerOfPatientID=issuer, StudyInstanceUID="", StudyDate="",
                     ModalitiesInStudy="", StudyDescription="", AccessionNumber="",
                     NumberOfStudyRelatedInstances="")  # fmt: skip

    def by_date(rng: random.Random) -> int:
        day = f"{FIRST_DAY + timedelta(days=rng.randrange(DAYS)):%Y%m%d}"
        return _find(assoc, study_root, QueryRetrieveLevel="STUDY", StudyDate=f"{day}-{day}",
                     ModalitiesInStudy="MR", StudyInstanceUID="", PatientName="", PatientID="",
                     AccessionNumber="")  # fmt: skip

    def series(rng: random.Random) -> int:
        return _find(assoc, study_root, QueryRetrieveLevel="SERIES",
                     StudyInstanceUID=rng.choice(shape.study_uids), SeriesInstanceUID="",
                     Modality="", SeriesNumber="", NumberOfSeriesRelatedInstances="")  # fmt: skip

    def images(rng: random.Random) -> int:
        study, one = rng.choice(shape.ct_series)
        return _find(assoc, study_root, QueryRetrieveLevel="IMAGE", StudyInstanceUID=study,
                     SeriesInstanceUID=one, SOPInstanceUID="", SOPClassUID="",
                     InstanceNumber="")  # fmt: skip

    def echo(rng: random.Random) -> int:
        status = assoc.send_c_echo()
        if not status or status.Status != 0:
            raise RuntimeError("C-ECHO failed")
        return 0

    return [
        Kind("C-ECHO (floor)", echo),
        Kind("PATIENT by PatientID+issuer", patient),
        Kind("PATIENT by PatientName DUP*", name),
        Kind("STUDY by PatientID+issuer", studies),
        Kind("STUDY by day + ModalitiesInStudy=MR", by_date),
        Kind("SERIES of a study", series),
        Kind("IMAGE of a CT series", images),
    ]


def _qido(http: httpx.Client, path: str, params: dict[str, str] | None = None) -> int:
    answer = http.get(path, params=params, headers={"Accept": "application/dicom+json"})
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    return len(answer.json()) if path.startswith("/dicomweb") else 0


def qido_kinds(http: httpx.Client, shape: Shape) -> list[Kind]:
    def patient(rng: random.Random) -> int:
        pid, issuer = rng.choice(shape.patients)
        return _qido(http, "/dicomweb/studies", {"PatientID": pid, "IssuerOfPatientID": issuer})

    def name(rng: random.Random) -> int:
        return _qido(http, "/dicomweb/studies", {"PatientName": "DUP*"})

    def by_date(rng: random.Random) -> int:
        day = f"{FIRST_DAY + timedelta(days=rng.randrange(DAYS)):%Y%m%d}"
        return _qido(http, "/dicomweb/studies", {"StudyDate": day, "ModalitiesInStudy": "MR"})

    def series(rng: random.Random) -> int:
        return _qido(http, f"/dicomweb/studies/{rng.choice(shape.study_uids)}/series")

    def images(rng: random.Random) -> int:
        study, one = rng.choice(shape.ct_series)
        return _qido(http, f"/dicomweb/studies/{study}/series/{one}/instances")

    def study_images(rng: random.Random) -> int:
        study, _one = rng.choice(shape.ct_series)
        return _qido(http, f"/dicomweb/studies/{study}/instances")

    return [
        Kind("GET /healthz (floor)", lambda rng: _qido(http, "/healthz")),
        Kind("studies?PatientID+Issuer", patient),
        Kind("studies?PatientName=DUP*", name),
        Kind("studies?StudyDate=day&ModalitiesInStudy=MR", by_date),
        Kind("studies/{uid}/series", series),
        Kind("…/series/{uid}/instances (CT)", images),
        Kind("studies/{uid}/instances (CT, limit 100)", study_images),
    ]


@contextmanager
def association(port: int) -> Iterator[Any]:
    ae = AE(ae_title=QUERY_AET)
    for context in (PatientRootQueryRetrieveInformationModelFind,
                    StudyRootQueryRetrieveInformationModelFind, Verification):  # fmt: skip
        ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    assoc = ae.associate("127.0.0.1", port, ae_title="ENRS")
    if not assoc.is_established:
        raise RuntimeError("the archive refused the association")
    # pynetdicom leaves Nagle's algorithm on: a request's last PDU would wait for a delayed ACK.
    assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield assoc
    finally:
        assoc.release()


def measure_queries(server: Archive, shape: Shape, repeat: int, seed: int) -> dict[str, Any]:
    server.sampler.reset_peak()
    found: dict[str, Any] = {"C-FIND": {}, "QIDO-RS": {}}
    with association(server.dicom_port) as assoc:
        for n, kind in enumerate(cfind_kinds(assoc, shape)):
            found["C-FIND"][kind.name] = _timed(kind, repeat, seed + n)
    for n, kind in enumerate(qido_kinds(server.http, shape)):
        found["QIDO-RS"][kind.name] = _timed(kind, repeat, seed + n)
    time.sleep(2 * server.sampler.interval)
    found["peak_rss_mb"] = round(server.sampler.peak_rss / 2**20)
    return found


# --- WADO-RS ----------------------------------------------------------------------------------


def store_studies(server: Archive, folder: Path, studies: int, per_study: int) -> list[str]:
    """``studies`` CT studies stored by storescu; their UIDs."""
    uids: list[str] = []
    for s in range(studies):
        study, series = generate_uid(), generate_uid()
        sub = folder / f"study{s}"
        sub.mkdir(parents=True)
        for i in range(per_study):
            ds = ct_dataset(patient_id=f"WADO{s}", issuer=SITES[0], study_uid=study,
                            series_uid=series, seed=s * 10_000 + i, size=512)  # fmt: skip
            ds.InstanceNumber = i + 1
            write(ds, sub / f"{i:05d}.dcm")
        command = ["storescu", "-aet", STORE_AET, "-aec", "ENRS", "+sd", "127.0.0.1",
                   str(server.dicom_port), str(sub)]  # fmt: skip
        env = {**os.environ, "TCP_NODELAY": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"storescu: {done.stderr[-2000:]}")
        uids.append(str(study))
    shutil.rmtree(folder)
    return uids


def _stream(http: httpx.Client, path: str) -> int:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    size = 0
    with http.stream("GET", path, headers={"Accept": accept}) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.read()[:300]!r}")
        for chunk in answer.iter_bytes():
            size += len(chunk)
    return size


def _rate(size: int, seconds: float) -> dict[str, float]:
    return {"mb": round(size / MB, 1), "seconds": round(seconds, 3),
            "mb_per_s": round(size / MB / seconds, 1)}  # fmt: skip


def measure_wado(server: Archive, uids: list[str], rounds: int = 3) -> dict[str, Any]:
    """Best of ``rounds`` of each way of reading the stored studies."""
    from enrs.kit.storage import open_storage
    from enrs.settings import Settings

    engine = create_engine(server.database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT st.study_uid, se.series_uid, i.sop_instance_uid, i.blob_key "
                "FROM imaging_instance i JOIN imaging_series se ON se.id = i.series_id "
                "JOIN imaging_study st ON st.id = se.study_id WHERE st.study_uid IN :uids"
            ).bindparams(bindparam_list("uids", uids))
        ).all()
    engine.dispose()
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    storage = open_storage(settings)
    blobs = [settings.storage_path / f"{row[3]}{BLOB_SUFFIX}" for row in rows]

    def studies() -> int:
        return sum(_stream(server.http, f"/dicomweb/studies/{uid}") for uid in uids)

    def together() -> int:
        def one(uid: str) -> int:
            return _stream(server.http, f"/dicomweb/studies/{uid}")

        with ThreadPoolExecutor(len(uids)) as pool:
            return sum(pool.map(one, uids))

    def instances() -> int:
        return sum(
            _stream(server.http, f"/dicomweb/studies/{st}/series/{se}/instances/{sop}")
            for st, se, sop, _key in rows
        )

    def raw() -> int:
        return sum(len(path.read_bytes()) for path in blobs)

    def direct() -> int:
        return sum(read_direct(path) for path in blobs)

    def decrypted() -> int:
        return sum(len(storage.get(row[3])) for row in rows)

    ways = {
        "WADO-RS studies (multipart)": studies,
        f"WADO-RS studies, {len(uids)} clients at once": together,
        "WADO-RS instance by instance": instances,
        "disk: stored files, O_DIRECT": direct,
        "disk: stored files, page cache": raw,
        "disk: BlobStorage.get (read+decrypt)": decrypted,
    }
    found: dict[str, Any] = {"instances": len(rows)}
    for name, way in ways.items():
        best: dict[str, float] | None = None
        server.sampler.reset_peak()
        for _ in range(rounds):
            began = time.perf_counter()
            size = way()
            figures = _rate(size, time.perf_counter() - began)
            if best is None or figures["mb_per_s"] > best["mb_per_s"]:
                best = figures
        assert best is not None
        if name.startswith("WADO-RS"):
            time.sleep(2 * server.sampler.interval)
            best["peak_rss_mb"] = round(server.sampler.peak_rss / 2**20)
        found[name] = best
    disk = found["disk: stored files, O_DIRECT"]["mb_per_s"]
    cached = found["disk: stored files, page cache"]["mb_per_s"]
    for name in ways:
        found[name]["ratio_to_disk"] = round(found[name]["mb_per_s"] / disk, 3)
        found[name]["ratio_to_page_cache"] = round(found[name]["mb_per_s"] / cached, 3)
    return found


def read_direct(path: Path) -> int:
    """Read a file with ``O_DIRECT`` (from the device, not the page cache); its size."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buffer = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT needs
    size = 0
    try:
        while got := os.readv(fd, [buffer]):
            size += got
    finally:
        os.close(fd)
        buffer.close()
    return size


def bindparam_list(name: str, values: list[str]) -> Any:
    from sqlalchemy import bindparam

    return bindparam(name, value=values, expanding=True)


# --- the run ----------------------------------------------------------------------------------


def _print_queries(title: str, figures: dict[str, Any], base: dict[str, Any] | None) -> None:
    print(title)
    for protocol in ("C-FIND", "QIDO-RS"):
        print(f"  {protocol}: {'kind':<42} answers  p50 ms  p95 ms  max ms  q/s  p95/baseline")
        for name, f in figures[protocol].items():
            ratio = ""
            if base is not None:
                ratio = f"{f['p95_ms'] / max(base[protocol][name]['p95_ms'], 0.01):.2f}"
            print(
                f"    {name:<48} {f['answers_mean']:>7.1f} {f['p50_ms']:>7.1f} "
                f"{f['p95_ms']:>7.1f} {f['max_ms']:>7.1f} {f['per_s']:>6.1f}  {ratio}"
            )
    print(f"  server peak RSS {figures['peak_rss_mb']} MB")


def run_index(
    stack: ExitStack, tmp: Path, name: str, instances: int, args: argparse.Namespace
) -> tuple[Archive, dict[str, Any]]:
    """A database of ``instances`` indexed, its server started and queried."""
    if args.postgres:
        database_url = stack.enter_context(temporary_postgres(args.pg_admin_url))
    else:
        database_url = f"sqlite:///{tmp / name / 'enrs.db'}"
    migrate(tmp / name, database_url)
    engine = create_engine(database_url)
    shape = load_index(engine, instances, args.seed)
    engine.dispose()
    print(
        f"{name}: {shape.instances} instances, {shape.series} series, {shape.studies} studies, "
        f"{len(shape.patients)} patients loaded in {shape.seconds:.0f} s"
    )
    server = stack.enter_context(archive(tmp / name, database_url))
    figures = measure_queries(server, shape, args.repeat, args.seed)
    figures["index"] = {"instances": shape.instances, "series": shape.series,
                        "studies": shape.studies, "patients": len(shape.patients),
                        "load_s": round(shape.seconds, 1)}  # fmt: skip
    return server, figures


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.wado_studies and shutil.which("storescu") is None:
        print("DCMTK's storescu is missing: apt-get install dcmtk (or --wado-studies 0)")
        return 1
    results: dict[str, Any] = {
        "database": "postgresql" if args.postgres else "sqlite",
        "repeat": args.repeat,
        "loadavg_1m_start": round(os.getloadavg()[0], 2),
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-imgquery-")))
        base: dict[str, Any] | None = None
        if args.baseline > 1:
            with ExitStack() as small:
                _server, base = run_index(small, tmp, "baseline", args.instances // args.baseline,
                                          args)  # fmt: skip
            _print_queries(f"baseline index ({base['index']['instances']} instances)", base, None)
            results["baseline"] = base
        server, full = run_index(stack, tmp, "full", args.instances, args)
        _print_queries(f"index of {full['index']['instances']} instances", full, base)
        results["full"] = full
        if args.wado_studies:
            uids = store_studies(server, tmp / "wado", args.wado_studies, args.wado_instances)
            wado = measure_wado(server, uids)
            results["wado"] = wado
            print(f"WADO-RS: {wado['instances']} CT instances in {len(uids)} studies (best of 3)")
            for name, f in wado.items():
                if isinstance(f, dict):
                    print(
                        f"  {name:<40} {f['mb']:>7.1f} MB {f['mb_per_s']:>8.1f} MB/s  ratio to "
                        f"O_DIRECT {f['ratio_to_disk']:.3f}, to page cache "
                        f"{f['ratio_to_page_cache']:.3f}"
                        + (f", server peak RSS {f['peak_rss_mb']} MB" if "peak_rss_mb" in f else "")
                    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
