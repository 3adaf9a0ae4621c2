"""Applicative mailboxes (APP): Postfix hands their mail to ENRS's LMTP server, the sender is
answered (integration error mail, RFC 8098 MDN), and the facility software's MDMs go through a
durable queue to a real MLLP listener, kept while it is down."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import hashlib
import io
import itertools
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import hl7
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.documents import xds
from enrs.documents.models import DocumentEntry
from enrs.documents.xds import XdsPatientInfo
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.kit.db import Database
from enrs.kit.outbound.models import OutboundMessage
from enrs.messaging import applicative, config, lmtp, mdm, service
from enrs.messaging.applicative import IntegrationError
from enrs.messaging.service import InvalidMailbox, NewMailbox
from tests.documents.test_dmp_adapter import NIR, make_document
from tests.documents.world import CHU_OID, CLINIC, IPP, Region, make_region
from tests.messaging.mail import CHU, DOCTOR, DOMAIN, PASSWORD, MailServers, prepare_directory
from tests.support.identities import person
from tests.support.live_server import free_port

ME = f"dr.un@{DOMAIN}"
APP = f"dpi.chu@{DOMAIN}"
SUBJECT = "XDM/1.0/DDM+Compte rendu DUPONT Jean 01/02/1960"


def _mailboxes(mail: MailServers, mllp: str = "127.0.0.1:1") -> None:
    done = mail.enrs(
        "messaging", "mailbox", "add", ME, "--type", "PER", "--rpps", DOCTOR, "--password-stdin",
        stdin=PASSWORD,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = mail.enrs(
        "messaging", "mailbox", "add", APP, "--type", "APP", "--finess", CHU, "--mllp", mllp
    )
    assert done.returncode == 0, done.stderr


def _submit(mail: MailServers, msg: EmailMessage) -> None:
    mail.submit(ME, msg)


def _inbox(mail: MailServers, *, expected: int, wait: float = 30) -> list[EmailMessage]:
    return mail.messages(ME, expected=expected, wait=wait)


def _mail(*, mdn: bool, archive: bytes | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ME, APP, SUBJECT
    msg["Message-ID"] = f"<{time.monotonic_ns()}@{DOMAIN}>"
    if mdn:
        msg["Disposition-Notification-To"] = ME
    msg.set_content("Compte rendu joint.")
    if archive is not None:
        msg.add_attachment(archive, "application", "zip", filename="IHE_XDM.zip")
    return msg


def test_a_mail_that_cannot_be_integrated_is_answered_with_the_code(mail: MailServers) -> None:
    _mailboxes(mail)
    transport = (mail.mail_dir / "postfix" / "transport").read_text()
    assert transport == f"{APP} lmtp:unix:{mail.mail_dir}/run/enrs-lmtp\n"

    # No MDN asked: a plain mail, the original attached.
    plain = _mail(mdn=False)
    _submit(mail, plain)
    [answer] = _inbox(mail, expected=1)
    assert answer["Subject"] == f"[KO Intégration système !][906] {SUBJECT}"
    assert answer["From"] == APP and answer["In-Reply-To"] == plain["Message-ID"]
    [original] = [p for p in answer.walk() if p.get_content_type() == "message/rfc822"]
    assert original.get_payload(0)["Message-ID"] == plain["Message-ID"]
    assert "IHE_XDM.zip" in answer.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    # MDN asked by the Return-Path: an RFC 8098 report with the error in Disposition.
    asked = _mail(mdn=True, archive=b"PK\x05\x06" + bytes(18))
    _submit(mail, asked)
    answers = _inbox(mail, expected=2)
    assert len(answers) == 2
    report = answers[1]
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "disposition-notification"
    [notification] = [
        p for p in report.walk() if p.get_content_type() == "message/disposition-notification"
    ]
    fields = " ".join(notification.as_string(policy=email.policy.SMTP).split())  # unfolded
    assert f"Original-Message-ID: {asked['Message-ID']}" in fields
    assert f"Final-Recipient: rfc822;{APP}" in fields
    assert (
        "Disposition: automatic-action/MDN-sent-automatically; processed/Error: 906^Autre erreur"
        in fields
    )

    # A readable archive for a patient the identity server does not know: 902.
    _submit(mail, _mail(mdn=False, archive=xds.xdm_package(make_document())))
    unknown = _inbox(mail, expected=3)[2]
    assert unknown["Subject"] == f"[KO Intégration système !][902] {SUBJECT}"
    assert NIR in unknown.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # A broken archive: 906, with the reader's reason.
    _submit(mail, _mail(mdn=False, archive=b"PK\x03\x04 not a zip"))
    broken = _inbox(mail, expected=4)[3]
    assert broken["Subject"] == f"[KO Intégration système !][906] {SUBJECT}"
    assert "zip" in broken.get_body(("plain",)).get_content().lower()  # type: ignore[union-attr]
    # The APP mailbox's mail went to ENRS, never to a Dovecot mailbox.
    assert not (mail.mail_dir / "store" / DOMAIN / "dpi.chu").exists()


def _postqueue(mail: MailServers, flag: str) -> str:
    return subprocess.run(
        [config.program("postqueue"), "-c", str(mail.mail_dir / "postfix"), flag],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


def test_postfix_keeps_the_mail_while_the_enrs_lmtp_server_is_away(mail: MailServers) -> None:
    _mailboxes(mail)
    (mail.mail_dir / "run" / "enrs-lmtp").unlink()  # ENRS's LMTP server unreachable
    _submit(mail, _mail(mdn=False))
    deadline = time.monotonic() + 30
    queue = ""
    while time.monotonic() < deadline:
        queue = _postqueue(mail, "-p")
        if APP in queue and "enrs-lmtp" in queue:
            break
        time.sleep(0.3)
    assert APP in queue and "enrs-lmtp" in queue, queue  # deferred, with the reason
    assert _inbox(mail, expected=1, wait=2) == []  # no answer: nothing was decided

    mail.stop()  # the platform restarts: the queue is on disk
    mail.start()
    _postqueue(mail, "-f")  # Postfix's next queue run, at once
    [answer] = _inbox(mail, expected=1)
    assert answer["Subject"] == f"[KO Intégration système !][906] {SUBJECT}"
    assert APP not in _postqueue(mail, "-p")


def test_an_mllp_endpoint_is_for_an_app_mailbox_only(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    try:
        with db.transaction() as session:
            service.add_mailbox(
                session, NewMailbox(ME, "PER", rpps=DOCTOR), domain=DOMAIN
            )  # fmt: skip
            service.add_mailbox(session, NewMailbox(APP, "APP", finess=CHU), domain=DOMAIN)
            with pytest.raises(InvalidMailbox, match="only APP"):
                applicative.set_software(session, ME, "127.0.0.1:2575")
            with pytest.raises(InvalidMailbox, match="HOST:PORT"):
                applicative.set_software(session, APP, "127.0.0.1")
            box = applicative.set_software(session, APP, "127.0.0.1:2575")
            with pytest.raises(ValueError, match="MDM\\^T99"):
                applicative.queue_mdm(session, box, _document("bad", event="T99"), facility="x")
    finally:
        db.dispose()
    with pytest.raises(ValueError, match="code 907"):
        IntegrationError(907)


def _document(control: str, *, event: str = "T02") -> mdm.MdmDocument:
    return mdm.MdmDocument(
        event=event,
        control_id=control,
        patient_ins="160012A123456",
        patient_rri="RRI42",
        family="DUPONT",
        given="Jean",
        unique_id="1.2.250.1.999.1^doc1",
        type_code="11490-0",
        type_display="Lettre de sortie",
        mime_type="text/xml",
        content=b"<ClinicalDocument/>",
        sender=ME,
        recipients=[APP],
        receiving_application=APP,
        receiving_facility=CHU,
        created=datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        flags=frozenset({"DESTMSSANTEPS"}),
    )


class _Software:
    """The facility software: an MLLP listener that acknowledges every message (AA)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[str] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.settimeout(0.2)
        self._server = server
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._server is not None
        while self._server.fileno() != -1:
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                buffer = b""
                while chunk := conn.recv(65536):
                    buffer += chunk
                    while b"\x1c\r" in buffer:
                        block, buffer = buffer.split(b"\x1c\r", 1)
                        text = block.lstrip(b"\x0b").decode()
                        self.received.append(text)
                        control = hl7.parse(text).segment("MSH")[10]
                        ack = (
                            f"MSH|^~\\&|DPI|CHU|ENRS|ENRS|20261201||ACK|A{control}|P|2.6\r"
                            f"MSA|AA|{control}\r"
                        )
                        conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def _courier(db: Database) -> Iterator[None]:
    halt = threading.Event()
    thread = threading.Thread(
        target=applicative.deliver_software_queues, args=(db, halt), kwargs={"poll": 0.1}
    )
    thread.start()
    try:
        yield
    finally:
        halt.set()
        thread.join(timeout=30)


