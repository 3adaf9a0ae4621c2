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
- **later changes follow**: when a document the DMP holds is corrected or withdrawn,
  :func:`queue_update` (called by ``service.correct`` and ``service.withdraw`` in the
  change's transaction) queues its row again, ``update`` or ``deprecate``; the courier sends
  an ITI-57 *Update Document Set*: a new version of the metadata (same logicalId, a new
  entryUUID derived from the document and the version: :func:`version_uuid`,
  ``PreviousVersion`` the version the DMP holds), or Approved → Deprecated for a withdrawal.
  Same back-off, same refusals, each audited (``dmp``, action ``U``, the operation in the
  detail). A document the DMP does not hold is not updated: its next ITI-41 carries the
  current metadata, or it is skipped when withdrawn (or replaced) before it was sent. A
  change made while a send was under way is queued again when the send is recorded;
- a replacement of a document the DMP holds carries the ``RPLC`` association to the DMP's
  latest version of it, so the DMP deprecates it;
- the status of each document is kept on its export row (:func:`status_of`), shown on the
  document's portal page and, for admins, on `/admin/dmp` (with "Relancer": :func:`ask_again`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.directory import service as directory_service
from enrs.documents import access, service
from enrs.documents.dmp import DmpAdapter, DmpOutcome, Verdict, XdsDmpAdapter
from enrs.documents.models import DmpExport, DocumentEntry
from enrs.documents.terminology import Binding, Terminology
from enrs.documents.vihf import VihfSigner
from enrs.documents.xds import (
    STATUS_DEPRECATED,
    XdsAuthor,
    XdsCode,
    XdsDocument,
    XdsUpdate,
    events_of,
    reference_ids_of,
)
from enrs.identity import service as identity_service
from enrs.kit.audit.trail import AuditEntry, Outcome, append_entries
from enrs.kit.db import Database, utcnow
from enrs.kit.listeners import Listener, run_rounds
from enrs.kit.storage import open_storage
from enrs.kit.storage.base import BlobStorage
from enrs.settings import Settings

log = logging.getLogger(__name__)

RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=6)
HOLD = timedelta(days=1)
BATCH = 50


def status_of(
    session: Session, entry: DocumentEntry, *, for_update: bool = False
) -> DmpExport | None:
    stmt = select(DmpExport).where(DmpExport.document_id == entry.id)
    return session.scalar(stmt.with_for_update() if for_update else stmt)


def queue_update(
    session: Session, entry: DocumentEntry, operation: Literal["update", "deprecate"]
) -> DmpExport | None:
    """Queue an ITI-57 for a document the DMP holds, in the transaction of its correction
    (``update``) or withdrawal (``deprecate``, which an earlier queued update gives way to);
    nothing for a document the DMP does not hold (its next ITI-41 has the current metadata, or
    it is skipped)."""
    row = status_of(session, entry, for_update=True)
    if row is None or row.dmp_version is None:
        return None
    row.operation = operation
    row.status, row.attempts, row.last_error = "pending", 0, None
    row.next_attempt_at = row.updated_at = utcnow()
    session.flush()
    return row


def masked_by_opposition(session: Session, entry: DocumentEntry) -> bool:
    """Whether the patient's opposition (to this document, or to all sharing) masks the
    document to professionals in the DMP (``MASQUE_PS``), which the DMP holds from before the
    opposition. Not for a document invisible to the patient: the DMP refuses both codes
    together (and the patient cannot oppose what they do not see)."""
    if "INVISIBLE_PATIENT" in entry.visibility_codes:
        return False
    patient_ids = identity_service.merged_patient_ids(session, entry.patient_id)
    return entry.opposed or access.opposed_to_all(session, patient_ids)


def queue_opposition(session: Session, entries: list[DocumentEntry]) -> int:
    """Queue an ITI-57 update for each current document the DMP holds whose masking an
    opposition just changed (recorded or lifted); returns how many."""
    queued = 0
    for entry in entries:
        if entry.status == "current" and queue_update(session, entry, "update") is not None:
            queued += 1
    return queued


def version_uuid(entry: DocumentEntry, version: int) -> str:
    """The entryUUID of version ``version`` of the document in the DMP: the document's own for
    the first, then one derived from it (the same on every repeat of an update)."""
    if version == 1:
        return f"urn:uuid:{entry.resource_id}"
    return uuid.uuid5(uuid.UUID(entry.resource_id), f"dmp-version-{version}").urn


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


PROFESSION_OID = "1.2.250.1.71.1.2.7"  # TRE_G15-ProfessionSante (XDS authorRole, VIHF role)
SPECIALTY_OID = "1.2.250.1.71.4.2.5"  # TRE_R38-SpecialiteOrdinale (authorSpecialty, VIHF)


