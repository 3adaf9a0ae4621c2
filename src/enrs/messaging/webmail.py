"""The portal webmail's mail client: a real IMAP client (``imaplib``, STARTTLS) of the
operator's Dovecot and a real SMTP submission client (``smtplib``, STARTTLS) of its Postfix.

The webmail acts for the logged-in professional without their password: it logs in as
Dovecot's *master user* (``<mailbox>*webmail``, the secret in ``dovecot/master-secret``, see
:func:`enrs.messaging.config.master_passdb`). Dovecot then authenticates the mailbox itself, so
Postfix's policy service sees the real mailbox as ``sasl_username`` and still enforces who may
send as whom. Which mailbox a professional may open is decided before, by
:func:`enrs.messaging.service.visible_mailboxes`.
"""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path

from enrs.messaging import config
from enrs.settings import Settings

FOLDERS = {"reception": "INBOX", "envoyes": "Sent"}
SENT = "Sent"
LIST_LIMIT = 200
_FETCHED = re.compile(rb"UID (\d+).*FLAGS \(([^)]*)\)")


class MailUnavailable(Exception):
    """The mail servers are not set up or not answering (French text for the page)."""


@dataclass(frozen=True)
class Summary:
    uid: str
    sender: str
    to: str
    subject: str
    date: datetime | None
    seen: bool


def unavailable_reason(settings: Settings) -> str | None:
    """Why the webmail cannot work here (in French), or None."""
    if (
        not config.configured(settings)
        or not config.master_secret_path(config.Layout.of(settings)).exists()
    ):
        reason = (
            "ENRS_MAIL_SERVERS=off"
            if settings.mail_servers == "off"
            else ", ".join(config.missing_programs()) or "jamais démarrés"
        )
        return (
            "Les serveurs de messagerie (Postfix et Dovecot) ne sont pas en service sur cette"
            f" plateforme ({reason}). Pour les activer : installez les paquets postfix,"
            " dovecot-imapd et dovecot-lmtpd, mettez ENRS_MAIL_SERVERS=on (ou auto) et lancez"
            " « enrs serve » en root."
        )
    secret = config.master_secret_path(config.Layout.of(settings))
    if not os.access(secret, os.R_OK):
        return (
            f"Le secret de la messagerie web ({secret}) n'est pas lisible par ce processus :"
            " lancez ENRS avec un utilisateur du groupe dovecot (ou en root)."
        )
    return None


def _tls(settings: Settings) -> ssl.SSLContext:
    layout = config.Layout.of(settings)
    cert = settings.mail_tls_cert or layout.root / "tls" / "cert.pem"
    return ssl.create_default_context(cafile=str(Path(cert).resolve()))


def _secret(settings: Settings) -> str:
    path = config.master_secret_path(config.Layout.of(settings))
    return path.read_text(encoding="utf-8").strip()


def master_login(address: str) -> str:
    return f"{address}*{config.MASTER_LOGIN}"


def _refused(exc: Exception) -> MailUnavailable:
    return MailUnavailable(f"le serveur de messagerie ne répond pas ({exc})")


@contextmanager
def imap(settings: Settings, address: str) -> Iterator[imaplib.IMAP4]:
    """An IMAP session on ``address`` as the webmail's master user (STARTTLS, TCP_NODELAY:
    without it an APPEND waits 40 ms on Nagle)."""
    try:
        client = imaplib.IMAP4(settings.mail_host, settings.imap_port, timeout=30)
    except OSError as exc:
        raise _refused(exc) from exc
    try:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.starttls(ssl_context=_tls(settings))
        client.login(master_login(address), _secret(settings))
        yield client
    finally:
        with suppress(imaplib.IMAP4.error, OSError):
            client.logout()


def _header(msg: EmailMessage, name: str) -> str:
    value = msg.get(name)
    return str(value) if value is not None else ""


def _date(msg: EmailMessage) -> datetime | None:
    try:
        when = parsedate_to_datetime(_header(msg, "Date"))
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse(raw: bytes) -> EmailMessage:
    message: EmailMessage = BytesParser(policy=email_policy.default).parsebytes(raw)
    return message


def _select(client: imaplib.IMAP4, folder: str, *, readonly: bool) -> bool:
    status, _ = client.select(_quoted(folder), readonly=readonly)
    return status == "OK"


