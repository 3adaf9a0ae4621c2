"""The wire (issue 14): Debian's Postfix and Dovecot configured by ENRS, driven by Python's
``smtplib`` and ``imaplib`` — submission with STARTTLS and a login, delivery by LMTP, reading
over IMAP; and the operator's rules at the SMTP door (the policy service): who may send as
whom, unknown and suspended mailboxes, the MSSanté trust space, forged senders."""

from __future__ import annotations

import imaplib
import smtplib
import time
from email.message import EmailMessage

import pytest
from sqlalchemy import text

from enrs.kit.db import Database
from tests.messaging.mail import CHU, DOCTOR, DOMAIN, OTHER_DOCTOR, PASSWORD, MailServers

ME = f"dr.un@{DOMAIN}"
SERVICE = f"cardiologie.chu@{DOMAIN}"
OTHER = f"dr.deux@{DOMAIN}"


def _mailboxes(mail: MailServers) -> None:
    for args in (
        (ME, "--type", "PER", "--rpps", DOCTOR),
        (SERVICE, "--type", "ORG", "--finess", CHU, "--description", "Cardiologie"),
        (OTHER, "--type", "PER", "--rpps", OTHER_DOCTOR),
    ):
        done = mail.enrs("messaging", "mailbox", "add", *args, "--password-stdin", stdin=PASSWORD)
        assert done.returncode == 0, done.stderr


def _message(sender: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content("Compte rendu joint.")
    return msg


def _subjects(mail: MailServers, login: str, *, expected: int, wait: float = 20) -> list[str]:
    """The subjects in ``login``'s INBOX, once ``expected`` messages are there."""
    return [str(msg["Subject"]) for msg in mail.messages(login, expected=expected, wait=wait)]


def test_a_message_from_submission_to_the_recipients_imap(mail: MailServers) -> None:
    _mailboxes(mail)
    listed = mail.enrs("messaging", "mailbox", "list")
    assert f"{SERVICE}\tORG\tFINESS {CHU}\tactive" in listed.stdout
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")  # no login before STARTTLS
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.login(ME, PASSWORD)
    mail.submit(ME, _message(ME, SERVICE, "Lettre de liaison"))
    assert _subjects(mail, SERVICE, expected=1) == ["Lettre de liaison"]
    # (Dovecot lets a client of the same host log in before STARTTLS: not testable here.)
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(SERVICE, "Wrong-password-42!")


def _refused(mail: MailServers, login: str, msg: EmailMessage) -> str:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        mail.submit(login, msg)
    [(code, reason)] = refused.value.recipients.values()
    return f"{code} {reason.decode()}"


def test_the_operators_rules_at_the_smtp_door(mail: MailServers) -> None:
    _mailboxes(mail)
    usurped = _refused(mail, ME, _message(SERVICE, OTHER, "usurpation"))
    assert usurped.startswith("553 5.7.1") and "may not send as" in usurped
    assert _refused(mail, ME, _message(ME, f"personne@{DOMAIN}", "x")).startswith("550 5.1.1")
    outside = _refused(mail, ME, _message(ME, "someone@gmail.example", "hors espace"))
    assert outside.startswith("550 5.7.1") and "not in the MSSante trust space" in outside

    # The service's secretary (here: the other doctor) sends as the service once delegated.
    assert mail.enrs("messaging", "mailbox", "delegate", SERVICE, OTHER, "--send").returncode == 0
    mail.submit(OTHER, _message(SERVICE, ME, "Rendez-vous confirmé"))
    assert _subjects(mail, ME, expected=1) == ["Rendez-vous confirmé"]

    # A suspended mailbox: no new mail, no login; its mail kept for when it comes back.
    mail.submit(ME, _message(ME, OTHER, "Avant la suspension"))
    assert _subjects(mail, OTHER, expected=1) == ["Avant la suspension"]
    assert mail.enrs("messaging", "mailbox", "suspend", OTHER).returncode == 0
    assert _refused(mail, ME, _message(ME, OTHER, "après")).startswith("550 5.2.1")
    time.sleep(1.1)  # Dovecot looks at the passwd file again when its mtime second changes
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(OTHER, PASSWORD)
    assert mail.enrs("messaging", "mailbox", "activate", OTHER).returncode == 0
    time.sleep(1.1)
    assert _subjects(mail, OTHER, expected=1) == ["Avant la suspension"]


def test_another_operator_delivers_from_the_trust_space_only(
    mail: MailServers, database_url: str
) -> None:
    _mailboxes(mail)
    db = Database(database_url)
    with db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO mail_trusted_domain (name, description, operator_dn, updated,"
                " imported_at) VALUES ('hopital.example', 'CH', '', '', CURRENT_TIMESTAMP)"
            )
        )
    db.dispose()

    def deliver(sender: str, to: str, subject: str) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", mail.mx_port, timeout=30) as smtp:
            smtp.starttls(context=mail.tls)
            return smtp.send_message(_message(sender, to, subject))

    assert deliver("dr.x@hopital.example", ME, "Avis de cardiologie") == {}
    assert _subjects(mail, ME, expected=1) == ["Avis de cardiologie"]
    for sender, code, words in (
        ("dr.x@inconnu.example", 550, "not in the MSSante trust space"),
        (f"faux@{DOMAIN}", 553, "is sent by a logged-in client"),
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            deliver(sender, ME, "refusé")
        [(got, reason)] = refused.value.recipients.values()
        assert got == code and words in reason.decode(), reason
    with pytest.raises(smtplib.SMTPRecipientsRefused) as relay:
        deliver("dr.x@hopital.example", "dr.y@hopital.example", "relais")
    assert "Relay access denied" in str(relay.value.recipients)


def test_a_patient_answers_a_professional_who_wrote_first(
    mail: MailServers, database_url: str
) -> None:
    _mailboxes(mail)
    db = Database(database_url)
    with db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO mail_trusted_domain (name, description, operator_dn, updated,"
                " imported_at) VALUES ('patient.mssante.fr', 'Mon espace sante', '', '',"
                " CURRENT_TIMESTAMP)"
            )
        )
    patient = "261049720912388@patient.mssante.fr"

    def from_patient(subject: str) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", mail.mx_port, timeout=30) as smtp:
            smtp.starttls(context=mail.tls)
            return smtp.send_message(_message(patient, ME, subject))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as first:
        from_patient("Bonjour docteur")
    [(code, reason)] = first.value.recipients.values()
    assert code == 550 and b"wrote to them first" in reason
    # The doctor writes to the patient (Postfix queues it for Mon espace sante's server) ...
    mail.submit(ME, _message(ME, patient, "Vos résultats"))
    deadline = time.monotonic() + 20
    while True:  # ... and the policy service remembers it at the end of the message
        with db.transaction(write=False) as session:
            if session.execute(text("SELECT count(*) FROM mail_patient_contact")).scalar():
                break
        assert time.monotonic() < deadline, "the contact was not remembered"
        time.sleep(0.2)
    db.dispose()
    assert from_patient("Merci docteur") == {}
    # (Postfix returns the doctor's mail here: this machine has no route to Mon espace sante)
    assert "Merci docteur" in _subjects(mail, ME, expected=2)
    with (  # another mailbox, which never wrote to the patient
        pytest.raises(smtplib.SMTPRecipientsRefused),
        smtplib.SMTP("127.0.0.1", mail.mx_port, timeout=30) as smtp,
    ):
        smtp.starttls(context=mail.tls)
        smtp.send_message(_message(patient, OTHER, "Et vous ?"))
