"""Publication of the operator's mailboxes to the national health directory (Annuaire Santé),
kept in sync.

In the national FHIR directory a mailbox is a ``telecom`` (profile AS Mailbox MSS) of the
resource that carries it — ``Practitioner`` for PER and CAB (identifier idNatPs ``8`` + RPPS),
``Organization`` for ORG and APP (idNatSt ``1`` + FINESS) — with two extensions: the mail type
(``fr-core-contact-point-email-type`` = ``MSSANTE``, TRE_R256) and the mailbox metadata
(``as-ext-mailbox-mss-metadata``: ``type`` of TRE_R257, ``listeRouge``, ``description``,
``digitization``). Operators write it with a FHIR Patch (``application/fhir+json``
``Parameters``) on the carrying resource, found by a conditional ``PATCH`` on its identifier
(the API answers 404 when none matches, 412 when several do).

Sync is by state, so that nothing is lost and a failure heals by itself: each mailbox keeps
the digest of what was last published (``mail_mailbox.published``). :func:`publish_pending`
sends, for each mailbox whose current state differs, one patch that deletes its ``telecom``
(a no-op when absent) and, when it is to be listed (active), adds the current one; the
digest is stored only once the directory answered 2xx. A mailbox that cannot be published
(bound to a regional structure without FINESS) is reported and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM, valid_finess
from enrs.kit.db import Database
from enrs.messaging.models import Mailbox
from enrs.settings import Settings

log = logging.getLogger(__name__)

EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
METADATA = (
    "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/"
    "as-ext-mailbox-mss-metadata"
)
TRE_R256 = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
TRE_R257 = "https://mos.esante.gouv.fr/NOS/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
FHIR_JSON = "application/fhir+json"
UNPUBLISHED = "-"  # the digest of "not in the national directory"


class NotPublishable(ValueError):
    """A mailbox the national directory cannot carry."""


def carrier(box: Mailbox) -> tuple[str, str]:
    """The national resource that carries ``box``: its type and ``system|value`` identifier."""
    if box.kind in ("PER", "CAB"):
        if not box.rpps:
            raise NotPublishable(f"{box.address}: no RPPS")
        return "Practitioner", f"{RPPS_SYSTEM}|8{box.rpps}"
    if not box.finess or not valid_finess(box.finess):
        raise NotPublishable(f"{box.address}: bound to {box.finess}, a structure without FINESS")
    return "Organization", f"{FINESS_SYSTEM}|1{box.finess}"


def contact_point(box: Mailbox) -> dict[str, Any]:
    """``box`` as the ``telecom`` of the national directory (profile AS Mailbox MSS)."""
    metadata: list[dict[str, Any]] = [
        {
            "url": "type",
            "valueCodeableConcept": {"coding": [{"system": TRE_R257, "code": box.kind}]},
        },
        {"url": "listeRouge", "valueBoolean": box.liste_rouge},
    ]
    if box.description and box.kind != "PER":  # the directory has no description for PER
        metadata.append({"url": "description", "valueString": box.description})
    return {
        "extension": [
            {"url": EMAIL_TYPE, "valueCoding": {"system": TRE_R256, "code": "MSSANTE"}},
            {"url": METADATA, "extension": metadata},
        ],
        "system": "email",
        "value": box.address,
    }


def listed(box: Mailbox) -> bool:
    """Whether ``box`` is to be in the national directory: while it is active (a suspended
    or inactive mailbox is taken out; one on the *liste rouge* is sent with that flag, for the
    directory to keep it out of public view)."""
    return box.status == "active"


def digest(box: Mailbox) -> str:
    """The digest of what the national directory should hold for ``box``."""
    if not listed(box):
        return UNPUBLISHED
    payload = json.dumps([carrier(box), contact_point(box)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def patch(box: Mailbox) -> dict[str, Any]:
    """The FHIR Patch that brings the national directory to ``box``'s current state."""
    kind, _ = carrier(box)
    quoted = box.address.replace("\\", "\\\\").replace("'", "\\'")  # a FHIRPath string
    target = f"{kind}.telecom.where(value = '{quoted}')"
    operations: list[list[dict[str, Any]]] = [
        [{"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": target}]
    ]
    if listed(box):
        operations.append(
            [
                {"name": "type", "valueCode": "add"},
                {"name": "path", "valueString": kind},
                {"name": "name", "valueString": "telecom"},
                {"name": "value", "valueContactPoint": contact_point(box)},
            ]
        )
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": part} for part in operations],
    }


@dataclass
class Published:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # address: reason (retried next time)
    skipped: list[str] = field(default_factory=list)  # address: why it cannot be published


def pending(session: Session) -> Sequence[Mailbox]:
    """The mailboxes whose published state is not their current one."""
    boxes = session.scalars(sa.select(Mailbox).order_by(Mailbox.id)).all()
    out = []
    for box in boxes:
        try:
            if digest(box) != (box.published or UNPUBLISHED):
                out.append(box)
        except NotPublishable:
            continue
    return out


def publish_pending(db: Database, client: httpx.Client, base_url: str) -> Published:
    """Send what changed to the national directory at ``base_url`` (see the module)."""
    result = Published()
    with db.transaction(write=False) as session:
        work = [
            (box.id, box.address, digest(box), patch(box), carrier(box)) for box in pending(session)
        ]
        for box in session.scalars(sa.select(Mailbox)):
            try:
                carrier(box)
            except NotPublishable as exc:
                if listed(box):
                    result.skipped.append(str(exc))
    for box_id, address, state, body, (kind, identifier) in work:
        url = f"{base_url.rstrip('/')}/{kind}?identifier={quote(identifier, safe='')}"
        try:
            answer = client.patch(
                url, content=json.dumps(body), headers={"Content-Type": FHIR_JSON}
            )
        except httpx.HTTPError as exc:
            result.failed.append(f"{address}: {type(exc).__name__}")
            continue
        if not answer.is_success:
            reason = {404: "no such resource", 412: "several resources match"}.get(
                answer.status_code, answer.reason_phrase
            )
            result.failed.append(f"{address}: {answer.status_code} {reason}")
            continue
        with db.transaction() as session:
            session.execute(sa.update(Mailbox).where(Mailbox.id == box_id).values(published=state))
        result.sent.append(address)
    for line in result.failed:
        log.warning("national directory: %s (retried)", line)
    return result


def directory_client(settings: Settings) -> httpx.Client:
    """An HTTP client for the national directory (its API key, a bounded timeout)."""
    headers = {"Accept": FHIR_JSON}
    if settings.mss_directory_api_key is not None:
        headers["ESANTE-API-KEY"] = settings.mss_directory_api_key.get_secret_value()
    return httpx.Client(headers=headers, timeout=30.0)


def publish(settings: Settings, db: Database) -> Published | None:
    """:func:`publish_pending` to ``ENRS_MSS_DIRECTORY_URL`` (None when it is not set)."""
    if not settings.mss_directory_url:
        return None
    with directory_client(settings) as client:
        return publish_pending(db, client, settings.mss_directory_url)