def _author(session: Session, entry: DocumentEntry) -> XdsAuthor:
    """The author as the directory knows them: name, and the profession and specialty of
    their activity at the document's structure (else their first activity), for the XDS
    metadata and the VIHF's role."""
    family = given = ""
    role = specialty = None
    finess = entry.structure_finess or ""
    if entry.author_rpps:
        card = directory_service.professional_card(session, f"8{entry.author_rpps}")
        if card is not None:
            family, given = card.professional.family or "", card.professional.given or ""
            here = [a for a in card.activities if a.finess_site == finess] or card.activities
            if here:
                activity = here[0]
                if activity.profession_code and activity.profession_system is None:
                    role = XdsCode(activity.profession_code, PROFESSION_OID, activity.profession)
                if activity.skill_type_code == "S" and activity.skill_code:
                    specialty = XdsCode(activity.skill_code, SPECIALTY_OID, activity.skill)
    if not family and entry.submitter.startswith("system:"):  # a platform service authored it
        family = entry.submitter.removeprefix("system:")  # (the imaging archive's manifests)
    page = directory_service.structure_page(session, finess, limit=0) if finess else None
    name = page.structure.name if page is not None else finess
    return XdsAuthor(entry.author_rpps, family, given, name, finess, role, specialty)


def build(
    session: Session,
    storage: BlobStorage,
    entry: DocumentEntry,
    ins: tuple[str, str],
    *,
    source_id: str,
    now: datetime,
    masked: bool = False,
) -> XdsDocument:
    """The XDS metadata and content of one document, as the DMP takes them (``masked``: with
    ``MASQUE_PS`` for the patient's opposition, :func:`masked_by_opposition`)."""
    terms = Terminology.load()
    oid, _, value = (entry.source_patient or "").partition("|")
    source_patient = f"{value}^^^&{oid}&ISO^PI" if oid and oid != "rri" and value else None
    kind = _code(terms, Binding.TYPE, entry.type_code, entry.type_system)
    resource = service.stored_resource(entry)
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
            for code in (
                entry.confidentiality,
                *sorted(entry.visibility_codes | ({"MASQUE_PS"} if masked else set())),
            )
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
        reference_ids=reference_ids_of(resource),
        event_codes=events_of(resource),
    )


def _retry_at(attempts: int, now: datetime) -> datetime:
    wait: timedelta = RETRY_BASE * (2 ** max(attempts - 1, 0))
    return now + min(wait, RETRY_MAX)


def _record(row: DmpExport, operation: str, outcome: DmpOutcome, now: datetime) -> str:
    """The row after one send of ``operation``; returns what the tally counts."""
    row.attempts += 1
    row.updated_at = now
    if outcome.delivered:
        row.status, row.sent_at, row.last_error = "sent", now, None
        if operation == "register":
            row.dmp_version = 1
        elif operation == "update":
            row.dmp_version = (row.dmp_version or 1) + 1
        return "sent"
    if outcome.verdict == Verdict.REFUSED:
        row.status, row.last_error = "refused", f"{', '.join(outcome.codes)}: {outcome.detail}"
        return "refused"
    row.status = "pending"
    row.last_error = outcome.detail or ", ".join(outcome.codes)
    row.next_attempt_at = _retry_at(row.attempts, now)
    return "retried"


def _decide(
    session: Session, entry: DocumentEntry, operation: str
) -> tuple[str, str] | tuple[str, tuple[str, str]]:
    """``("skip", why)``, ``("hold", why)`` or ``("send", (INS, OID))`` for one document; an
    update of a document the DMP holds is sent whatever its status."""
    patient_ids = identity_service.merged_patient_ids(session, entry.patient_id)
    if operation == "register":
        if entry.status == "entered-in-error":
            return "skip", "withdrawn"
        if entry.status == "superseded":
            return "skip", "replaced before it reached the DMP"
        if entry.opposed or access.opposed_to_all(session, patient_ids):
            return "skip", "the patient opposes sharing"
    current = identity_service.current_patient(session, entry.patient_id)
    ins = identity_service.qualified_ins(session, [current.id] if current else patient_ids)
    if ins is None:
        return "hold", "the patient has no qualified INS"
    return "send", ins


def _replaced_uuid(session: Session, entry: DocumentEntry) -> str | None:
    """The entryUUID of the DMP's latest version of the document ``entry`` replaces, if the
    DMP holds it (the RPLC association's target)."""
    old = session.get(DocumentEntry, entry.replaces_id) if entry.replaces_id else None
    row = status_of(session, old) if old is not None else None
    if old is None or row is None or row.dmp_version is None:
        return None
    return version_uuid(old, row.dmp_version)


