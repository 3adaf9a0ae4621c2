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

Deletions (``MDM^T04``), our reading of the standards: the ANS guide names the T04 but not
how a mail asks for it, and ITI-32 has no deletion of its own. A sender asks to delete a
document it sent earlier by a METADATA.XML DocumentEntry whose ebRIM ``status`` is
``urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated`` (the status an XDS registry gives a
withdrawn document) and whose ``XDSDocumentEntry.uniqueId`` is the version to delete; it
needs no document file, and one it names is ignored (:mod:`.xdm`). The patient's document
with that uniqueId must be current (900 otherwise) and the APP mailbox's structure's own (901
otherwise), the rule of a replacement; it is then withdrawn (``entered-in-error``, kept, not
deleted, audited) and the software gets an ``MDM^T04`` naming it (TXA-12 and TXA-13 its
uniqueId, OBX-11 ``D``, the stored document in the ED OBX as for the other events).

Each APP mailbox's software is an outbound destination named ``mss-app:<address>``, kept
*inactive* for the identity server's notification dispatcher (it must not receive ADT
feeds): its queue is delivered by :func:`deliver_software_queues`, run by the mail listener.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
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
from enrs.documents.models import DocumentEntry
from enrs.documents.terminology import Terminology
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import Matcher
from enrs.identity.search import iti_119_match
from enrs.identity.service import PatientRef
from enrs.identity.traits import INS_OIDS, normalize_name
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.kit.audit.trail import AuditEntry, append_entries
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
    named |= {entry.patient for entry in archive.deletions}
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
            family, given, birth, sex = _metadata_traits(item.metadata)
        if family and given and birth is not None and sex in ("M", "F"):
            return _traits(family, given, birth, sex)
    for entry in archive.deletions:  # an archive of deletions only: their metadata
        family, given, birth, sex = _metadata_traits(entry)
        if family and given and birth is not None and sex in ("M", "F"):
            return _traits(family, given, birth, sex)
    return None


def _metadata_traits(entry: XdmEntry) -> tuple[str, str, date | None, str]:
    traits = _source_patient_traits(entry)
    family, _, rest = traits.get("PID-5", "").partition("^")
    moment = _xds_time(traits.get("PID-7", ""))
    return family, rest.split("^")[0], moment.date() if moment else None, traits.get("PID-8", "")


def _traits(family: str, given: str, birth: date, sex: str) -> Traits:
    return Traits(
        birth_name=normalize_name(family),
        used_name="",
        given_names=(normalize_name(given),),
        birth_date=birth,
        sex=sex,
        birth_place=None,
        postal_code=None,
    )


def _own_current(
    session: Session, reader: Reader, patient: PatientRef, unique: str, verb: str
) -> DocumentEntry:
    """The patient's document ``unique`` that a mail replaces or deletes (``verb``): ``900``
    when the patient has no such document or it is not the current version, ``901`` when it is
    not the APP mailbox's structure's own."""
    old = documents_repository.entry_by_unique_id(session, unique)
    if old is None or old.patient_id not in documents_service.patient_ids(session, patient):
        raise IntegrationError(900, f"the patient has no document {unique} to {verb}")
    if old.status != "current":
        raise IntegrationError(900, f"{unique} is {old.status}: only the current one is {verb}d")
    if not documents_repository.is_own(session, reader, old.id):
        raise IntegrationError(901, f"{unique} is not a document of the structure of {reader.name}")
    return old


def _replaced(session: Session, reader: Reader, patient: PatientRef, doc: ProvidedDocument) -> str:
    """The uniqueId of the version a document's CDA replaces (its ``relatedDocument`` RPLC),
    set as the document's ``replaces`` (:func:`_own_current`: 900, 901)."""
    assert doc.cda is not None and doc.cda.replaces is not None
    parent = doc.cda.replaces.unique_id
    doc.replaces = _own_current(session, reader, patient, parent, "replace").resource_id
    return parent


def _withdrawn(
    session: Session, reader: Reader, patient: PatientRef, entry: XdmEntry
) -> DocumentEntry:
    """The document a Deprecated DocumentEntry deletes (:func:`_own_current`: 900, 901),
    withdrawn as its author's structure withdraws one (``entered-in-error``, kept)."""
    old = _own_current(session, reader, patient, entry.unique_id, "delete")
    return documents_service.withdraw(session, reader, old.resource_id)


def _type_display(entry: DocumentEntry) -> str:
    codings = documents_service.stored_resource(entry).get("type", {}).get("coding") or [{}]
    return str(codings[0].get("display") or "")


