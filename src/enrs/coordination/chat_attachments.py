"""A chat message's attachment, filed in the patient's record (issue 15).

A member may attach one file to a message: a PDF or a JPEG image, at most
:attr:`Record.max_bytes` (``ENRS_CHAT_ATTACHMENT_MAX_BYTES``, never more than the repository's
``ENRS_MAX_DOCUMENT_BYTES``), whose content is what its type says (the repository's check,
:func:`enrs.documents.mhd.sniff`). The file is filed as a document of the circle's patient by
the document repository's own path for a professional's upload
(:func:`enrs.documents.upload.file_upload`: the CI-SIS metadata, encrypted blob storage, the
DMP feed's queue), authored by the sender, in the same transaction as the message: both are
stored or neither (the blob written is deleted on rollback). The message keeps the
``DocumentReference`` id, the file's name and type; the repository's read rule (the care
circle is a care relationship, :mod:`enrs.coordination.circle`) lets the circle's members
open it.

Its document type is :data:`TYPE_CODES` per media type (a clinical PDF sent to the circle is
filed as a visit report, an image as an illustration), its facility type and practice
setting :data:`FACILITY_TYPE` / :data:`PRACTICE_SETTING` (the chat does not ask them).

A PNG is refused, with the reason: the repository files only what the CI-SIS gives a format
code for (ASS_12: PDF, JPEG, TIFF, text, RTF — no PNG), as every other way into it does
(ITI-65 without a format code, HL7 v2, the portal's upload); the portal's file picker offers
PDF and JPEG (what a phone's camera makes).

Errors (nothing stored): 422 (a type other than PDF or JPEG, content that is not its type,
data missing or not base64, a ``size`` that is not the data's), 413 (too large).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from enrs.coordination import service
from enrs.coordination.models import CareTeam
from enrs.documents import mhd
from enrs.documents.access import Reader
from enrs.documents.upload import Upload, file_upload
from enrs.identity.config import IdentityConfig
from enrs.kit.errors import PayloadTooLarge, Unprocessable
from enrs.kit.storage.base import BlobStorage

ACCEPTED = {"application/pdf": "PDF", "image/jpeg": "JPEG"}
# JDV_J07-XdsTypeCode-CISIS: "CR ou fiche de consultation ou de visite", "Document encapsulant
# une image d'illustration non DICOM".
TYPE_CODES = {"application/pdf": "11488-4", "image/jpeg": "52040-3"}
FACILITY_TYPE = "SA43"  # JDV_J02: "Secteur non défini"
PRACTICE_SETTING = "AMBULATOIRE"  # JDV_J04
WHERE = "Communication.payload.contentAttachment"


@dataclass(frozen=True)
class Attachment:
    """A file as the sender gave it."""

    content: bytes
    content_type: str
    title: str


@dataclass(frozen=True)
class Record:
    """Where attachments are filed: the repository's storage, the identity domains, the
    region's OID root, and the largest file accepted."""

    storage: BlobStorage
    config: IdentityConfig
    oid_root: str
    max_bytes: int


def check(attachment: Attachment, max_bytes: int) -> None:
    """A PDF or JPEG of at most ``max_bytes`` whose bytes are of its type, else 422/413."""
    if attachment.content_type == "image/png":
        raise Unprocessable(
            f"{WHERE}.contentType: a PNG image is not filed in the patient's record (the "
            "CI-SIS has no format for it): send it as JPEG or PDF"
        )
    if attachment.content_type not in ACCEPTED:
        raise Unprocessable(
            f"{WHERE}.contentType: a PDF or JPEG file "
            f"({', '.join(ACCEPTED)}), not {attachment.content_type!r}"
        )
    if len(attachment.content) > max_bytes:
        raise PayloadTooLarge(f"{WHERE}: a file of at most {max_bytes} bytes")
    if not attachment.content:
        raise Unprocessable(f"{WHERE}.data: the file is empty")
    mhd.sniff(attachment.content, attachment.content_type, WHERE)


def from_fhir(raw: Any, max_bytes: int) -> Attachment:
    """The FHIR ``Attachment`` of a message (``contentType``, ``data`` in base64, ``title``,
    optional ``size``), checked (:func:`check`)."""
    if not isinstance(raw, dict):
        raise Unprocessable(f"{WHERE}: an Attachment")
    content_type = raw.get("contentType")
    data = raw.get("data")
    if not isinstance(content_type, str) or not content_type:
        raise Unprocessable(f"{WHERE}.contentType: required")
    if not isinstance(data, str) or not data:
        raise Unprocessable(f"{WHERE}.data: the file, in base64 (a url is not followed)")
    if len(data) * 3 // 4 > max_bytes + 3:  # before decoding anything
        raise PayloadTooLarge(f"{WHERE}: a file of at most {max_bytes} bytes")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unprocessable(f"{WHERE}.data: not base64") from exc
    size = raw.get("size")
    if size is not None and (type(size) is not int or size != len(content)):
        raise Unprocessable(f"{WHERE}.size: {size!r}, but the data has {len(content)} bytes")
    title = raw.get("title")
    if title is not None and not isinstance(title, str):
        raise Unprocessable(f"{WHERE}.title: a text")
    found = Attachment(content, content_type.split(";")[0].strip().lower(), _title(title))
    check(found, max_bytes)
    return found


def _title(raw: str | None) -> str:
    """The file's name, on one line, at most 256 characters ("" when none)."""
    return " ".join((raw or "").split())[:256]


def file(
    session: Session, record: Record, reader: Reader, team: CareTeam, attachment: Attachment
) -> tuple[str, str]:
    """File the attachment in the record of the circle's patient, authored by the reader;
    returns its DocumentReference id and title (the file's name, else "Pièce jointe — "
    and the circle's name). Checked again here: nothing is filed unchecked."""
    check(attachment, record.max_bytes)
    patient = service.patient_of(session, team)
    title = attachment.title or f"Pièce jointe — {team.name}"[:256]
    filed = file_upload(
        session,
        record.storage,
        record.config,
        reader,
        patient,
        Upload(
            attachment.content,
            attachment.content_type,
            TYPE_CODES[attachment.content_type],
            title,
            None,
            FACILITY_TYPE,
            PRACTICE_SETTING,
        ),
        oid_root=record.oid_root,
        max_bytes=record.max_bytes,
    )
    return filed, title
