"""The MSSanté rules for what a message carries (the 2023 client reference; facts in
``reference/messaging.md``): the ``XDM/1.0/DDM+…`` subject, the ``X-MSS-*`` headers computed
from the attached CDA documents, one patient per message, and the message itself.

- ``X-MSS-NIL``: the sending software's reference, on every message (:data:`SOFTWARE_NIL`).
- ``X-MSS-CODECDA``: the header ``code`` of each CDA in the IHE_XDM archive, comma-separated;
  ``X-MSS-INS``: ``O`` when every CDA gives a qualified INS (the matricule under an INS OID,
  the birth name, the first given name, the birth date and the sex), else ``N``. Both absent
  without CDA.
- Subject: ``XDM/1.0/DDM+<label> <NAME> <first name> <DD/MM/YYYY>``: the label is the CDA's
  title (at most 40 characters) or "N documents"; the name upper case without accents.
"""

from __future__ import annotations

import email
import email.policy
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, getaddresses, make_msgid, parseaddr

from enrs.documents.cda import CdaDocument, CdaError, parse_cda
from enrs.messaging.xdm import XdmArchive, XdmError, read_xdm

# The sending software's reference as the MSSanté client reference asks for it ("numéro
# d'identification du logiciel"); ENRS has none from the ANS yet, so it names itself.
SOFTWARE_NIL = "ENRS"
XDM_NAME = "IHE_XDM.ZIP"
LABEL_MAX = 40


class MessageError(ValueError):
    """A message that breaks an MSSanté rule (two patients, a CDA that does not parse)."""


