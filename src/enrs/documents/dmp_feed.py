"""The feed to the national DMP: an outbound queue (``document_dmp_export``, one row per
document, written with the document in its transaction) and the courier that empties it
through a :class:`~enrs.documents.dmp.DmpAdapter` (the XDS.b one in production, the fake DMP
in tests).

Rules:
- a document goes to the DMP only when its patient has a **qualified INS** (else ``held``, and
  looked at again a day later) and does **not oppose** sharing (else ``skipped``: the
  opposition is honoured on the way out as on reads); a withdrawn one is not sent;
- **idempotent**: the DocumentEntry's entryUUID and uniqueId are the document's own, so a
  re-send of a document the DMP already holds is recognised (``already-present``) and counted
  as sent;
- **retries with back-off**: a transient failure (network, timeout, 5xx, a busy registry)
  waits ``RETRY_BASE`` × 2^(attempts-1), at most ``RETRY_MAX``, then tries again; a refusal
  is final (``refused``, with the DMP's error codes), until an administrator asks again;
- the status of each document is visible (:func:`status_of`, the portal and the admin API).
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.directory import service as directory_service
from enrs.documents import access, service
from enrs.documents.dmp import DmpAdapter, DmpOutcome, Verdict, XdsDmpAdapter
from enrs.documents.models import DmpExport, DocumentEntry
from enrs.documents.terminology import Binding, Terminology
from enrs.documents.xds import XdsAuthor, XdsCode, XdsDocument
from enrs.identity import service as identity_service
from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.listeners import Listener
from enrs.kit.storage import open_storage
from enrs.kit.storage.base import BlobStorage
from enrs.settings import Settings

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=6)
HOLD = timedelta(days=1)
BATCH = 50


def status_of(session: Session, entry: DocumentEntry) -> DmpExport | None:
    return session.scalar(select(DmpExport).where(DmpExport.document_id == entry.id))


def ask_again(session: Session, entry: DocumentEntry) -> DmpExport:
    """An administrator's new attempt for a refused or held document."""
    row = status_of(session, entry)
    if row is None:
        row = DmpExport(document_id=entry.id, attempts=0, created_at=utcnow())
        session.add(row)
    row.status, row.next_attempt_at, row.updated_at = "pending", utcnow(), utcnow()
    session.flush()
    return row


@dataclass
class Tally:
    sent: int = 0
    retried: int = 0
    refused: int = 0
    held: int = 0
    skipped: int = 0


def _code(terms: Terminology, binding: Binding, code: str, system: str | None = None) -> XdsCode:
    for concept in terms.concepts(binding):
        if concept.code == code and (system is None or concept.system == system):
            return XdsCode(code, concept.oid(), concept.display)
    raise ValueError(f"{binding}: {code} is not in the shipped value set")


def _author(session: Session, entry: DocumentEntry) -> XdsAuthor:
    family = given = ""
    if entry.author_rpps:
        card = directory_service.professional_card(session, f"8{entry.author_rpps}")
        if card is not None:
            family, given = card.professional.family or "", card.professional.given or ""
    finess = entry.structure_finess or ""
    page = directory_service.structure_page(session, finess, limit=0) if finess else None
    name = page.structure.name if page is not None else finess
    return XdsAuthor(entry.author_rpps, family, given, name, finess)


def build(
    session: Session,
    storage: BlobStorage,
    entry: DocumentEntry,
    ins: tuple[str, str],
    *,
    source_id: str,
    now: datetime,
) -> XdsDocument:
    """The XDS metadata and content of one document, as the DMP takes them."""
    terms = Terminology.load()
    oid, _, value = (entry.source_patient or "").partition("|")
    source_patient = f"{value}^^^&{oid}&ISO^PI" if oid and oid != "rri" and value else None
    kind = _code(terms, Binding.TYPE, entry.type_code, entry.type_system)
    return XdsDocument(
        entry_uuid=f"urn:uuid:{entry.resource_id}",
        unique_id=entry.unique_id,
        patient_ins=ins[0],
        patient_ins_oid=ins[1],
        source_patient_id=source_patient,
        author=_author(session, entry),
        class_code=_code(terms, Binding.CLASS, entry.class_code, entry.class_system),
        type_code=kind,
        format_code=_code(terms, Binding.FORMAT, entry.format_code or ""),
        confidentiality=tuple(
            _code(terms, Binding.CONFIDENTIALITY, code)
            for code in (entry.confidentiality, *sorted(entry.visibility_codes))
        ),
        healthcare_facility_type=_code(terms, Binding.FACILITY_TYPE, entry.facility_type or ""),
        practice_setting=_code(terms, Binding.PRACTICE_SETTING, entry.practice_setting or ""),
        title=entry.title or kind.display,
        creation_time=entry.created or entry.date,
        service_start=entry.period_start,
        service_stop=entry.period_end,
        mime_type=entry.mime_type,
        size=entry.size,
        sha1_hex=entry.sha1,
        language=entry.language or "fr-FR",
        content=service.content_of(storage, entry),
        submission_unique_id=f"{source_id}.{uuid.uuid4().int % 10**18}",
        source_id=source_id,
        submission_time=now,
        content_type_code=kind,
    )


def _retry_at(attempts: int, now: datetime) -> datetime:
    wait: timedelta = RETRY_BASE * (2 ** max(attempts - 1, 0))
    return now + min(wait, RETRY_MAX)