def _names(archive: XdmArchive, documents: list[ProvidedDocument]) -> tuple[str, str]:
    """The patient's family and given names for PID-5: the first CDA's ``recordTarget``, else
    the first ``sourcePatientInfo`` (of a document, else of a deletion)."""
    header = documents[0].cda if documents else None
    if header is not None:
        return header.patient_family or "", " ".join(header.patient_given)
    entries = [item.metadata for item in archive.documents] + list(archive.deletions)
    name = _source_patient_traits(entries[0]).get("PID-5", "") if entries else ""
    family, _, rest = name.partition("^")
    return family, rest.split("^")[0]


def _audit_withdrawals(
    session: Session,
    reader: Reader,
    patient: PatientRef,
    withdrawn: list[DocumentEntry],
    original: Message,
) -> None:
    """One audit entry per document a mail withdrew, in the mail's transaction (last)."""
    entries = [
        AuditEntry(
            category="mss",
            interaction="MDM^T04",
            action="U",
            agent_kind="client",
            agent_id=reader.key[:128],
            agent_name=reader.name[:256],
            patient_ref=f"Patient/{patient.rri}",
            resource_type="DocumentReference",
            entity_ref=f"DocumentReference/{entry.resource_id}",
            request_id=str(original.get("Message-ID", ""))[:64] or None,
            detail=f"entered-in-error {entry.unique_id}"[:1000],
        )
        for entry in withdrawn
    ]
    append_entries(session.connection(), entries)


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
    a ``T10`` naming that version, the others ``T02``. A Deprecated DocumentEntry withdraws
    the version its uniqueId names under the same 900/901 rule, and queues a ``T04`` (see the
    module); new documents and deletions of a mail are all integrated, or none."""

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
        withdrawn = [_withdrawn(session, reader, patient, entry) for entry in archive.deletions]
        filed = self._file(session, reader, patient, archive, documents, original)
        if ins is None:  # found by traits: the software gets the qualified INS the region has
            merged = identity_service.merged_patient_ids(session, patient.id)
            ins = identity_service.qualified_ins(session, merged)
        family, given = _names(archive, documents)
        common = {
            "patient_ins": ins[0] if ins is not None else "",
            "patient_rri": patient.rri,
            "family": family,
            "given": given,
            "sender": parseaddr(str(original.get("From", "")))[1],
            "recipients": [parseaddr(a)[1] for a in original.get_all("To", [])] or [box.address],
            "receiving_application": box.address,
            "receiving_facility": box.finess or "",
        }
        facility = box.finess or "ENRS"
        for index, document in enumerate(documents):
            parent = parents.get(document.full_url)
            made = mdm.MdmDocument(
                event="T02" if parent is None else "T10",
                replaces=parent,
                control_id=f"{filed[document.full_url].resource_id[:18]}{index:02d}",
                unique_id=document.unique_id,
                type_code=document.type.code,
                type_display=document.type.display or "",
                mime_type=document.content_type,
                content=document.content,
                created=document.created,
                title=document.title or "",
                flags=document.visibility,
                **common,  # type: ignore[arg-type]
            )
            queue_mdm(session, box, made, facility=facility)
        for index, old in enumerate(withdrawn):
            made = mdm.MdmDocument(
                event="T04",
                replaces=old.unique_id,
                control_id=f"{old.resource_id[:17]}D{index:02d}",
                unique_id=old.unique_id,
                type_code=old.type_code,
                type_display=_type_display(old),
                mime_type=old.mime_type,
                content=self._stored(old),
                created=old.created,
                title=old.title or "",
                flags=old.visibility_codes,
                **common,  # type: ignore[arg-type]
            )
            queue_mdm(session, box, made, facility=facility)
        _audit_withdrawals(session, reader, patient, withdrawn, original)

    def _file(
        self,
        session: Session,
        reader: Reader,
        patient: PatientRef,
        archive: XdmArchive,
        documents: list[ProvidedDocument],
        original: Message,
    ) -> dict[str, DocumentEntry]:
        """The new documents filed in one submission set (none for a mail of deletions)."""
        if not documents:
            return {}
        assert self.storage is not None
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
        return filed.documents

    def _stored(self, entry: DocumentEntry) -> bytes:
        """A deleted document's content, for its MDM^T04's ED OBX (906 when unreadable)."""
        assert self.storage is not None
        try:
            return documents_service.content_of(self.storage, entry)
        except (EnrsError, OSError) as exc:
            raise IntegrationError(906, f"{entry.unique_id}: content unreadable: {exc}") from None

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
