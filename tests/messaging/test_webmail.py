"""The portal's webmail (``/messagerie``): a real IMAP/SMTP client of Debian's Dovecot and
Postfix acting for the logged-in professional through Dovecot's master user; which mailboxes a
professional sees; and the pages in a real browser (Chromium), on a phone too."""

from __future__ import annotations

import imaplib
import smtplib
import stat
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from enrs.messaging import webmail
from enrs.settings import Settings
from tests.messaging.mail import CHU, DOCTOR, DOMAIN, OTHER_DOCTOR, PASSWORD, MailServers

ME = f"dr.un@{DOMAIN}"
CABINET = f"cabinet.un@{DOMAIN}"
SERVICE = f"cardiologie.chu@{DOMAIN}"
SECRETARIAT = f"secretariat.chu@{DOMAIN}"
OTHER = f"dr.deux@{DOMAIN}"


def _mailboxes(mail: MailServers) -> None:
    for args in (
        (ME, "--type", "PER", "--rpps", DOCTOR),
        (CABINET, "--type", "CAB", "--rpps", DOCTOR),
        (SERVICE, "--type", "ORG", "--finess", CHU, "--description", "Cardiologie"),
        (SECRETARIAT, "--type", "ORG", "--finess", CHU),
        (OTHER, "--type", "PER", "--rpps", OTHER_DOCTOR),
    ):
        done = mail.enrs("messaging", "mailbox", "add", *args, "--password-stdin", stdin=PASSWORD)
        assert done.returncode == 0, done.stderr


def _settings(mail: MailServers) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=Path(mail.env["ENRS_DATA_DIR"]),
        database_url=mail.env["ENRS_DATABASE_URL"],
        mail_dir=mail.mail_dir,
        mail_domain=DOMAIN,
        smtp_port=mail.smtp_port,
        imap_port=mail.imap_port,
    )


def _message(sender: str, to: str, subject: str, body: str = "Compte rendu joint.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def _submit(mail: MailServers, login: str, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=mail.tls)
        smtp.login(login, PASSWORD)
        smtp.send_message(msg)


def _inbox(mail: MailServers, login: str, *, expected: int, folder: str = "INBOX") -> list[bytes]:
    """The raw messages of ``login``'s folder (its own password), once ``expected`` are in."""
    deadline = time.monotonic() + 20
    while True:
        with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
            imap.starttls(ssl_context=mail.tls)
            imap.login(login, PASSWORD)
            imap.select(f'"{folder}"', readonly=True)
            _, data = imap.search(None, "ALL")
            numbers = data[0].split() if data and data[0] else []
            if len(numbers) >= expected or time.monotonic() > deadline:
                raws = []
                for number in numbers:
                    _, parts = imap.fetch(number, "(BODY.PEEK[])")
                    raws.append(parts[0][1])  # type: ignore[index]
                return raws  # type: ignore[return-value]
        time.sleep(0.2)


def test_the_master_user_acts_for_a_mailbox_and_the_policy_sees_the_mailbox(
    mail: MailServers,
) -> None:
    _mailboxes(mail)
    settings = _settings(mail)
    secret = mail.mail_dir / "dovecot" / "master-secret"
    info = secret.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0
    assert len(secret.read_text().strip()) >= 40
    # The webmail sends as the doctor with the master secret: delivered, copied to Sent.
    webmail.send(settings, ME, _message(ME, OTHER, "Par le webmail"))
    [raw] = _inbox(mail, OTHER, expected=1)
    assert b"X-MSS-NIL: ENRS-WEBMAIL" in raw
    assert [s.subject for s in webmail.list_messages(settings, ME, "Sent")] == ["Par le webmail"]
    # Postfix's policy sees the real mailbox, not the master: no sending as another one.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        webmail.send(settings, ME, _message(SERVICE, OTHER, "usurpation"))
    [(code, reason)] = refused.value.recipients.values()
    assert code == 553 and f"<{ME}> may not send as <{SERVICE}>" in reason.decode()
    # A wrong master secret is refused by Dovecot.
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(webmail.master_login(ME), "not-the-secret")