def test_mdms_wait_while_the_software_is_down(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    port = free_port()
    db = Database(database_url)
    try:
        with db.transaction() as session:
            service.add_mailbox(session, NewMailbox(APP, "APP", finess=CHU), domain=DOMAIN)
            box = applicative.set_software(session, APP, f"127.0.0.1:{port}")
            applicative.queue_mdm(session, box, _document("M1"), facility="ENRS")
            applicative.queue_mdm(session, box, _document("M2", event="T10"), facility="ENRS")
        software = _Software(port)
        with _courier(db):
            time.sleep(1.5)  # the software is down: tried, kept
            with db.transaction(write=False) as session:
                rows = session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)).all()
                assert [r.status for r in rows] == ["pending", "pending"]
                assert rows[0].attempts >= 1 and "127.0.0.1" in (rows[0].last_error or "")
            software.start()
            deadline = time.monotonic() + 30
            while len(software.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
        software.stop()
    finally:
        with db.transaction(write=False) as session:
            statuses = [r.status for r in session.scalars(select(OutboundMessage))]
        db.dispose()
    assert statuses == ["sent", "sent"]
    first, second = (hl7.parse(text) for text in software.received)  # in order
    assert str(first.segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert str(first.segment("MSH")[12]) == "2.6"
    assert str(second.segment("MSH")[9]) == "MDM^T10^MDM_T02"
    obx = first.segments("OBX")
    assert str(obx[0][2]) == "ED" and str(obx[0][11]) == "F"
    assert base64.b64decode(str(obx[0][5][0][4])) == b"<ClinicalDocument/>"
    assert str(obx[1][3][0][0]) == "DESTMSSANTEPS" and str(obx[1][11]) == "F"
    assert str(second.segments("OBX")[0][11]) == "C"
    prt = [str(seg[15]) for seg in first.segments("PRT")]
    assert prt == [ME, APP]
    assert "160012A123456" in str(first.segment("PID")[3])


def test_mdm_fields_are_escaped() -> None:
    doc = _document("E1")
    built = mdm.build(
        mdm.MdmDocument(**{**doc.__dict__, "title": "A|B^C&D~E\\F\nG"}), sending_facility="ENRS"
    )
    obx = hl7.parse(built).segment("OBX")
    assert str(obx[3][0][1]) == "A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F\\X0D\\G"
    with pytest.raises(ValueError, match="not MetaDMP"):
        mdm.build(
            mdm.MdmDocument(**{**doc.__dict__, "flags": frozenset({"NOPE"})}),
            sending_facility="ENRS",
        )


@contextmanager
def _lmtp_server(path: Path, db: Database) -> Iterator[None]:
    """ENRS's LMTP server in a thread of the test, on ``path``."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    filer = applicative.XdmFiler(IdentityConfig("1.2.250.1.999.1"))
    intake = lmtp.Intake(db, "/nonexistent", filer)
    thread = threading.Thread(
        target=loop.run_until_complete, args=(lmtp.serve(path, intake, stop),), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_the_lmtp_server_defers_when_the_database_is_unreachable(
    database_url: str, tmp_path: Path
) -> None:
    path = Path(tempfile.mkdtemp(prefix="enrs-lmtp-", dir="/tmp")) / "lmtp"
    unreachable = Database(f"postgresql+psycopg://enrs@127.0.0.1:{free_port()}/enrs")
    reachable = Database(database_url)
    msg = _mail(mdn=False).as_bytes()
    try:
        with _lmtp_server(path, unreachable), smtplib.LMTP(str(path), timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as deferred:
                client.sendmail(ME, [APP], msg)
            assert deferred.value.smtp_code == 451  # Postfix keeps it and tries again
        again = path.with_name("lmtp-again")  # a new socket: the first one may linger a moment
        with _lmtp_server(again, reachable), smtplib.LMTP(str(again), timeout=30) as client:
            with pytest.raises(smtplib.SMTPDataError) as unknown:
                client.sendmail(ME, [APP], msg)  # no such APP mailbox in this database
            assert unknown.value.smtp_code == 550
    finally:
        unreachable.dispose()
        reachable.dispose()
        shutil.rmtree(path.parent, ignore_errors=True)


def test_an_mdn_only_when_asked_by_the_return_path() -> None:
    asked = applicative.open_message(_mail(mdn=True).as_bytes())
    done = applicative.answer(asked, mailbox=APP, return_path=f"<{ME}>", error=None)
    assert done is not None
    report, envelope = done
    assert envelope == ""  # an MDN has a null reverse path
    assert report.get_content_type() == "multipart/report" and report["To"] == ME
    text = report.as_string()
    assert "Disposition: automatic-action/MDN-sent-automatically; processed\r\n" in text
    assert "/Error" not in text
    # Asked, but for another address than the Return-Path: no MDN; on error a plain mail.
    other = f"secretariat@{DOMAIN}"
    assert applicative.answer(asked, mailbox=APP, return_path=other, error=None) is None
    error = IntegrationError(902, "INS 160012A123456")
    done = applicative.answer(asked, mailbox=APP, return_path=other, error=error)
    assert done is not None
    plain, envelope = done
    assert envelope == APP and plain["To"] == other
    assert plain["Subject"] == f"[KO Intégration système !][902] {SUBJECT}"
    assert plain.get_content_type() == "multipart/mixed"
    # An accented label is written without its accents in the notification's fields.
    report = applicative.mdn(asked, mailbox=APP, error=IntegrationError(901))
    assert "processed/Error: 901^Auteur non autorise a remplacer" in report.as_string()


# --- filing into the repository ---------------------------------------------------------------

INS_NIR = "1.2.250.1.213.1.4.8"
CDA_INS = "2610497209123"
CDA_INS = f"{CDA_INS}{97 - int(CDA_INS) % 97:02d}"
SAMPLE = Path(__file__).parents[1] / "documents" / "data" / "n1_pdf.xml"


def _cda(**changes: str) -> bytes:
    text = SAMPLE.read_text(encoding="utf-8")
    text = text.replace("248067500000123", CDA_INS).replace("1.2.250.1.213.1.4.10", INS_NIR)
    for old, new in changes.items():
        text = text.replace(old, new)
    return text.encode("utf-8")


def _archive(cda: bytes, ins: str = CDA_INS, number: int = 1) -> bytes:
    doc = make_document(content=cda, number=number)
    doc = dataclasses.replace(doc, mime_type="text/xml", patient_ins=ins, patient_ins_oid=INS_NIR)
    return xds.xdm_package(doc)


def _app_region(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> tuple[Region, IdentityConfig]:
    """The region, the patient qualified by the CHU, and the CHU's APP mailbox with its
    software's endpoint."""
    region = make_region(app, client, db, tmp_path)
    config: IdentityConfig = app.state.identity_config
    with db.transaction() as session:
        identity_service.feed(
            session, app.state.matcher, person(CHU_OID, IPP, ins=CDA_INS, status="QUAL"),
            actor="test", config=config,
        )  # fmt: skip
        service.add_mailbox(session, NewMailbox(APP, "APP", finess=CHU), domain=DOMAIN)
        applicative.set_software(session, APP, "127.0.0.1:1")
    return region, config


def test_an_app_mailbox_files_the_documents_and_queues_their_mdm(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    region, config = _app_region(app, client, db, tmp_path)
    filer = applicative.XdmFiler(config, app.state.storage)

    def integrate(archive: bytes) -> None:
        with db.transaction() as session:
            box = service.mailbox(session, APP)
            assert box is not None
            received = applicative.Received(ME, APP, b"")
            filer(session, box, received, _mail(mdn=False, archive=archive), archive)

    def refused(archive: bytes) -> int:
        with pytest.raises(IntegrationError) as error:
            integrate(archive)
        return error.value.code

    # The failures first: nothing filed, nothing queued.
    assert refused(_archive(_cda(), ins="1" + CDA_INS[1:-2] + "00")) in (902, 903)
    assert refused(_archive(_cda(**{CDA_INS: "2610497209124" + "00"}))) == 904
    no_birth = _cda(**{'<birthTime value="19800614"/>': ""})
    assert refused(_archive(no_birth)) == 905
    with db.transaction(write=False) as session:
        assert session.scalars(select(DocumentEntry)).all() == []
        assert session.scalars(select(OutboundMessage)).all() == []

    integrate(_archive(_cda()))
    with db.transaction(write=False) as session:
        [entry] = session.scalars(select(DocumentEntry)).all()
        [queued] = session.scalars(select(OutboundMessage)).all()
    assert entry.type_code == "11502-2" and entry.author_rpps
    message = hl7.parse(queued.body.replace("\n", "\r"))
    assert str(message.segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert CDA_INS in str(message.segment("PID")[3])
    assert region.rri


def _replacement(new_id: str, parent: str) -> bytes:
    """The sample CDA as a new version (id ``CR-…new_id``) replacing the one whose id
    extension is ``parent`` (``relatedDocument`` RPLC)."""
    related = (
        '<relatedDocument typeCode="RPLC"><parentDocument>'
        f'<id root="1.2.250.1.999.7.1.2024.31" extension="{parent}"/>'
        "</parentDocument></relatedDocument>\n  <componentOf>"
    )
    return _cda(**{'extension="CR-000417"': f'extension="{new_id}"', "<componentOf>": related})


def test_a_replacement_supersedes_the_current_version_and_queues_a_t10(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    config = _app_region(app, client, db, tmp_path)[1]
    other_app = f"dpi.other@{DOMAIN}"
    filer = applicative.XdmFiler(config, app.state.storage)
    numbers = itertools.count(1)

    def integrate(cda: bytes, address: str = APP) -> None:
        with db.transaction() as session:
            box = service.mailbox(session, address)
            assert box is not None
            archive = _archive(cda, number=next(numbers))
            mail = _mail(mdn=False, archive=archive)
            filer(session, box, applicative.Received(ME, address, b""), mail, archive)

    def refused(cda: bytes, address: str = APP) -> int:
        with pytest.raises(IntegrationError) as error:
            integrate(cda, address)
        return error.value.code

    def entries() -> dict[str, str]:
        with db.transaction(write=False) as session:
            return {e.unique_id: e.status for e in session.scalars(select(DocumentEntry))}

    first = "1.2.250.1.999.7.1.2024.31^CR-000417"
    second = "1.2.250.1.999.7.1.2024.31^CR-000418"
    # A replacement of a document the patient does not have: 900, nothing filed.
    assert refused(_replacement("CR-000418", "CR-000417")) == 900
    assert entries() == {}

    integrate(_cda())
    integrate(_replacement("CR-000418", "CR-000417"))
    assert entries() == {first: "superseded", second: "current"}
    with db.transaction(write=False) as session:
        bodies = [m.body for m in session.scalars(select(OutboundMessage).order_by("id"))]
    assert len(bodies) == 2
    message = hl7.parse(bodies[1].replace("\n", "\r"))
    assert str(message.segment("MSH")[9]) == "MDM^T10^MDM_T02"
    assert message.unescape(str(message.segment("TXA")[13])) == first
    assert str(message.segment("OBX")[11]) == "C"

    # The first version again: it is no longer the current one (900).
    assert refused(_replacement("CR-000419", "CR-000417")) == 900
    # Another structure's mailbox may not replace the CHU's document (901).
    with db.transaction() as session:
        service.add_mailbox(session, NewMailbox(other_app, "APP", finess=CLINIC),
                            domain=DOMAIN)  # fmt: skip
    assert refused(_replacement("CR-000419", "CR-000418"), other_app) == 901
    assert entries() == {first: "superseded", second: "current"}


def test_a_pdf_of_an_archive_is_filed_from_its_metadata(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    config = _app_region(app, client, db, tmp_path)[1]
    filer = applicative.XdmFiler(config, app.state.storage)
    numbers = itertools.count(1)

    def pdf_archive(**changes: object) -> bytes:
        number = next(numbers)
        doc = make_document(number=number, patient_ins=CDA_INS, patient_ins_oid=INS_NIR)
        return xds.xdm_package(dataclasses.replace(doc, **changes))  # type: ignore[arg-type]

    def integrate(archive: bytes) -> None:
        with db.transaction() as session:
            box = service.mailbox(session, APP)
            assert box is not None
            mail = _mail(mdn=False, archive=archive)
            filer(session, box, applicative.Received(ME, APP, b""), mail, archive)

    def refused(archive: bytes) -> int:
        with pytest.raises(IntegrationError) as error:
            integrate(archive)
        return error.value.code

    assert refused(pdf_archive(source_patient_info=None)) == 905
    unknown_type = xds.XdsCode("00000-0", "2.16.840.1.113883.6.1", "?")
    assert refused(pdf_archive(type_code=unknown_type)) == 906
    not_pdf = b"plain text, not a PDF"
    assert (
        refused(
            pdf_archive(
                content=not_pdf,
                size=len(not_pdf),
                sha1_hex=hashlib.sha1(not_pdf, usedforsecurity=False).hexdigest(),
            )
        )
        == 906
    )
    with db.transaction(write=False) as session:
        assert session.scalars(select(DocumentEntry)).all() == []

    integrate(pdf_archive())
    with db.transaction(write=False) as session:
        [entry] = session.scalars(select(DocumentEntry)).all()
        [queued] = session.scalars(select(OutboundMessage)).all()
    assert entry.unique_id == "1.2.250.1.999.1.1.4.4"
    assert entry.type_code == "34133-9" and entry.author_rpps == "10001234567"
    assert entry.mime_type == "application/pdf"
    message = hl7.parse(queued.body.replace("\n", "\r"))
    assert str(message.segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert "MARTIN" in str(message.segment("PID")[5])
    assert "MASQUE_PS" in str(message)


def test_without_an_ins_the_patient_is_found_by_traits_with_certainty(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    config = _app_region(app, client, db, tmp_path)[1]
    numbers = itertools.count(1)
    ins_cx = f"{CDA_INS}^^^&amp;{INS_NIR}&amp;ISO^NH"  # as the XML writes them
    ipp_cx = f"{IPP}^^^&amp;{CHU_OID}&amp;ISO^PI"

    def archive_without_ins(info: XdsPatientInfo | None) -> bytes:
        """A PDF's archive whose metadata name the patient by the CHU's IPP, not by INS."""
        doc = make_document(number=next(numbers), patient_ins=CDA_INS, patient_ins_oid=INS_NIR)
        packed = xds.xdm_package(dataclasses.replace(doc, source_patient_info=info))
        source, out = zipfile.ZipFile(io.BytesIO(packed)), io.BytesIO()
        with zipfile.ZipFile(out, "w") as rewritten:
            for member in source.infolist():
                data = source.read(member)
                if member.filename.endswith("METADATA.XML"):
                    assert ins_cx.encode() in data
                    data = data.replace(ins_cx.encode(), ipp_cx.encode())
                rewritten.writestr(member, data)
        return out.getvalue()

    def integrate(archive: bytes, matcher: object) -> None:
        filer = applicative.XdmFiler(config, app.state.storage, matcher=matcher)  # type: ignore[arg-type]
        with db.transaction() as session:
            box = service.mailbox(session, APP)
            assert box is not None
            mail = _mail(mdn=False, archive=archive)
            filer(session, box, applicative.Received(ME, APP, b""), mail, archive)

    def refused(archive: bytes, matcher: object) -> int:
        with pytest.raises(IntegrationError) as error:
            integrate(archive, matcher)
        return error.value.code

    joseph = XdsPatientInfo("JOSEPH", "Marie-Line", date(1961, 4, 9), "F")
    stranger = XdsPatientInfo("DURAND", "Paul", date(1950, 1, 2), "M")
    matcher = app.state.matcher
    assert refused(archive_without_ins(joseph), None) == 903  # no matcher: INS only
    assert refused(archive_without_ins(None), matcher) == 903  # nothing to find them by
    assert refused(archive_without_ins(stranger), matcher) == 902
    with db.transaction(write=False) as session:
        assert session.scalars(select(DocumentEntry)).all() == []

    integrate(archive_without_ins(joseph), matcher)
    with db.transaction(write=False) as session:
        [entry] = session.scalars(select(DocumentEntry)).all()
        [queued] = session.scalars(select(OutboundMessage)).all()
    assert entry.mime_type == "application/pdf"
    message = hl7.parse(queued.body.replace("\n", "\r"))
    assert CDA_INS in str(message.segment("PID")[3])  # the region's qualified INS
