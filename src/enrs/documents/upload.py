"""A document a professional files from the portal: its metadata made from the form (type,
title, date, facility type, practice setting), the class and format codes derived as the
CI-SIS does (ASS_X04 from the type, ASS_12 from the media type), filed through
:func:`enrs.documents.service.file_submission` with every check of ITI-65."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from enrs.documents import mhd, service
from enrs.documents.access import Reader
from enrs.documents.correspondence import Target, class_of_type, format_of_media
from enrs.documents.mhd import InvalidSubmission, ProvidedDocument, Submission
from enrs.documents.terminology import Binding, Concept, Terminology
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.kit.errors import PayloadTooLarge
from enrs.kit.storage.base import BlobStorage


@dataclass(frozen=True)
class Upload:
    content: bytes
    media_type: str
    type_code: str
    title: str
    created: datetime | None
    facility_type: str
    practice_setting: str


def _concept(terms: Terminology, binding: Binding, code: str, what: str) -> Concept:
    for concept in terms.concepts(binding):
        if concept.code == code:
            return concept
    raise InvalidSubmission(f"{what} : code {code!r} inconnu")


def _derived(target: Target | None, binding: Binding, what: str) -> Concept:
    if target is None:
        raise InvalidSubmission(f"{what} : aucune correspondance CI-SIS")
    return Terminology.load().check(binding, target.system, target.code)


def file_upload(
    session: Session,
    storage: BlobStorage,
    config: IdentityConfig,
    reader: Reader,
    patient: PatientRef,
    upload: Upload,
    *,
    oid_root: str,
    max_bytes: int,
) -> str:
    """File the uploaded document; returns its DocumentReference id."""
    if len(upload.content) > max_bytes:
        raise PayloadTooLarge(f"un document fait au plus {max_bytes} octets")
    if upload.media_type not in mhd.ACCEPTED_TYPES or upload.media_type in mhd.CDA_TYPES:
        raise InvalidSubmission(f"type de fichier {upload.media_type!r} non accepté ici")
    mhd.sniff(upload.content, upload.media_type, "fichier")
    terms = Terminology.load()
    kind = _concept(terms, Binding.TYPE, upload.type_code, "Type de document")
    unique = f"{oid_root}.4.1.{uuid.uuid4().int % 10**20}"
    document = ProvidedDocument(
        full_url=f"urn:uuid:{uuid.uuid4()}",
        resource={
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique}"},
            "description": upload.title,
            "content": [{"attachment": {"contentType": upload.media_type, "title": upload.title}}],
        },
        unique_id=unique,
        patient=("rri", patient.rri),
        type=kind,
        category=_derived(class_of_type(kind.system, kind.code), Binding.CLASS, "Classe"),
        confidentiality=_concept(terms, Binding.CONFIDENTIALITY, "N", "Confidentialité"),
        visibility=frozenset(),
        format=_derived(format_of_media(upload.media_type), Binding.FORMAT, "Format"),
        facility_type=_concept(terms, Binding.FACILITY_TYPE, upload.facility_type, "Secteur"),
        practice_setting=_concept(
            terms, Binding.PRACTICE_SETTING, upload.practice_setting, "Cadre d'exercice"
        ),
        content=upload.content,
        content_type=upload.media_type,
        sha1=hashlib.sha1(upload.content, usedforsecurity=False).hexdigest(),
        title=upload.title or kind.display,
        date=datetime.now(UTC),
        created=upload.created,
        period_start=None,
        period_end=None,
        author_rpps=reader.rpps,
        author_finess=min(reader.structures) if reader.structures else None,
        author_reference=None,
        language="fr-FR",
        replaces=None,
    )
    submission = Submission(
        list_full_url=f"urn:uuid:{uuid.uuid4()}",
        list_resource={"resourceType": "List", "code": {"coding": [{"code": "submissionset"}]}},
        unique_id=f"{oid_root}.4.2.{uuid.uuid4().int % 10**20}",
        source_id=f"{oid_root}.4",
        patient=("rri", patient.rri),
        documents=[document],
    )
    filed = service.file_submission(session, storage, config, reader, submission)
    return filed.documents[document.full_url].resource_id
