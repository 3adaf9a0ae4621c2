"""Deletions through an applicative mailbox: a METADATA.XML DocumentEntry whose status is
Deprecated withdraws the sender's earlier version (``entered-in-error``) and the facility
software gets an ``MDM^T04`` for it; 900 / 901 when it cannot, nothing changed."""

from __future__ import annotations

import base64
import io
import itertools
import time
import zipfile
from email.message import Message
from pathlib import Path

import hl7
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.documents import xds
from enrs.documents.models import DocumentEntry
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.outbound.models import OutboundMessage
from enrs.messaging import applicative, service
from enrs.messaging.applicative import IntegrationError
from enrs.messaging.service import NewMailbox
from tests.documents.world import CHU, CHU_OID, CLINIC, IPP
from tests.messaging.mail import DOMAIN, MailServers
from tests.messaging.test_applicative import (
    APP,
    CDA_INS,
    ME,
    _app_region,
    _archive,
    _cda,
    _inbox,
    _mail,
    _mailboxes,
    _Software,
    _submit,
)
from tests.support.identities import person
from tests.support.live_server import free_port

FIRST = "1.2.250.1.999.7.1.2024.31^CR-000417"  # the uniqueId of the sample CDA
OTHER_APP = f"dpi.other@{DOMAIN}"


