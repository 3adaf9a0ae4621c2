"""Applicative mailboxes (type APP, the *plateforme d'intégration*): mail that arrives at an
APP mailbox is handed by Postfix to ENRS's LMTP server (:mod:`.lmtp`), opened, its IHE_XDM
documents filed, and the facility's software gets one HL7 v2.6 MDM per document (:mod:`.mdm`)
through the outbound queue (:mod:`enrs.kit.outbound`: durable, in order, retried with
back-off while the software is down, every outcome audited).

The sender is answered (ANS "Acknowledgements"):

- an MDN (RFC 8098, ``multipart/report; report-type=disposition-notification``) when the
  mail asked for one (``Disposition-Notification-To``) and that address is the
  ``Return-Path``: ``Disposition: automatic-action/MDN-sent-automatically; processed``, or
  ``…; processed/Error: <code>^<label>`` when it could not be integrated;
- else, on error only, a plain mail whose subject is ``[KO Intégration système !][<code>]``
  and the original subject, the original attached as ``message/rfc822``.

The integration error codes are the ANS guide's (ERR-5): :data:`ERRORS`.

Each APP mailbox's software is an outbound destination named ``mss-app:<address>``, kept
*inactive* for the identity server's notification dispatcher (it must not receive ADT
feeds): its queue is delivered by :func:`deliver_software_queues`, run by the mail listener.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import subprocess
import threading
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import parseaddr
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.documents import cda, hl7, mhd
from enrs.documents import repository as documents_repository
from enrs.documents import service as documents_service
from enrs.documents.access import Reader
from enrs.documents.mhd import ProvidedDocument, Submission
from enrs.documents.terminology import Terminology
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import Matcher
from enrs.identity.search import iti_119_match
from enrs.identity.service import PatientRef
from enrs.identity.traits import INS_OIDS, normalize_name
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.kit.db import Database, utcnow
from enrs.kit.errors import Conflict, EnrsError
from enrs.kit.hl7v2 import V2Error
from enrs.kit.outbound.models import PENDING, OutboundDestination, OutboundMessage
from enrs.kit.outbound.queue import Backoff, Destination, check_endpoint, deliver
from enrs.kit.outbound.transports import MllpTransport, Transport
from enrs.kit.storage.base import BlobStorage
from enrs.messaging import mdm, mss, service
from enrs.messaging.models import Mailbox
from enrs.messaging.service import InvalidMailbox
from enrs.messaging.xdm import (
    XdmArchive,
    XdmCode,
    XdmDocument,
    XdmEntry,
    XdmError,
    parse_cx,
    read_xdm,
)

log = logging.getLogger(__name__)

ERRORS = {
    900: "Version de document incorrecte pour le remplacement ou la suppression",
    901: "Auteur non autorisé à remplacer ou supprimer le document",
    902: "Patient inconnu",
    903: "INS absent du document",
    904: "INS ne correspondant pas à l'identité connue",
    905: "INS incomplet",
    906: "Autre erreur",
}
KO = "[KO Intégration système !]"
DESTINATION_PREFIX = "mss-app:"
BACKOFF = Backoff(first=1.0, most=300.0)


class IntegrationError(Exception):
    """A mail that cannot be integrated, for good (resending it changes nothing)."""

    def __init__(self, code: int, detail: str = "") -> None:
        if code not in ERRORS:
            raise ValueError(f"integration error code {code}: one of {sorted(ERRORS)}")
        super().__init__(f"{code} {ERRORS[code]}" + (f": {detail}" if detail else ""))
        self.code, self.label, self.detail = code, ERRORS[code], detail


# --- the facility software (outbound queue) ------------------------------------------------


def destination_name(address: str) -> str:
    return f"{DESTINATION_PREFIX}{address}"[:64]


def set_software(session: Session, address: str, endpoint: str) -> Mailbox:
    """The MLLP listener (``HOST:PORT``) of an APP mailbox's software; the mailbox's outbound
    destination is created or pointed there (its queue kept)."""
    box = service.existing(session, address)
    if box.kind != "APP":
        raise InvalidMailbox(f"{box.address} is a {box.kind} mailbox: only APP ones feed software")
    try:
        value = check_endpoint("mllp", endpoint)
    except Exception as exc:
        raise InvalidMailbox(str(exc)) from None
    box.mllp_endpoint, box.updated_at = value, utcnow()
    name = destination_name(box.address)
    row = session.scalar(select(OutboundDestination).where(OutboundDestination.name == name))
    if row is None:
        row = OutboundDestination(
            name=name,
            transport="mllp",
            selector=f'{{"mss_app": "{box.address}"}}',
            start_event_id=0,
            created_at=utcnow(),
        )
        session.add(row)
    row.endpoint, row.active = value, False  # inactive: no identity feed (see the module)
    session.flush()
    return box


def queue_mdm(session: Session, box: Mailbox, document: mdm.MdmDocument, *, facility: str) -> None:
    """Queue ``document``'s MDM for the mailbox's software, in the caller's transaction."""
    if box.mllp_endpoint is None:
        raise IntegrationError(906, f"{box.address} has no software endpoint (--mllp)")
    name = destination_name(box.address)
    dest = session.scalar(select(OutboundDestination).where(OutboundDestination.name == name))
    if dest is None:
        raise IntegrationError(906, f"{box.address} has no outbound destination")
    now = utcnow()
    session.add(
        OutboundMessage(
            destination_id=dest.id,
            event_id=0,
            control_id=document.control_id,
            summary=f"MDM^{document.event} {document.unique_id}"[:256],
            patient_ref=f"Patient/{document.patient_rri}",
            content_type="application/hl7-v2",
            body=mdm.build(document, sending_facility=facility),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.flush()


def _software_destinations(db: Database) -> list[Destination]:
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(OutboundDestination).where(
                OutboundDestination.name.startswith(DESTINATION_PREFIX, autoescape=True)
            )
        )
        return [Destination.of(row) for row in rows]


def deliver_software_queues(
    db: Database,
    stop: threading.Event,
    *,
    poll: float = 0.5,
    transport_for: Callable[[str], Transport] = MllpTransport,
) -> None:
    """Until ``stop``: deliver every APP mailbox's MDM queue in order (a software that is
    down holds back only its own queue: its head waits, with back-off)."""
    transports: dict[int, tuple[str, Transport]] = {}
    try:
        while not stop.is_set():
            try:
                for dest in _software_destinations(db):
                    held = transports.get(dest.id)
                    if held is None or held[0] != dest.endpoint:
                        if held is not None:
                            held[1].close()
                        held = transports[dest.id] = (dest.endpoint, transport_for(dest.endpoint))
                    done = deliver(db, dest, held[1], backoff=BACKOFF)
                    if done.failed:
                        log.warning("MDM to %s: %s", dest.name, done.failed)
            except Exception:
                log.exception("MDM delivery round failed")
            stop.wait(poll)
    finally:
        for _, transport in transports.values():
            transport.close()


# --- answers to the sender -----------------------------------------------------------------


def _address(value: str | None) -> str:
    return parseaddr(value or "")[1].strip().lower()


def wants_mdn(original: Message, return_path: str) -> bool:
    """An MDN is sent only when asked for, to the ``Return-Path`` (RFC 8098 §2.1)."""
    asked = _address(original.get("Disposition-Notification-To"))
    return bool(asked) and asked == _address(return_path)


def error_subject(original: Message, code: int) -> str:
    return f"{KO}[{code}] {original.get('Subject', '')!s}".strip()


def _ascii(text: str) -> str:
    """``text`` without its accents: the notification's fields are ASCII (RFC 8098 §3.1)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def mdn(original: Message, *, mailbox: str, error: IntegrationError | None) -> Message:
    """The RFC 8098 disposition notification for ``original`` received at ``mailbox``."""
    disposition = "automatic-action/MDN-sent-automatically; processed"
    human = "Le message a été intégré dans le logiciel du destinataire."
    if error is not None:
        disposition += f"/Error: {error.code}^{_ascii(error.label)}"
        human = f"Le message n'a pas pu être intégré : erreur {error.code}, {error.label}."
    subject = (
        error_subject(original, error.code)
        if error is not None
        else f"Notification de traitement : {original.get('Subject', '')!s}"
    )
    return mss.disposition_notification(
        original, mailbox=mailbox, subject=subject, human=human, disposition=disposition
    )


def error_mail(original: Message, *, mailbox: str, to: str, error: IntegrationError) -> Message:
    """The plain mail that tells a sender who asked no MDN that integration failed."""
    mail = MIMEMultipart("mixed")
    mss.reply_headers(mail, mailbox, to, error_subject(original, error.code), original)
    text = f"Le message n'a pas pu être intégré : erreur {error.code}, {error.label}.\n" + (
        f"{error.detail}\n" if error.detail else ""
    )
    mail.attach(MIMEText(text, "plain", "utf-8"))
    mail.attach(MIMEMessage(original))
    return mail


def answer(
    original: Message, *, mailbox: str, return_path: str, error: IntegrationError | None
) -> tuple[Message, str] | None:
    """What to send back and the envelope sender (empty for an MDN), if anything."""
    if wants_mdn(original, return_path):
        return mdn(original, mailbox=mailbox, error=error), ""
    if error is not None and _address(return_path):
        return error_mail(original, mailbox=mailbox, to=_address(return_path), error=error), mailbox
    return None


def send_local(postfix_dir: str, message: Message, envelope_from: str) -> None:
    """Hand ``message`` to the local Postfix (its ``sendmail``, this installation's
    configuration): queued at once, delivered or relayed by Postfix."""
    from enrs.messaging.config import program

    recipients = [_address(message["To"])]
    done = subprocess.run(
        [program("sendmail"), "-C", postfix_dir, "-i", "-f", envelope_from, "--", *recipients],
        input=message.as_bytes(policy=email.policy.SMTP),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(f"sendmail failed: {done.stderr.decode(errors='replace').strip()}")


# --- the intake ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One mail for one APP mailbox, as the LMTP server got it."""

    mail_from: str
    recipient: str
    raw: bytes


def open_message(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def xdm_archive(msg: EmailMessage) -> bytes:
    """The mail's ``IHE_XDM.ZIP`` attachment (one patient per mail, so one archive)."""
    found = [
        part
        for part in msg.walk()
        if (part.get_filename() or "").upper().rpartition("/")[2] == "IHE_XDM.ZIP"
    ]
    if not found:
        raise IntegrationError(906, "the mail carries no IHE_XDM.zip attachment")
    if len(found) > 1:
        raise IntegrationError(906, "the mail carries more than one IHE_XDM.zip")
    content = found[0].get_payload(decode=True)
    if not isinstance(content, bytes) or not content:
        raise IntegrationError(906, "the IHE_XDM.zip attachment is empty")
    return content


# --- the archive ---------------------------------------------------------------------------


def read_archive(data: bytes) -> XdmArchive:
    """The IHE_XDM archive, or the integration error its reader names (906)."""
    try:
        return read_xdm(data)
    except XdmError as exc:
        code = int(exc.code) if exc.code.isdigit() and int(exc.code) in ERRORS else 906
        raise IntegrationError(code, exc.message) from None


def archive_patient(session: Session, config: IdentityConfig, archive: XdmArchive) -> PatientRef:
    return archive_patient_ins(session, config, archive)[0]


def archive_patient_ins(
    session: Session, config: IdentityConfig, archive: XdmArchive
) -> tuple[PatientRef, tuple[str, str]]:
    """The one patient of the mail, by the INS its metadata names, through the identity
    server: ``903`` when no identifier is an INS, ``906`` when several patients are named,
    ``902`` when the identity server does not know the INS."""
    named = {entry.metadata.patient for entry in archive.documents}
    named |= {parse_cx(sset.patient_id) for sset in archive.submission_sets}
    ins = {ident for ident in named if ident is not None and ident[1] in INS_OIDS}
    if not ins:
        raise IntegrationError(903, "the metadata name the patient by no INS")
    if len(ins) > 1:
        raise IntegrationError(906, "one patient per mail: the metadata name several INS")
    [(value, oid)] = ins
    try:
        return identity_service.resolve_patient(session, config, oid, value), (value, oid)
    except (UnknownPatient, UnknownDomain, Conflict) as exc:
        raise IntegrationError(902, f"INS {value} ({oid}): {exc.message}") from None


def _code(code: XdmCode | None) -> tuple[str, str] | None:
    return None if code is None else (code.code, code.scheme)


def _xds_time(value: str) -> datetime | None:
    """An XDS DTM (``YYYY[MM[DD[hh[mm[ss]]]]]``, UTC), or None when it is not one."""
    digits = value.strip()
    if not digits.isdigit() or len(digits) not in (4, 6, 8, 10, 12, 14):
        return None
    padded = digits + "0101000000"[len(digits) - 4 :]
    try:
        return datetime.strptime(padded, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _source_patient_traits(entry: XdmEntry) -> dict[str, str]:
    """``PID-5``, ``PID-7``, ``PID-8`` of the ``sourcePatientInfo`` slot."""
    traits = {}
    for value in entry.slots.get("sourcePatientInfo", ()):
        field_, bar, text = value.partition("|")
        if bar and text.strip():
            traits[field_.strip()] = text.strip()
    return traits


def _archive_traits(archive: XdmArchive, max_bytes: int) -> Traits | None:
    """The patient's traits the archive gives, to find them by when it names no INS: the
    first CDA's ``recordTarget`` with its birth name, first given name, birth date and sex,
    else a ``sourcePatientInfo`` with them (PID-5, PID-7, PID-8)."""
    for item in archive.documents:
        family, given, sex = "", "", ""
        birth: date | None = None
        if item.mime_type in mhd.CDA_TYPES:
            try:
                header = cda.parse_cda(item.content, max_bytes=max_bytes)
            except EnrsError:
                continue
            family = header.patient_family or ""
            given = header.patient_given[0] if header.patient_given else ""
            birth, sex = header.patient_birth_date, header.patient_gender or ""
        else:
            traits = _source_patient_traits(item.metadata)
            family, _, rest = traits.get("PID-5", "").partition("^")
            given = rest.split("^")[0]
            moment = _xds_time(traits.get("PID-7", ""))
            birth = moment.date() if moment is not None else None
            sex = traits.get("PID-8", "")
        if family and given and birth is not None and sex in ("M", "F"):
            return Traits(
                birth_name=normalize_name(family),
                used_name="",
                given_names=(normalize_name(given),),
                birth_date=birth,
                sex=sex,
                birth_place=None,
                postal_code=None,
            )
    return None


def _replaced(session: Session, reader: Reader, patient: PatientRef, doc: ProvidedDocument) -> str:
    """The uniqueId of the version a document's CDA replaces (its ``relatedDocument`` RPLC),
    set as the document's ``replaces``: ``900`` when the patient has no such document or it is
    not the current version, ``901`` when it is not the APP mailbox's structure's own."""
    assert doc.cda is not None and doc.cda.replaces is not None
    parent = doc.cda.replaces.unique_id
    old = documents_repository.entry_by_unique_id(session, parent)
    if old is None or old.patient_id not in documents_service.patient_ids(session, patient):
        raise IntegrationError(900, f"the patient has no document {parent} to replace")
    if old.status != "current":
        raise IntegrationError(900, f"{parent} is {old.status}: only the current one is replaced")
    if not documents_repository.is_own(session, reader, old.id):
        raise IntegrationError(901, f"{parent} is not a document of the structure of {reader.name}")
    doc.replaces = old.resource_id
    return parent


@dataclass(frozen=True)
class XdmFiler:
    """Files the mail's IHE_XDM documents into the patient's record (one transaction: all of
    them or none) and queues one MDM per document for the mailbox's software.

    The patient is the one the metadata names by INS (902, 903, 906 from
    :func:`archive_patient_ins`), else, with a ``matcher``, the one the archive's traits match
    with certainty (:meth:`_patient`). Each CDA must name that INS (903 absent, 904 another
    one; none at all when the patient was found by traits) with the patient's traits (905 when
    the birth name, first given name, birth date or sex is missing); its metadata (type, class,
    format, facility type, practice setting, confidentiality) is read from the CDA header as
    for an HL7 v2 filing, and checked the same way (906 with the reason). A document that is
    not a CDA (a PDF…) takes its metadata from the archive's METADATA.XML, checked the same
    way, and the INS traits from its ``sourcePatientInfo`` (905 when incomplete). The filer is
    the APP mailbox's structure (a client of that facility: it files for the patients it has
    in care, 906 otherwise); the author is the document's. A CDA that replaces a previous
    version (``relatedDocument`` ``RPLC``) supersedes it when it is the patient's current
    version (900 otherwise) and the APP mailbox's structure's own (901 otherwise); its MDM is
    a ``T10`` naming that version, the others ``T02``."""

    config: IdentityConfig
    storage: BlobStorage | None = None
    max_bytes: int = 20 * 1024 * 1024
    matcher: Matcher | None = None  # to find a patient by traits when no INS is given

    def _patient(
        self, session: Session, archive: XdmArchive
    ) -> tuple[PatientRef, tuple[str, str] | None]:
        """The patient by the INS of the metadata, else (903 without one) by the traits the
        archive gives, through the identity server's ITI-119 rule: exactly one patient matched
        with certainty (902 otherwise)."""
        try:
            return archive_patient_ins(session, self.config, archive)
        except IntegrationError as exc:
            if exc.code != 903 or self.matcher is None:
                raise
        traits = _archive_traits(archive, self.max_bytes)
        if traits is None:
            raise IntegrationError(903, "no INS, and no complete traits to find the patient by")
        found = iti_119_match(session, self.matcher, traits, only_certain=True, count=1)
        patient = identity_service.patient_by_rri(session, found[0].rri) if found else None
        if patient is None:
            raise IntegrationError(902, "no INS, and the traits match no patient with certainty")
        return patient, None

    def __call__(
        self, session: Session, box: Mailbox, received: Received, original: Message, data: bytes
    ) -> None:
        archive = read_archive(data)
        patient, ins = self._patient(session, archive)
        if self.storage is None:
            raise IntegrationError(906, "this installation files no documents (no storage)")
        documents = [
            self._document(item, patient, ins, index)
            for index, item in enumerate(archive.documents)
        ]
        structures = frozenset({box.finess}) if box.finess else frozenset()
        reader = Reader(f"mss:{box.address}", f"BAL applicative {box.address}", "client", None,
                        structures)  # fmt: skip
        parents = {
            document.full_url: _replaced(session, reader, patient, document)
            for document in documents
            if document.cda is not None and document.cda.replaces is not None
        }
        sset = archive.submission_set
        submission = Submission(
            list_full_url=f"urn:mss:{original.get('Message-ID', '')}",
            list_resource={
                "resourceType": "List",
                "code": {"coding": [{"code": "submissionset"}]},
                "title": sset.title or None,
            },
            unique_id=sset.unique_id or f"2.25.{uuid.uuid4().int}",
            source_id=sset.source_id or None,
            patient=("rri", patient.rri),
            documents=documents,
        )
        try:
            with session.begin_nested():
                filed = documents_service.file_submission(
                    session, self.storage, self.config, reader, submission
                )
        except EnrsError as exc:
            raise IntegrationError(906, f"not filed: {exc.message}") from None
        sender = parseaddr(str(original.get("From", "")))[1]
        recipients = [parseaddr(a)[1] for a in original.get_all("To", [])]
        if ins is None:  # found by traits: the software gets the qualified INS the region has
            merged = identity_service.merged_patient_ids(session, patient.id)
            ins = identity_service.qualified_ins(session, merged)
        header = documents[0].cda
        if header is not None:
            family, given = header.patient_family or "", " ".join(header.patient_given)
        else:
            name = _source_patient_traits(archive.documents[0].metadata).get("PID-5", "")
            family, _, rest = name.partition("^")
            given = rest.split("^")[0]
        for index, document in enumerate(documents):
            entry = filed.documents[document.full_url]
            parent = parents.get(document.full_url)
            queue_mdm(
                session,
                box,
                mdm.MdmDocument(
                    event="T02" if parent is None else "T10",
                    replaces=parent,
                    control_id=f"{entry.resource_id[:18]}{index:02d}",
                    patient_ins=ins[0] if ins is not None else "",
                    patient_rri=patient.rri,
                    family=family,
                    given=given,
                    unique_id=document.unique_id,
                    type_code=document.type.code,
                    type_display=document.type.display or "",
                    mime_type=document.content_type,
                    content=document.content,
                    sender=sender,
                    recipients=recipients or [box.address],
                    receiving_application=box.address,
                    receiving_facility=box.finess or "",
                    created=document.created,
                    title=document.title or "",
                    flags=document.visibility,
                ),
                facility=box.finess or "ENRS",
            )

    def _other_document(
        self, item: XdmDocument, patient: PatientRef, index: int
    ) -> ProvidedDocument:
        """A document that is not a CDA (a PDF…): its metadata from METADATA.XML, the INS
        traits from ``sourcePatientInfo`` (905 when the birth name, given name, birth date or
        sex is missing)."""
        entry = item.metadata
        if item.mime_type not in mhd.ACCEPTED_TYPES:
            raise IntegrationError(906, f"{item.name}: {item.mime_type} documents are not taken")
        try:
            mhd.sniff(item.content, item.mime_type, item.name)
        except EnrsError as exc:
            raise IntegrationError(906, exc.message) from None
        traits = _source_patient_traits(entry)
        family, _, given = traits.get("PID-5", "").partition("^")
        if not (family and given.split("^")[0] and traits.get("PID-7")
                and traits.get("PID-8") in ("M", "F")):  # fmt: skip
            raise IntegrationError(905, f"{item.name}: sourcePatientInfo lacks the INS traits")
        if not entry.unique_id:
            raise IntegrationError(906, f"{item.name}: the DocumentEntry has no uniqueId")
        try:
            meta = hl7.meta_from_xds(
                Terminology.load(),
                type_code=_code(entry.type_code),
                format_code=_code(entry.format_code),
                confidentiality=[(c.code, c.scheme) for c in entry.confidentiality],
                facility_type=_code(entry.healthcare_facility_type),
                practice_setting=_code(entry.practice_setting),
                media=item.mime_type,
                author_xcn=entry.authors[0] if entry.authors else "",
                created=_xds_time(entry.creation_time),
                title=entry.title,
                language=entry.slots.get("languageCode", ("",))[0],
            )
            mhd.check_visibility(meta["visibility"], item.name)
        except V2Error as exc:
            raise IntegrationError(906, f"{item.name}: {exc}") from None
        except EnrsError as exc:
            raise IntegrationError(906, f"{item.name}: {exc.message}") from None
        meta["period_start"] = _xds_time(entry.slots.get("serviceStartTime", ("",))[0])
        meta["period_end"] = _xds_time(entry.slots.get("serviceStopTime", ("",))[0])
        return self._provided(item, patient, index, entry.unique_id, meta, None)

    def _document(
        self,
        item: XdmDocument,
        patient: PatientRef,
        ins: tuple[str, str] | None,
        index: int,
    ) -> ProvidedDocument:
        if item.mime_type not in mhd.CDA_TYPES:
            return self._other_document(item, patient, index)
        try:
            header = cda.parse_cda(item.content, max_bytes=self.max_bytes)
        except EnrsError as exc:
            raise IntegrationError(
                906, f"{item.name}: the CDA does not parse: {exc.message}"
            ) from None
        carried = header.ins
        if ins is None:  # the patient was found by traits: the CDA must not name an INS either
            if carried is not None:
                raise IntegrationError(
                    904, f"{item.name}: the CDA names an INS the metadata do not"
                )
        elif carried is None or not carried.extension:
            raise IntegrationError(903, f"{item.name}: the CDA names the patient by no INS")
        elif (carried.extension, carried.root) != ins:
            raise IntegrationError(904, f"{item.name}: the CDA's INS is not the patient's")
        if not (header.patient_family and header.patient_given and header.patient_birth_date
                and header.patient_gender in ("M", "F")):  # fmt: skip
            raise IntegrationError(905, f"{item.name}: the CDA lacks the INS traits")
        try:
            meta = hl7.meta_from_cda(Terminology.load(), header, item.mime_type, frozenset())
        except V2Error as exc:
            raise IntegrationError(906, f"{item.name}: {exc}") from None
        return self._provided(item, patient, index, str(meta["unique_id"]), meta, header)

    @staticmethod
    def _provided(
        item: XdmDocument,
        patient: PatientRef,
        index: int,
        unique: str,
        meta: dict[str, Any],
        header: cda.CdaDocument | None,
    ) -> ProvidedDocument:
        return ProvidedDocument(
            full_url=f"urn:mss:{index}",
            resource=hl7.document_resource(meta, unique, item.mime_type),
            unique_id=unique,
            patient=("rri", patient.rri),
            type=meta["type"],
            category=meta["category"],
            confidentiality=meta["confidentiality"],
            visibility=meta["visibility"],
            format=meta["format"],
            facility_type=meta["facility_type"],
            practice_setting=meta["practice_setting"],
            content=item.content,
            content_type=item.mime_type,
            sha1=hashlib.sha1(item.content, usedforsecurity=False).hexdigest(),
            title=meta["title"],
            date=datetime.now(UTC),
            created=meta["created"],
            period_start=meta["period_start"],
            period_end=meta["period_end"],
            author_rpps=meta["author_rpps"],
            author_finess=None,
            author_reference=None,
            language=meta["language"],
            replaces=None,
            cda=header,
        )
