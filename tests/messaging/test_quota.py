"""A mailbox over its quota (issue 14): Dovecot's LMTP refuses the message that would exceed
``ENRS_MAIL_QUOTA``, Postfix returns it to its sender with the reason; the mail already in the
mailbox is untouched."""

from __future__ import annotations

import email
import imaplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.messaging.mail import (
    DOCTOR,
    DOMAIN,
    OTHER_DOCTOR,
    PASSWORD,
    MailServers,
    mail_servers,
    prepare_directory,
)
from tests.messaging.test_mail_servers import _subjects

ME, OTHER = f"dr.un@{DOMAIN}", f"dr.deux@{DOMAIN}"


@pytest.fixture
def small(database_url: str, tmp_path: Path) -> Iterator[MailServers]:
    prepare_directory(database_url, tmp_path)
    with mail_servers(database_url, tmp_path, {"ENRS_MAIL_QUOTA": "40K"}) as servers:
        for address, rpps in ((ME, DOCTOR), (OTHER, OTHER_DOCTOR)):
            done = servers.enrs(
                "messaging", "mailbox", "add", address, "--type", "PER", "--rpps", rpps,
                "--password-stdin", stdin=PASSWORD,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        yield servers


def _report(size: int, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ME, OTHER, subject
    msg.set_content("x" * 70 + "\n" * 1 + ("y" * 70 + "\n") * (size // 71))
    return msg


def _bounce(mail: MailServers, wait: float = 30) -> str:
    """The text of the delivery status notification in ``ME``'s INBOX."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
            imap.starttls(ssl_context=mail.tls)
            imap.login(ME, PASSWORD)
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "ALL")
            for number in data[0].split():
                _, parts = imap.fetch(number, "(RFC822)")
                msg = email.message_from_bytes(parts[0][1])  # type: ignore[index,arg-type]
                if msg.get_content_type() == "multipart/report":
                    return msg.as_string()
        time.sleep(0.3)
    raise AssertionError(f"no bounce for {ME}")


def test_a_message_over_the_quota_returns_to_its_sender(small: MailServers) -> None:
    small.submit(ME, _report(30_000, "Compte rendu 1"))
    assert _subjects(small, OTHER, expected=1) == ["Compte rendu 1"]
    small.submit(ME, _report(30_000, "Compte rendu 2"))  # accepted, then refused by LMTP
    bounce = _bounce(small)
    assert "over its quota" in bounce and "5.2.2" in bounce
    assert _subjects(small, OTHER, expected=1, wait=1) == ["Compte rendu 1"]