def _request(
    session: Session, doc: XdsDocument, entry: DocumentEntry, row: DmpExport
) -> XdsDocument | XdsUpdate:
    """The ITI-41 document, or the ITI-57 update, that ``row.operation`` asks for."""
    if row.operation == "register":
        return dataclasses.replace(doc, replaces=_replaced_uuid(session, entry))
    held = row.dmp_version or 1
    if row.operation == "deprecate":  # IHE's Deprecated; the CI-SIS also names a DMP-specific
        # urn:asip:ci-sis:2010:StatusType:Deleted, to be settled with the DMP's guide
        latest = dataclasses.replace(doc, entry_uuid=version_uuid(entry, held))
        return XdsUpdate(latest, version_uuid(entry, 1), held, new_status=STATUS_DEPRECATED)
    new = dataclasses.replace(doc, entry_uuid=version_uuid(entry, held + 1))
    return XdsUpdate(new, version_uuid(entry, 1), held)


def _audit(
    entry: DocumentEntry, rri: str | None, operation: str, outcome: DmpOutcome
) -> AuditEntry:
    return AuditEntry(
        category="dmp",
        interaction="export",
        action="E" if operation == "register" else "U",
        outcome=Outcome.SUCCESS if outcome.delivered else Outcome.MINOR_FAILURE,
        outcome_desc=None if outcome.delivered else f"{outcome.verdict}: {outcome.detail}"[:500],
        agent_kind="system",
        agent_id="dmp-feed",
        agent_name="ENRS DMP feed",
        patient_ref=f"Patient/{rri}" if rri else None,
        resource_type="DocumentReference",
        entity_ref=f"DocumentReference/{entry.resource_id}",
        detail=None if operation == "register" else json.dumps({"dmp": operation}),
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
    together. A change of the document meanwhile is queued again (:func:`queue_update`)."""
    with db.transaction(write=False) as session:
        row = session.get(DmpExport, export_id)
        entry = session.get(DocumentEntry, row.document_id) if row is not None else None
        if row is None or entry is None or row.status not in ("pending", "held"):
            return
        operation, built_version = row.operation, entry.version
        masked = masked_by_opposition(session, entry)
        decision, detail = _decide(session, entry, operation)
        rri = service.rri_of_patient(session, entry.patient_id)
        request = None
        if decision == "send":
            assert isinstance(detail, tuple)
            doc = build(
                session, storage, entry, detail, source_id=source_id, now=utcnow(), masked=masked
            )
            request = _request(session, doc, entry, row)
    outcome: DmpOutcome | None = None
    if isinstance(request, XdsUpdate):
        outcome = adapter.update(request)
    elif request is not None:
        outcome = adapter.send(request)
    with db.transaction() as session:
        row = session.get(DmpExport, export_id, with_for_update=True)
        now_entry = session.get(DocumentEntry, entry.id)
        assert row is not None and now_entry is not None
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
        counted = _record(row, operation, outcome, now)
        setattr(tally, counted, getattr(tally, counted) + 1)
        append_entries(session.connection(), [_audit(entry, rri, operation, outcome)])
        changed = now_entry.version != built_version
        if outcome.delivered and (changed or masked_by_opposition(session, now_entry) != masked):
            withdrawn = now_entry.status == "entered-in-error"
            queue_update(session, now_entry, "deprecate" if withdrawn else "update")
    log.info("DMP %s of %s: %s %s", operation, entry.unique_id, outcome.verdict, outcome.detail)


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
    signer = (
        VihfSigner.from_files(
            cert,
            key,
            homologation=settings.dmp_homologation,
            sector=settings.dmp_activity_sector,
            validity=timedelta(minutes=settings.dmp_vihf_minutes),
        )
        if cert and key
        else None
    )  # with the structure's certificate, never a request without a VIHF
    return XdsDmpAdapter(
        settings.dmp_url,
        client_cert=(str(cert), str(key)) if cert and key else None,
        ca_bundle=str(settings.dmp_ca_file) if settings.dmp_ca_file else None,
        vihf_signer=signer,
    )


def describe(settings: Settings) -> str:
    return f"DMP feed to {settings.dmp_url}, every {settings.dmp_interval:g} s"


def run(settings: Settings) -> None:
    """The ``dmp`` listener of ``enrs serve``: a round every ``dmp_interval`` seconds, by one
    process of the installation at a time (the database's ``dmp-feed`` lock)."""

    def prepare(db: Database, stack: ExitStack) -> Callable[[], object]:
        storage = open_storage(settings)
        adapter = stack.enter_context(adapter_for(settings))
        source_id = repository_oid(settings)
        return lambda: send_due(db, storage, adapter, source_id=source_id)

    run_rounds(settings, "dmp-feed", settings.dmp_interval, prepare)


LISTENER = Listener("dmp", describe, run)