def _deletion(unique_id: str, number: int, *, with_file: bool = False) -> bytes:
    """An IHE_XDM whose one DocumentEntry is Deprecated: its sender deletes ``unique_id``.
    Without ``with_file`` the archive holds no document file (none is needed)."""
    packed = _archive(_cda(), number=number)
    source, out = zipfile.ZipFile(io.BytesIO(packed)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as rewritten:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.endswith("METADATA.XML"):
                own = f'value="1.2.250.1.999.1.1.4.{number}"'.encode()
                assert data.count(own) == 1 and data.count(b"<rim:ExtrinsicObject ") == 1
                data = data.replace(own, f'value="{unique_id}"'.encode()).replace(
                    b"<rim:ExtrinsicObject ",
                    f'<rim:ExtrinsicObject status="{xds.STATUS_DEPRECATED}" '.encode(),
                )
            elif member.filename.endswith("DOC0001.XML") and not with_file:
                continue
            rewritten.writestr(member, data)
    return out.getvalue()


def _together(first: bytes, second: bytes) -> bytes:
    """One archive of two submission sets: ``first``'s, and ``second``'s as SUBSET02."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as merged:
        with zipfile.ZipFile(io.BytesIO(first)) as one:
            for member in one.infolist():
                merged.writestr(member, one.read(member))
        with zipfile.ZipFile(io.BytesIO(second)) as two:
            for member in two.infolist():
                if member.filename.startswith("IHE_XDM/SUBSET01/"):
                    name = member.filename.replace("SUBSET01", "SUBSET02")
                    merged.writestr(name, two.read(member))
    return out.getvalue()


class _Filing:
    """The CHU's APP mailbox's filer, called as the LMTP intake calls it."""

    def __init__(self, app: FastAPI, db: Database, config: IdentityConfig) -> None:
        self.db = db
        self.filer = applicative.XdmFiler(config, app.state.storage)
        self.numbers = itertools.count(1)

    def integrate(self, archive: bytes, address: str = APP) -> None:
        with self.db.transaction() as session:
            box = service.mailbox(session, address)
            assert box is not None
            mail = _mail(mdn=False, archive=archive)
            self.filer(session, box, applicative.Received(ME, address, b""), mail, archive)

    def refused(self, archive: bytes, address: str = APP) -> int:
        with pytest.raises(IntegrationError) as error:
            self.integrate(archive, address)
        return error.value.code

    def state(self) -> tuple[dict[str, str], list[str]]:
        """The documents' statuses by uniqueId, and the queued MDMs' summaries."""
        with self.db.transaction(write=False) as session:
            entries = {e.unique_id: e.status for e in session.scalars(select(DocumentEntry))}
            queued = session.scalars(select(OutboundMessage).order_by(OutboundMessage.id))
            return entries, [m.summary for m in queued]


def test_a_deletion_withdraws_the_document_and_queues_a_t04(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    filing = _Filing(app, db, _app_region(app, client, db, tmp_path)[1])
    filing.integrate(_archive(_cda()))
    filing.integrate(_deletion(FIRST, number=2, with_file=True))  # a file given is ignored
    entries, summaries = filing.state()
    assert entries == {FIRST: "entered-in-error"}  # kept, not deleted
    assert summaries == [f"MDM^T02 {FIRST}", f"MDM^T04 {FIRST}"]
    with db.transaction(write=False) as session:
        [entry] = session.scalars(select(DocumentEntry)).all()
        body = session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)).all()[1].body
        [audited] = session.scalars(
            select(AuditRecord).where(AuditRecord.interaction == "MDM^T04")
        ).all()
    assert audited.entity_ref == f"DocumentReference/{entry.resource_id}"
    assert audited.agent_id == f"mss:{APP}" and audited.patient_ref
    message = hl7.parse(body.replace("\n", "\r"))
    assert str(message.segment("MSH")[9]) == "MDM^T04^MDM_T02"
    txa = message.segment("TXA")
    assert message.unescape(str(txa[12])) == FIRST and message.unescape(str(txa[13])) == FIRST
    assert str(txa[17]) == "DE"
    obx = message.segment("OBX")
    assert str(obx[11]) == "D"
    assert base64.b64decode(str(obx[5][0][4])) == _cda()  # the stored document
    assert CDA_INS in str(message.segment("PID")[3])


def test_a_deletion_of_no_current_own_version_is_refused(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    filing = _Filing(app, db, _app_region(app, client, db, tmp_path)[1])
    # Unknown to the repository: 900, nothing changed.
    assert filing.refused(_deletion(FIRST, number=1)) == 900
    assert filing.state() == ({}, [])

    filing.integrate(_archive(_cda()))
    before = filing.state()
    # Another structure's APP mailbox may not delete the CHU's document: 901.
    with db.transaction() as session:
        service.add_mailbox(session, NewMailbox(OTHER_APP, "APP", finess=CLINIC), domain=DOMAIN)
        applicative.set_software(session, OTHER_APP, "127.0.0.1:1")
    assert filing.refused(_deletion(FIRST, number=2), OTHER_APP) == 901
    assert filing.state() == before

    # A mail of a new document and a deletion that fails is refused whole.
    second = _cda(**{'extension="CR-000417"': 'extension="CR-000418"'})
    unknown = "1.2.250.1.999.7.1.2024.31^CR-000999"
    mixed = _together(_archive(second, number=3), _deletion(unknown, number=4))
    assert filing.refused(mixed) == 900
    assert filing.state() == before

    # Withdrawn once: a second deletion finds no current version (900), nothing queued.
    filing.integrate(_deletion(FIRST, number=5))
    after = filing.state()
    assert after[0] == {FIRST: "entered-in-error"}
    assert filing.refused(_deletion(FIRST, number=6)) == 900
    assert filing.state() == after


def test_a_mail_of_new_documents_and_deletions_is_filed_whole(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    filing = _Filing(app, db, _app_region(app, client, db, tmp_path)[1])
    filing.integrate(_archive(_cda()))
    second = "1.2.250.1.999.7.1.2024.31^CR-000418"
    new = _cda(**{'extension="CR-000417"': 'extension="CR-000418"'})
    filing.integrate(_together(_archive(new, number=2), _deletion(FIRST, number=3)))
    entries, summaries = filing.state()
    assert entries == {FIRST: "entered-in-error", second: "current"}
    assert sorted(summaries[1:]) == [f"MDM^T02 {second}", f"MDM^T04 {FIRST}"]


# --- through Postfix, the LMTP server and the software's MLLP listener -------------------------


def _disposition(report: Message) -> str:
    [notification] = [
        p for p in report.walk() if p.get_content_type() == "message/disposition-notification"
    ]
    text = " ".join(str(notification.get_payload(0)).split())
    return text.partition("Disposition: ")[2]


def test_the_sender_deletes_by_mail_and_the_software_gets_the_t04(
    mail: MailServers, app: FastAPI, db: Database
) -> None:
    port = free_port()
    software = _Software(port)
    software.start()
    try:
        _mailboxes(mail, mllp=f"127.0.0.1:{port}")
        config: IdentityConfig = app.state.identity_config
        with db.transaction() as session:
            domains.add(session, config, CHU_OID, namespace="CHU", owner=CHU)
            identity_service.feed(
                session, app.state.matcher, person(CHU_OID, IPP, ins=CDA_INS, status="QUAL"),
                actor="test", config=config,
            )  # fmt: skip
        # Postfix does not keep the order of mails queued together: each mail is sent once
        # the previous one is answered, so the second deletion is the one that finds nothing.
        mails = [
            _mail(mdn=True, archive=_archive(_cda())),
            _mail(mdn=True, archive=_deletion(FIRST, number=2)),
            _mail(mdn=True, archive=_deletion(FIRST, number=3)),  # done already
        ]
        for count, sent in enumerate(mails, start=1):
            _submit(mail, sent)
            answers = _inbox(mail, expected=count, wait=60)
        deadline = time.monotonic() + 30
        while len(software.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        software.stop()
    assert [a["In-Reply-To"] for a in answers] == [m["Message-ID"] for m in mails]
    assert [_disposition(a) for a in answers] == [
        "automatic-action/MDN-sent-automatically; processed",
        "automatic-action/MDN-sent-automatically; processed",
        "automatic-action/MDN-sent-automatically; processed/Error: 900^Version de document"
        " incorrecte pour le remplacement ou la suppression",
    ]
    first, deleted = (hl7.parse(text) for text in software.received)
    assert str(first.segment("MSH")[9]) == "MDM^T02^MDM_T02"
    assert str(deleted.segment("MSH")[9]) == "MDM^T04^MDM_T02"
    assert deleted.unescape(str(deleted.segment("TXA")[12])) == FIRST
    assert str(deleted.segment("OBX")[11]) == "D"
    with db.transaction(write=False) as session:
        assert [e.status for e in session.scalars(select(DocumentEntry))] == ["entered-in-error"]