def _record(row: DmpExport, outcome: DmpOutcome, now: datetime, tally: Tally) -> None:
    row.attempts += 1
    row.updated_at = now
    if outcome.delivered:
        row.status, row.sent_at, row.last_error = "sent", now, None
        tally.sent += 1
    elif outcome.verdict == Verdict.REFUSED:
        row.status, row.last_error = "refused", f"{', '.join(outcome.codes)}: {outcome.detail}"
        tally.refused += 1
    else:
        row.status = "pending"
        row.last_error = outcome.detail or ", ".join(outcome.codes)
        row.next_attempt_at = _retry_at(row.attempts, now)
        tally.retried += 1


def _decide(
    session: Session, entry: DocumentEntry
) -> tuple[str, str] | tuple[str, tuple[str, str]]:
    """``("skip", why)``, ``("hold", why)`` or ``("send", (INS, OID))`` for one document."""
    patient_ids = identity_service.merged_patient_ids(session, entry.patient_id)
    if entry.status == "entered-in-error":
        return "skip", "withdrawn"
    if entry.opposed or access.opposed_to_all(session, patient_ids):
        return "skip", "the patient opposes sharing"
    current = identity_service.current_patient(session, entry.patient_id)
    ins = identity_service.qualified_ins(session, [current.id] if current else patient_ids)
    if ins is None:
        return "hold", "the patient has no qualified INS"
    return "send", ins


def _audit(entry: DocumentEntry, rri: str | None, outcome: DmpOutcome) -> AuditEntry:
    return AuditEntry(
        category="dmp",
        interaction="export",
        action="E",
        outcome=Outcome.SUCCESS if outcome.delivered else Outcome.MINOR_FAILURE,
        outcome_desc=None if outcome.delivered else f"{outcome.verdict}: {outcome.detail}"[:500],
        agent_kind="system",
        agent_id="dmp-feed",
        agent_name="ENRS DMP feed",
        patient_ref=f"Patient/{rri}" if rri else None,
        resource_type="DocumentReference",
        entity_ref=f"DocumentReference/{entry.resource_id}",
    )


def _one(
    db: Database,
    storage: BlobStorage,
    adapter: DmpAdapter,
    export_id: int,
    source_id: str,
    tally: Tally,
) -> None:
    """One document: decided and built in a read-only transaction, sent outside any (the
    database is not held while the DMP answers), the outcome and its audit record committed
    together."""
    with db.transaction(write=False) as session:
        row = session.get(DmpExport, export_id)
        entry = session.get(DocumentEntry, row.document_id) if row is not None else None
        if row is None or entry is None or row.status not in ("pending", "held"):
            return
        decision, detail = _decide(session, entry)
        rri = service.rri_of_patient(session, entry.patient_id)
        document = None
        if decision == "send":
            assert isinstance(detail, tuple)
            now = utcnow()
            document = build(session, storage, entry, detail, source_id=source_id, now=now)
    outcome = adapter.send(document) if document is not None else None
    with db.transaction() as session:
        row = session.get(DmpExport, export_id)
        assert row is not None
        now = utcnow()
        if outcome is None:
            row.last_error, row.updated_at = str(detail), now
            if decision == "skip":
                row.status = "skipped"
                tally.skipped += 1
            else:
                row.status, row.next_attempt_at = "held", now + HOLD
                tally.held += 1
            return
        _record(row, outcome, now, tally)
        append_entries(session.connection(), [_audit(entry, rri, outcome)])
    log.info("DMP export of %s: %s %s", entry.unique_id, outcome.verdict, outcome.detail)


def send_due(
    db: Database, storage: BlobStorage, adapter: DmpAdapter, *, source_id: str, limit: int = BATCH
) -> Tally:
    """Send the documents whose turn has come (one courier at a time: ``run`` holds the
    database's ``dmp-feed`` lock); returns what became of them."""
    tally = Tally()
    with db.transaction(write=False) as session:
        due = list(
            session.scalars(
                select(DmpExport.id)
                .where(
                    DmpExport.status.in_(("pending", "held")),
                    DmpExport.next_attempt_at <= utcnow(),
                )
                .order_by(DmpExport.next_attempt_at, DmpExport.id)
                .limit(limit)
            )
        )
    for export_id in due:
        _one(db, storage, adapter, export_id, source_id, tally)
    return tally


def repository_oid(settings: Settings) -> str:
    """The document repository's OID (XDS ``sourceId``), under the region's arc."""
    return f"{settings.oid_root}.4"


def adapter_for(settings: Settings) -> XdsDmpAdapter:
    cert = settings.dmp_cert_file
    key = settings.dmp_key_file
    return XdsDmpAdapter(
        settings.dmp_url,
        client_cert=(str(cert), str(key)) if cert and key else None,
        ca_bundle=str(settings.dmp_ca_file) if settings.dmp_ca_file else None,
    )


def describe(settings: Settings) -> str:
    return f"DMP feed to {settings.dmp_url}, every {settings.dmp_interval:g} s"


def run(settings: Settings) -> None:
    """The ``dmp`` listener of ``enrs serve``: a round every ``dmp_interval`` seconds, by one
    process of the installation at a time (the database's ``dmp-feed`` lock)."""
    logging.basicConfig(level=settings.log_level.upper())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db = Database(settings.database_url)
    storage = open_storage(settings)
    try:
        with adapter_for(settings) as adapter, db.sole("dmp-feed", stop) as held:
            while held and not stop.is_set():
                try:
                    send_due(db, storage, adapter, source_id=repository_oid(settings))
                except Exception:
                    log.exception("DMP feed round failed")
                stop.wait(settings.dmp_interval)
    finally:
        db.dispose()


LISTENER = Listener("dmp", describe, run)
