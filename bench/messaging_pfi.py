"""Applicative mailboxes: issue 14's figure "IHE_XDM messages filed into the repository per
second, p95".

    .venv/bin/python -m bench.messaging_pfi [--messages 300] [--pdf-size 100000]
        [--concurrency 1,4] [--postgres]

What Postfix does for an APP mailbox, without Postfix: Python's ``smtplib.LMTP`` delivers each
message over ENRS's LMTP server (``messaging.lmtp``, its unix socket), which answers ``250``
once the message is integrated: the IHE_XDM.zip opened and checked, the patient resolved by
INS through the identity server, the CDA read and checked, the document filed (encrypted in
the fs blob storage, its metadata in the database) and an ``MDM^T02`` queued for the
facility's software, all in one transaction. Each message is one patient's CDA (a level-1
CDA carrying a PDF of ``--pdf-size`` bytes) in an IHE_XDM.zip, a patient of its own among
``--messages`` qualified identities of the CHU. Messages are built before the clock starts;
``--concurrency`` LMTP clients deliver them (Postfix's ``lmtp`` transport opens several).

Baseline in the same run: the same messages over the same client to an ``aiosmtpd`` LMTP
server that writes each message to a file and fsyncs it (what accepting a message durably
costs at the least). At the end the database must hold one document and one queued MDM per
message, or the run fails. Printed: messages/s, p50/p95 ms, ratio to the baseline, peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import os
import random
import resource
import smtplib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.documents.test_dmp_adapter import make_document
from tests.documents.world import CHU, CHU_OID, make_region
from tests.support.identities import person

from bench._load import percentiles
from bench.documents_search import PG_ADMIN_URL
from bench.identity_bulk import pg_database
from enrs.app import create_app
from enrs.documents import xds
from enrs.documents.models import DocumentEntry
from enrs.identity import service as identity_service
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.kit.outbound.models import OutboundMessage
from enrs.messaging import applicative, lmtp, service
from enrs.messaging.service import NewMailbox
from enrs.settings import Settings

DOMAIN = "mss.bench.test"
APP = f"dpi.chu@{DOMAIN}"
SENDER = f"dr.expediteur@{DOMAIN}"
INS_NIR = "1.2.250.1.213.1.4.8"
SAMPLE = Path(__file__).parents[1] / "tests" / "documents" / "data" / "n1_pdf.xml"
FAMILIES = ("MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS")
GIVEN = ("Marie", "Jean", "Pierre", "Anne", "Louise", "Paul", "Claire", "Luc")


@dataclasses.dataclass(frozen=True)
class Patient:
    ins: str
    ipp: str
    family: str
    given: str
    birth: date
    sex: str


def _patients(count: int, rng: random.Random) -> list[Patient]:
    found = []
    for number in range(count):
        sex = "1" if number % 2 else "2"
        body = f"{sex}{60 + number % 40:02d}{1 + number % 12:02d}97209{number:03d}"[:13]
        body = body.ljust(13, "0")
        ins = f"{body}{97 - int(body) % 97:02d}"
        found.append(
            Patient(
                ins=ins,
                ipp=f"B{number:07d}",
                family=f"{rng.choice(FAMILIES)}{number}",
                given=rng.choice(GIVEN),
                birth=date(1960 + number % 40, 1 + number % 12, 1 + number % 28),
                sex="M" if sex == "1" else "F",
            )
        )
    return found


def _cda(patient: Patient, number: int, pdf: bytes) -> bytes:
    """The sample level-1 CDA for ``patient``: its INS and traits, an id of its own, the PDF."""
    text = SAMPLE.read_text(encoding="utf-8")
    start = text.index('representation="B64">') + len('representation="B64">')
    end = text.index("</text>", start)
    text = text[:start] + base64.b64encode(pdf).decode() + text[end:]
    for old, new in (
        ('extension="248067500000123"', f'extension="{patient.ins}"'),
        ("1.2.250.1.213.1.4.10", INS_NIR),
        ('extension="CR-000417"', f'extension="CR-B{number:07d}"'),
    ):
        text = text.replace(old, new)
    return text.encode("utf-8")


def _message(patient: Patient, number: int, pdf: bytes) -> bytes:
    cda = _cda(patient, number, pdf)
    doc = make_document(content=cda, number=number)
    doc = dataclasses.replace(
        doc,
        mime_type="text/xml",
        patient_ins=patient.ins,
        patient_ins_oid=INS_NIR,
        size=len(cda),
        sha1_hex=hashlib.sha1(cda, usedforsecurity=False).hexdigest(),
    )
    msg = EmailMessage()
    msg["From"], msg["To"] = SENDER, APP
    msg["Subject"] = f"XDM/1.0/DDM+Compte rendu {patient.family} {patient.given}"
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg.set_content("Compte rendu en pièce jointe.")
    msg.add_attachment(
        xds.xdm_package(doc), maintype="application", subtype="zip", filename="IHE_XDM.zip"
    )
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@contextmanager
def _serving(path: Path, factory: Callable[[], Any]) -> Iterator[None]:
    """An LMTP server (``factory`` makes its protocol) on the unix socket ``path``."""
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), asyncio.Event()

    async def run() -> None:
        server = await loop.create_unix_server(factory, path=str(path))
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


class _DiskHandler:
    """The baseline: each message written to its own file and fsync'd, then 250."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
            name = self.folder / f"{self.count:08d}.eml"
        await asyncio.to_thread(_write_synced, name, envelope.original_content)
        return "\r\n".join("250 2.0.0 stored" for _ in envelope.rcpt_tos)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _deliver(path: Path, messages: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Deliver ``messages`` by ``concurrency`` LMTP clients; elapsed seconds and latencies."""
    chunks = [messages[i::concurrency] for i in range(concurrency)]

    def one_client(chunk: list[bytes]) -> list[float]:
        latencies = []
        with smtplib.LMTP(str(path), timeout=60) as client:
            for raw in chunk:
                t0 = time.perf_counter()
                refused = client.sendmail(SENDER, [APP], raw)
                latencies.append((time.perf_counter() - t0) * 1000)
                if refused:
                    raise RuntimeError(f"refused: {refused}")
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one_client, chunks))
    return time.perf_counter() - started, [ms for part in results for ms in part]


def _region(tmp: Path, url: str, patients: list[Patient]) -> tuple[Any, TestClient, Database]:
    upgrade_head(url)
    settings = Settings(
        _env_file=None,
        data_dir=tmp / "var",
        database_url=url,
        base_url="http://bench",
        oidc_issuer="",
        storage_backend="fs",
    )
    app = create_app(settings)
    client = TestClient(app)
    client.__enter__()
    db: Database = app.state.db
    make_region(app, client, db, tmp)
    config = app.state.identity_config
    with db.transaction() as session:
        for p in patients:
            identity_service.feed(
                session,
                app.state.matcher,
                person(CHU_OID, p.ipp, ins=p.ins, status="QUAL", birth_name=p.family,
                       given_names=[p.given], birth_date=p.birth, sex=p.sex),
                actor="bench",
                config=config,
            )  # fmt: skip
        service.add_mailbox(session, NewMailbox(APP, "APP", finess=CHU), domain=DOMAIN)
        applicative.set_software(session, APP, "127.0.0.1:1")
    return app, client, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--pdf-size", type=int, default=100_000)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rng = random.Random(14)
    runs = len(levels)
    patients = _patients(args.messages * runs, rng)
    pdf = b"%PDF-1.7\n" + rng.randbytes(args.pdf_size - 9)
    messages = [_message(p, n + 1, pdf) for n, p in enumerate(patients)]
    size_kb = sum(len(m) for m in messages) / len(messages) / 1000
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-pfi-")))
        if args.postgres:
            url = stack.enter_context(pg_database(PG_ADMIN_URL))
        else:
            url = f"sqlite:///{tmp / 'enrs.db'}"
        app, client, db = _region(tmp, url, patients)
        stack.callback(client.__exit__, None, None, None)
        filer = applicative.XdmFiler(app.state.identity_config, app.state.storage)
        intake = lmtp.Intake(db, "/nonexistent", filer)
        handler = lmtp.LmtpHandler(intake)
        disk = tmp / "baseline"
        disk.mkdir()
        print(
            f"{'PostgreSQL' if args.postgres else 'SQLite'}: {args.messages} messages per run "
            f"(one CDA with a {args.pdf_size // 1000} KB PDF each, {size_kb:.0f} KB on the wire)"
        )
        print("| clients | server | messages/s | p50 ms | p95 ms | ratio to baseline |")
        print("|---|---|---|---|---|---|")
        for index, level in enumerate(levels):
            batch = messages[index * args.messages : (index + 1) * args.messages]
            socket = tmp / f"base-{level}.sock"
            with _serving(socket, lambda: LMTP(_DiskHandler(disk), hostname="base")):
                base_time, base_lat = _deliver(socket, batch, level)
            socket = tmp / f"enrs-{level}.sock"
            with _serving(socket, lambda: LMTP(handler, hostname="enrs-lmtp")):
                enrs_time, enrs_lat = _deliver(socket, batch, level)
            base_rate, enrs_rate = len(batch) / base_time, len(batch) / enrs_time
            for name, rate, lat in (
                ("file + fsync", base_rate, base_lat),
                ("ENRS", enrs_rate, enrs_lat),
            ):
                p50, p95 = percentiles([round(ms * 1000) for ms in lat], (50, 95))
                print(
                    f"| {level} | {name} | {rate:,.1f} | {p50 / 1000:.1f} | {p95 / 1000:.1f} "
                    f"| {rate / base_rate:.2f} |"
                )
        with db.transaction(write=False) as session:
            filed = session.scalar(select(func.count()).select_from(DocumentEntry))
            queued = session.scalar(select(func.count()).select_from(OutboundMessage))
        expected = args.messages * runs
        print(f"filed {filed} documents, queued {queued} MDMs (expected {expected} each)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MB (clients and servers in one process)")
        if filed != expected or queued != expected:
            sys.exit("not every message was filed: the figures above do not count")


if __name__ == "__main__":
    main()
