"""Documents of the patient's record sent from the webmail: the compose page lists the chosen
documents, the message carries them in an IHE_XDM.zip (with the ``X-MSS-*`` headers of its
CDA documents and the ``XDM/1.0/DDM+…`` subject).

The document repository's rule decides (:mod:`enrs.documents.access`): only documents the
professional may read are attached, all of one patient, and only for a patient whose identity
is qualified (the MSSanté documents name the patient by INS). Every document read for the
message is audited with its patient, as a download is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.orm import Session

from enrs.documents import dmp_feed, service
from enrs.documents.access import reader_of
from enrs.documents.models import DocumentEntry
from enrs.documents.xds import InvalidXdsDocument
from enrs.identity import service as identity_service
from enrs.identity.access import patient_sources
from enrs.identity.service import PatientRef
from enrs.kit.audit.trail import Outcome
from enrs.kit.errors import EnrsError
from enrs.kit.http import new_entry, set_agent
from enrs.kit.security.principal import Principal
from enrs.kit.storage.base import BlobStorage
from enrs.messaging import mss
from enrs.messaging.xdm import XdmSubmission, build_xdm
from enrs.settings import Settings

MAX_DOCUMENTS = 20


class DocumentsRefused(ValueError):
    """The documents cannot be sent (the reason, in French, for the form)."""


@dataclass(frozen=True)
class Chosen:
    """The documents picked for a message, all of one patient."""

    patient: PatientRef
    entries: list[DocumentEntry]
    ins: tuple[str, str] | None  # the patient's qualified INS, None when there is none
    family: str
    given: str
    birth: str  # DD/MM/YYYY, "" when unknown


def _audit_read(request: Request, user: Principal, doc_id: str, rri: str | None) -> None:
    entry = new_entry(request, "rest", "read", action="R", resource_type="DocumentReference")
    set_agent(entry, user)
    entry.entity_ref = f"DocumentReference/{doc_id}"
    if rri is not None:
        entry.patient_ref = f"Patient/{rri}"


def chosen(request: Request, session: Session, user: Principal, ids: list[str]) -> Chosen | None:
    """The documents ``ids`` if the professional may read each of them and they are of one
    patient; raises :class:`DocumentsRefused` otherwise (every read audited)."""
    ids = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not ids:
        return None
    if len(ids) > MAX_DOCUMENTS:
        raise DocumentsRefused(f"{MAX_DOCUMENTS} documents au plus par message")
    reader = reader_of(session, user)
    entries, patients = [], {}
    for doc_id in ids:
        try:
            entry, patient, _granted = service.visible_entry(session, reader, doc_id)
        except service.DocumentForbidden as exc:
            _audit_read(request, user, doc_id, exc.patient.rri)
            request.state.audit[-1].outcome = Outcome.MINOR_FAILURE
            raise DocumentsRefused("vous n'avez pas accès à l'un des documents choisis") from None
        except EnrsError:
            _audit_read(request, user, doc_id, None)
            request.state.audit[-1].outcome = Outcome.MINOR_FAILURE
            raise DocumentsRefused("l'un des documents choisis n'existe pas") from None
        _audit_read(request, user, doc_id, patient.rri)
        entries.append(entry)
        patients[patient.id] = patient
    if len(patients) > 1:
        raise DocumentsRefused("un message ne concerne qu'un seul patient")
    [patient] = patients.values()
    merged = identity_service.merged_patient_ids(session, patient.id)
    ins = identity_service.qualified_ins(session, merged)
    family = given = birth = ""
    for source in patient_sources(session, patient.id):
        if source.ins and ins is not None and source.ins == ins[0]:
            family, given = source.birth_name, (source.given_names.split(" ") or [""])[0]
            birth = source.birth_date.strftime("%d/%m/%Y") if source.birth_date else ""
            break
    return Chosen(patient, entries, ins, family, given, birth)


def subject(picked: Chosen) -> str:
    """The MSSanté subject of a message carrying the documents."""
    label = picked.entries[0].title or "Document" if len(picked.entries) == 1 else ""
    count = len(picked.entries)
    birth = datetime.strptime(picked.birth, "%d/%m/%Y").date() if picked.birth else None
    if birth is None:
        return f"XDM/1.0/DDM+{label or f'{count} documents'}"
    return mss.subject(label or count, picked.family, picked.given, birth)


def archive(
    settings: Settings,
    storage: BlobStorage,
    session: Session,
    picked: Chosen,
    *,
    sender: str,
    organisation: str,
) -> bytes:
    """The IHE_XDM.zip of the documents (their contents read with the SHA-1 checked)."""
    if picked.ins is None:
        raise DocumentsRefused(
            "l'identité de ce patient n'est pas qualifiée : ses documents ne partent pas par "
            "la messagerie sécurisée (INS requis)"
        )
    now = datetime.now(UTC)
    source_id = dmp_feed.repository_oid(settings)
    try:
        docs = [
            dmp_feed.build(session, storage, entry, picked.ins, source_id=source_id, now=now)
            for entry in picked.entries
        ]
        submission = XdmSubmission(
            unique_id=f"{source_id}.{uuid.uuid4().int % 10**18}",
            title=subject(picked),
            submission_time=now,
        )
        return build_xdm(
            docs, submission, sender=sender, organisation=organisation, software="ENRS"
        )
    except (InvalidXdsDocument, ValueError) as exc:
        raise DocumentsRefused(f"ces documents ne peuvent pas être envoyés : {exc}") from None
