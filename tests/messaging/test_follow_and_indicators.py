"""Mailboxes follow the directory, and the operator's indicators (issue 14): a professional who
leaves the directory loses their mailbox's login and new mail (kept, back when they return);
each message Postfix accepts is counted for its sending and receiving mailboxes, shown to the
regional team as a portal page and a CSV."""

from __future__ import annotations

import csv
import html
import imaplib
import io
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from enrs.demo import DEMO_USERS, load_demo
from enrs.kit.db import Database
from enrs.kit.security.passwords import verify_password
from enrs.messaging import follow, indicators, policy, service
from enrs.messaging.service import InvalidMailbox, NewMailbox
from enrs.settings import Settings
from tests.conftest import Factory
from tests.directory.test_import import line, run, write
from tests.messaging.mail import (
    CHU,
    DOCTOR,
    DOMAIN,
    OTHER_DOCTOR,
    PASSWORD,
    MailServers,
    prepare_directory,
)
from tests.support.portal import log_in

ME, OTHER, SERVICE = f"dr.un@{DOMAIN}", f"dr.deux@{DOMAIN}", f"cardio@{DOMAIN}"


def _add(session: Session, address: str, kind: str, **bound: str) -> None:
    service.add_mailbox(
        session, NewMailbox(address, kind, password=PASSWORD, **bound), domain=DOMAIN
    )


def _status(db: Database) -> dict[str, str]:
    with db.transaction(write=False) as session:
        return {box.address: box.status for box in service.mailboxes(session)}


def _rcpt(session: Session, recipient: str) -> str:
    request = {"protocol_state": "RCPT", "sender": ME, "sasl_username": ME, "recipient": recipient}
    return policy.decide(session, DOMAIN, request)


def test_a_mailbox_follows_its_professional_in_the_directory(
    database_url: str, tmp_path: Path
) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    with db.transaction() as session:
        _add(session, ME, "PER", rpps=DOCTOR)
        _add(session, OTHER, "PER", rpps=OTHER_DOCTOR)
        _add(session, SERVICE, "ORG", finess=CHU)
    with db.transaction() as session:
        assert follow.follow_directory(session) == follow.Followed([], [])

    # The next extraction no longer has the second doctor: their mailbox closes.
    people = tmp_path / "PS_LibreAcces_Personne_activite_202612020000.txt"
    assert run(db, write(people, line(1, site=CHU)), removal_limit=None).error is None
    with db.transaction() as session:
        assert follow.follow_directory(session) == follow.Followed([OTHER], [])
        assert _rcpt(session, OTHER) == f"550 5.2.1 <{OTHER}>: this mailbox is inactive"
        assert _rcpt(session, SERVICE) == "DUNNO"
        with pytest.raises(InvalidMailbox, match=f"RPPS {OTHER_DOCTOR} is not active"):
            service.set_status(session, OTHER, "active")
    assert _status(db) == {SERVICE: "active", ME: "active", OTHER: "inactive"}

    # A mailbox the admin suspended stays suspended when its professional comes back.
    with db.transaction() as session:
        service.set_status(session, ME, "suspended")
    people = tmp_path / "PS_LibreAcces_Personne_activite_202612030000.txt"
    assert run(db, write(people, line(1, site=CHU), line(2, site=CHU))).error is None
    with db.transaction() as session:
        assert follow.follow_directory(session) == follow.Followed([], [OTHER])
    assert _status(db) == {SERVICE: "active", ME: "suspended", OTHER: "active"}
    db.dispose()


def test_messages_are_counted_per_mailbox_and_month(database_url: str, tmp_path: Path) -> None:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    with db.transaction() as session:
        _add(session, ME, "PER", rpps=DOCTOR)
        _add(session, SERVICE, "ORG", finess=CHU)
    tally = indicators.Tally()
    tally.accepted("A1", ME, SERVICE)
    tally.accepted("A1", ME, "dr.x@hopital.example")  # outside: counted for no one
    tally.accepted("B2", "dr.x@hopital.example", ME)
    tally.accepted("C3", ME, SERVICE)  # never ended (refused at DATA): counted nowhere
    november, december = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    with db.transaction() as session:
        for instance, when in (("A1", november), ("B2", december), ("A1", december)):
            ended = tally.ended(instance)
            if ended is not None:
                indicators.record(session, *ended, when=when)
    with db.transaction(write=False) as session:
        rows = indicators.report(session)
        assert rows == [
            indicators.Row("2026-11", "ORG", 0, 1, 1),
            indicators.Row("2026-11", "PER", 1, 0, 1),
            indicators.Row("2026-12", "PER", 0, 1, 1),
        ]
        assert indicators.report(session, since="2026-12") == rows[2:]
        assert indicators.open_mailboxes(session) == {"PER": 1, "ORG": 1, "APP": 0, "CAB": 0}
    parsed = list(csv.reader(io.StringIO(indicators.to_csv(rows)), delimiter=";"))
    assert parsed[0] == list(indicators.CSV_HEADER)
    assert parsed[1] == ["2026-11", "ORG", "0", "1", "1"]
    db.dispose()