def _ascii_upper(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    return "".join(c for c in folded if not unicodedata.combining(c)).upper()


def subject(label_or_count: str | int, family: str, given: str, birth_date: date) -> str:
    """The MSSanté subject of a message about one patient."""
    if isinstance(label_or_count, int):
        label = f"{label_or_count} documents" if label_or_count > 1 else "1 document"
    else:
        label = label_or_count.strip()[:LABEL_MAX]
    first = given.split()[0] if given.split() else ""
    return f"XDM/1.0/DDM+{label} {_ascii_upper(family)} {first} {birth_date:%d/%m/%Y}"


def _qualified(doc: CdaDocument) -> bool:
    return bool(
        doc.ins is not None
        and doc.patient_family
        and doc.patient_given
        and doc.patient_birth_date is not None
        and doc.patient_gender in ("M", "F")
    )


def _patient_key(doc: CdaDocument) -> tuple[str, ...]:
    """The patient a CDA names: its INS, or without one its birth name and birth date."""
    if doc.ins is not None:
        return ("INS", doc.ins.extension or "")
    born = doc.patient_birth_date.isoformat() if doc.patient_birth_date else ""
    return ("name", _ascii_upper(doc.patient_family or ""), born)


def codes_and_ins(cdas: Sequence[CdaDocument]) -> tuple[str, str] | None:
    """``(X-MSS-CODECDA, X-MSS-INS)`` for the CDA documents of a message; None without any.
    Two patients in one message are refused (:class:`MessageError`)."""
    if not cdas:
        return None
    patients = {_patient_key(doc) for doc in cdas}
    if len(patients) > 1:
        raise MessageError("one patient per message: the documents name several patients")
    codes = ",".join(doc.type_code.code for doc in cdas)
    return codes, "O" if all(_qualified(doc) for doc in cdas) else "N"


def cdas_of(xdm: bytes) -> list[CdaDocument]:
    """The CDA documents of an IHE_XDM archive (the XML ones), read."""
    try:
        archive = read_xdm(xdm)
    except XdmError as exc:
        raise MessageError(exc.message) from None
    found = []
    for document in archive.documents:
        if document.mime_type in ("text/xml", "application/xml", "application/hl7-v3+xml"):
            try:
                found.append(parse_cda(document.content))
            except CdaError as exc:
                raise MessageError(f"{document.name}: the CDA does not parse: {exc}") from None
    return found


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str  # "application/pdf"
    data: bytes


def compose(
    *,
    sender: str,
    to: Sequence[str],
    subject_line: str,
    body: str,
    cc: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    xdm: bytes | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    read_receipt: bool = False,
) -> EmailMessage:
    """A message as an MSSanté client sends it: ``X-MSS-NIL``; with an IHE_XDM archive, the
    ``X-MSS-CODECDA``/``X-MSS-INS`` of its CDA documents; a ``Message-ID`` of the sender's
    domain; threading headers for a reply; ``Disposition-Notification-To`` when a read
    receipt (MDN) is asked."""
    if not to:
        raise MessageError("a message has at least one recipient")
    for name, value in (("sender", sender), ("subject", subject_line), *(
        ("recipient", address) for address in (*to, *cc)
    )):  # fmt: skip
        if "\r" in value or "\n" in value:
            raise MessageError(f"the {name} holds a line break: {value!r}")
    for address in (sender, *to, *cc):
        bare = parseaddr(address)[1]
        if bare.count("@") != 1 or not all(bare.split("@")):
            raise MessageError(f"{address!r} is not an e-mail address")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject_line
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["X-MSS-NIL"] = SOFTWARE_NIL
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join([*references, in_reply_to] if in_reply_to not in references
                                     else references)  # fmt: skip
    if read_receipt:
        msg["Disposition-Notification-To"] = sender
    if xdm is not None:
        headers = codes_and_ins(cdas_of(xdm))
        if headers is not None:
            msg["X-MSS-CODECDA"], msg["X-MSS-INS"] = headers
    msg.set_content(body)
    for item in attachments:
        main, _, sub = item.content_type.partition("/")
        msg.add_attachment(
            item.data, maintype=main or "application", subtype=sub or "octet-stream",
            filename=item.filename,
        )  # fmt: skip
    if xdm is not None:
        msg.add_attachment(xdm, maintype="application", subtype="zip", filename=XDM_NAME)
    return msg


MAX_MESSAGE_BYTES = 60 * 1024 * 1024
MAX_PARTS = 500


@dataclass(frozen=True)
class ReadMessage:
    """What a reader needs of a received message."""

    sender: str  # the From address, without display name
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str
    text: str  # the first text/plain part that is not an attachment ("" when none)
    attachments: tuple[Attachment, ...]  # every attachment, IHE_XDM.ZIP included
    xdm: XdmArchive | None  # the IHE_XDM.ZIP attachment, read


def _addresses(msg: Message, name: str) -> tuple[str, ...]:
    values = [str(value) for value in msg.get_all(name, [])]
    found = [address for _, address in getaddresses(values) if address]
    for address in found:
        if address.count("@") != 1 or not all(address.split("@")):
            raise MessageError(f"{name}: {address!r} is not an e-mail address")
    return tuple(found)


def read_message(raw: bytes) -> ReadMessage:
    """Read a received message: sender, recipients, subject, text, attachments and its
    IHE_XDM archive (:func:`enrs.messaging.xdm.read_xdm`). A message the MIME parser finds
    defects in, without a sender, or whose archive does not read, raises
    :class:`MessageError` (an unreadable archive keeps its MSSanté code in the message)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"the message is over {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = list(msg.walk())
        if len(parts) > MAX_PARTS:
            raise MessageError(f"the message has over {MAX_PARTS} MIME parts")
        for part in parts:
            if part.defects:
                names = ", ".join(type(d).__name__ for d in part.defects)
                raise MessageError(f"malformed MIME message: {names}")
        sender = parseaddr(str(msg.get("From", "")))[1]
        if not sender or sender.count("@") != 1:
            raise MessageError("the message has no valid From address")
        to, cc = _addresses(msg, "To"), _addresses(msg, "Cc")
        text = ""
        body = msg.get_body(preferencelist=("plain",)) if isinstance(msg, EmailMessage) else None
        if body is not None:
            text = str(body.get_content())
        attachments: list[Attachment] = []
        xdm: XdmArchive | None = None
        for part in msg.iter_attachments() if isinstance(msg, EmailMessage) else ():
            data = part.get_payload(decode=True)
            if not isinstance(data, bytes):
                continue  # an attached message/rfc822: not a file
            filename = part.get_filename() or ""
            attachments.append(Attachment(filename, part.get_content_type(), data))
            if filename.upper() == XDM_NAME:
                if xdm is not None:
                    raise MessageError("the message carries two IHE_XDM archives")
                try:
                    xdm = read_xdm(data)
                except XdmError as exc:
                    raise MessageError(f"{filename}: {exc.message} (code {exc.code})") from None
    except MessageError:
        raise
    except (LookupError, ValueError, TypeError, AttributeError) as exc:
        raise MessageError(f"malformed MIME message: {exc}") from None
    return ReadMessage(
        sender=sender,
        to=to,
        cc=cc,
        subject=str(msg.get("Subject", "")),
        message_id=str(msg.get("Message-ID", "")),
        text=text,
        attachments=tuple(attachments),
        xdm=xdm,
    )


# --- answers: disposition notifications (RFC 8098) -----------------------------------------


def reply_headers(msg: Message, sender: str, to: str, subject: str, original: Message) -> None:
    """The headers of an answer to ``original`` sent by the platform for ``sender``."""
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    original_id = str(original.get("Message-ID", "")).strip()
    if original_id:  # a str: the parsed header object would keep its own name
        msg["In-Reply-To"] = msg["References"] = original_id
    msg["Auto-Submitted"] = "auto-replied"


def disposition_notification(
    original: Message, *, mailbox: str, subject: str, human: str, disposition: str
) -> Message:
    """The RFC 8098 report for ``original`` received at ``mailbox``, to its
    ``Disposition-Notification-To``: a human-readable part, the
    ``message/disposition-notification`` fields (``Disposition`` as given) and the original."""
    to = parseaddr(str(original.get("Disposition-Notification-To", "")))[1].strip().lower()
    report = MIMEMultipart("report", report_type="disposition-notification")
    reply_headers(report, mailbox, to, subject, original)
    report.attach(MIMEText(human + "\n", "plain", "utf-8"))
    fields = [
        f"Reporting-UA: {mailbox.rpartition('@')[2]}; ENRS",
        f"Original-Recipient: rfc822;{mailbox}",
        f"Final-Recipient: rfc822;{mailbox}",
    ]
    if original.get("Message-ID"):
        fields.append(f"Original-Message-ID: {str(original['Message-ID']).strip()}")
    fields.append(f"Disposition: {disposition}")
    notification = Message()
    notification["Content-Type"] = "message/disposition-notification"
    notification["Content-Transfer-Encoding"] = "7bit"
    notification.set_payload("\r\n".join(fields) + "\r\n")
    report.attach(notification)
    report.attach(MIMEMessage(original))
    return report


def read_receipt(original: Message, *, mailbox: str) -> EmailMessage | None:
    """The read receipt a professional sends by hand for a message that asks for one
    (``manual-action/MDN-sent-manually; displayed``), or None when it asks for none."""
    if not parseaddr(str(original.get("Disposition-Notification-To", "")))[1]:
        return None
    report = disposition_notification(
        original,
        mailbox=mailbox,
        subject=f"Accusé de lecture : {original.get('Subject', '')!s}",
        human=f"Le message a été lu par {mailbox}.",
        disposition="manual-action/MDN-sent-manually; displayed",
    )
    del report["Auto-Submitted"]  # sent by the person, not by the platform
    report["X-MSS-NIL"] = SOFTWARE_NIL
    parsed = email.message_from_bytes(report.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