def _quoted(folder: str) -> str:
    return f'"{folder}"'


def _uids(client: imaplib.IMAP4, query: str | None) -> list[bytes]:
    if not query:
        _, data = client.uid("SEARCH", "ALL")
        return data[0].split() if data and data[0] else []
    found: set[bytes] = set()
    for key in ("SUBJECT", "FROM", "BODY"):  # imaplib sends one literal per command
        client.literal = query.encode("utf-8")  # type: ignore[assignment]
        _, data = client.uid("SEARCH", "CHARSET", "UTF-8", key)
        if data and data[0]:
            found.update(data[0].split())
    return sorted(found, key=int)


def list_messages(
    settings: Settings, address: str, folder: str, query: str | None = None
) -> list[Summary]:
    """The messages of ``folder`` (newest first), or those whose subject, sender or body
    holds ``query`` (IMAP SEARCH)."""
    with imap(settings, address) as client:
        if not _select(client, folder, readonly=True):
            return []
        uids = _uids(client, query)[-LIST_LIMIT:]
        if not uids:
            return []
        fields = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"
        _, data = client.uid("FETCH", b",".join(uids).decode(), fields)
    found = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = _FETCHED.search(item[0])
        if meta is None:
            continue
        msg = parse(item[1])
        found.append(
            Summary(
                uid=meta.group(1).decode(),
                sender=_header(msg, "From"),
                to=_header(msg, "To"),
                subject=_header(msg, "Subject") or "(sans objet)",
                date=_date(msg),
                seen=b"\\Seen" in meta.group(2),
            )
        )
    return sorted(found, key=lambda s: int(s.uid), reverse=True)


def read_message(settings: Settings, address: str, folder: str, uid: str) -> EmailMessage | None:
    """One message (marked read), or None."""
    if not uid.isdigit():
        return None
    with imap(settings, address) as client:
        if not _select(client, folder, readonly=False):
            return None
        _, data = client.uid("FETCH", uid, "(BODY[])")
    for item in data:
        if isinstance(item, tuple):
            return parse(item[1])
    return None


MDN_SENT = "$MDNSent"  # the IMAP keyword of a message whose read receipt was sent (RFC 3503)


def has_flag(settings: Settings, address: str, folder: str, uid: str, flag: str) -> bool:
    """Whether the message carries ``flag`` (a system flag or a keyword)."""
    if not uid.isdigit():
        return False
    with imap(settings, address) as client:
        if not _select(client, folder, readonly=True):
            return False
        _, data = client.uid("FETCH", uid, "(FLAGS)")
    return any(flag.encode() in (item if isinstance(item, bytes) else b"") for item in data)


def add_flag(settings: Settings, address: str, folder: str, uid: str, flag: str) -> None:
    """Set ``flag`` on the message (kept by Dovecot with the mail)."""
    if not uid.isdigit():
        return
    with imap(settings, address) as client:
        if _select(client, folder, readonly=False):
            client.uid("STORE", uid, "+FLAGS", f"({flag})")


def send(settings: Settings, login: str, msg: EmailMessage) -> list[str]:
    """Submit ``msg`` (made by :func:`enrs.messaging.mss.compose`, with its ``X-MSS-NIL``)
    as the master user logged in on ``login`` (the professional's own
    mailbox: Postfix's policy checks it may send as ``From``), then keep a copy in the
    ``From`` mailbox's Sent folder (IMAP APPEND). Returns the recipients refused while
    others were accepted (all refused: ``smtplib.SMTPRecipientsRefused``)."""
    try:
        smtp = smtplib.SMTP(settings.mail_host, settings.smtp_port, timeout=30)
    except OSError as exc:
        raise _refused(exc) from exc
    with smtp:
        smtp.starttls(context=_tls(settings))
        smtp.login(master_login(login), _secret(settings))
        refused = smtp.send_message(msg)
    sender = msg["From"].addresses[0].addr_spec
    with imap(settings, sender) as client:
        client.create(_quoted(SENT))  # NO when it exists
        status, answer = client.append(
            _quoted(SENT), "(\\Seen)", imaplib.Time2Internaldate(datetime.now(UTC)), msg.as_bytes()
        )
        if status != "OK":
            raise MailUnavailable(f"copie dans « Envoyés » refusée : {answer!r}")
    return sorted(refused)