def test_the_indicators_page_for_the_regional_team(
    client: TestClient, factory: Factory, db: Database
) -> None:
    factory.user("root", roles=("admin",))
    factory.user("alice")
    log_in(client, "alice")
    assert client.get("/admin/messagerie/indicateurs").status_code == 403
    assert client.get("/admin/messagerie/indicateurs.csv").status_code == 403
    client.cookies.clear()
    log_in(client, "root")
    page = client.get("/admin/messagerie/indicateurs")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "Boîtes aux lettres ouvertes" in text and "Aucun message compté" in text
    assert client.get("/admin/messagerie/indicateurs?since=2026-13").status_code == 400
    exported = client.get("/admin/messagerie/indicateurs.csv?since=2026-01")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.text == ";".join(indicators.CSV_HEADER) + "\n"


def _submit(mail: MailServers, login: str, sender: str, to: str, subject: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("Compte rendu.")
    mail.submit(login, msg)


def _can_log_in(mail: MailServers, login: str) -> bool:
    # Rewriting the maps reloads Dovecot, which drops the connections open at that moment: a
    # connection cut under us says nothing about the account, so it is tried again.
    for _ in range(10):
        try:
            with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
                imap.starttls(ssl_context=mail.tls)
                try:
                    imap.login(login, PASSWORD)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    return False
                return True
        except (imaplib.IMAP4.abort, OSError):
            time.sleep(0.3)
    raise AssertionError(f"the IMAP server kept dropping the connection of {login}")


def test_the_servers_count_messages_and_keep_up_with_mailbox_changes(
    mail: MailServers, database_url: str
) -> None:
    boxes = ((ME, "--type", "PER", "--rpps", DOCTOR), (SERVICE, "--type", "ORG", "--finess", CHU))
    for args in boxes:
        done = mail.enrs("messaging", "mailbox", "add", *args, "--password-stdin", stdin=PASSWORD)
        assert done.returncode == 0, done.stderr
    _submit(mail, ME, ME, SERVICE, "Lettre de liaison")
    _submit(mail, ME, ME, SERVICE, "Compte rendu")
    month = indicators.now_month()
    deadline = time.monotonic() + 20
    while True:
        exported = mail.enrs("messaging", "indicators", "--since", month)
        assert exported.returncode == 0, exported.stderr
        rows = list(csv.reader(io.StringIO(exported.stdout), delimiter=";"))[1:]
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows == [[month, "ORG", "0", "2", "1"], [month, "PER", "2", "0", "1"]]
    assert mail.enrs("messaging", "indicators", "--since", "2026-1").returncode == 2

    # A change made elsewhere than the command line (the directory, the portal) reaches the
    # servers by themselves: the maps are written again within seconds.
    db = Database(database_url)
    with db.transaction() as session:
        service.set_status(session, SERVICE, "suspended")
    db.dispose()
    deadline = time.monotonic() + 15
    while _can_log_in(mail, SERVICE) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not _can_log_in(mail, SERVICE)
    assert _can_log_in(mail, ME)


def test_the_demo_has_mailboxes_bound_to_its_directory_entries(settings: Settings) -> None:
    first, again = load_demo(settings), load_demo(settings)  # idempotent
    assert [x for x in first if x.startswith("Demo mailboxes")] == [
        x for x in again if x.startswith("Demo mailboxes")
    ]
    domain = settings.mail_domain
    personal, secretariat = f"dr.martin@{domain}", f"secretariat.chfdf@{domain}"
    db = Database(settings.database_url)
    with db.transaction() as session:
        boxes = {box.address: box for box in service.mailboxes(session)}
        assert sorted(boxes) == [personal, secretariat]
        assert (boxes[personal].kind, boxes[personal].rpps) == ("PER", DEMO_USERS[2][4])
        assert boxes[secretariat].kind == "ORG" and boxes[secretariat].finess
        assert service.may_send_as(session, personal, secretariat)
        assert follow.follow_directory(session) == follow.Followed([], [])  # both bound, active
        assert verify_password(boxes[personal].password_hash, DEMO_USERS[2][2])
    db.dispose()
