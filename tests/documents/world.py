"""A small region for the document repository's tests: two member facilities (the CHU, which
has the patient in care, and a clinic, which does not), their feeders' system clients, the
patient fed by the CHU, doctors listed in the directory, and ITI-65 Bundles built as a
facility's software sends them."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from enrs.accounts import service as accounts_service
from enrs.documents.terminology import Binding, Terminology
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.kit.db import Database
from tests.directory.test_import import finess, line, rpps, run, structure, write
from tests.support.identities import person

CHU, CLINIC = finess(1), finess(2)
CHU_OID, CLINIC_OID = "1.2.250.1.999.1.1", "1.2.250.1.999.2.1"
IPP = "800001"
RPPS_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_OID = "1.2.250.1.71.4.2.2"
SCOPES = "system/DocumentReference.crus system/Binary.r system/List.s system/Patient.r"
FHIR_JSON = "application/fhir+json"
DOCTOR_AT_CHU, DOCTOR_ELSEWHERE = rpps(1), rpps(2)


def pdf(text: str = "Compte rendu") -> bytes:
    """A small valid one-page PDF showing ``text``."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def coding(binding: Binding, code: str) -> dict[str, str]:
    """The coding of ``code`` in the value set of ``binding``, as the shipped data gives it."""
    for concept in Terminology.load().concepts(binding):
        if concept.code == code:
            return {"system": concept.system, "code": code, "display": concept.display}
    raise AssertionError(f"{code} is not in the value set of {binding}")


def oid_unique() -> str:
    return f"1.2.250.1.999.9.{uuid.uuid4().int % 10**12}"


def document_reference(
    binary_url: str,
    content: bytes,
    content_type: str,
    patient: dict[str, Any],
    *,
    author_rpps: str | None = None,
    author_finess: str | None = None,
    type_code: str = "11490-0",
    security: tuple[str, ...] = ("N",),
    visibility: tuple[str, ...] = (),
    fmt: str = "urn:ihe:iti:xds-sd:pdf:2008",
    replaces: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    contained: list[dict[str, Any]] = []
    authors: list[dict[str, str]] = []
    if author_rpps or author_finess:
        role: dict[str, Any] = {"resourceType": "PractitionerRole", "id": "author"}
        if author_rpps:
            contained.append(
                {
                    "resourceType": "Practitioner",
                    "id": "doc",
                    "identifier": [{"system": f"urn:oid:{RPPS_OID}", "value": f"8{author_rpps}"}],
                }
            )
            role["practitioner"] = {"reference": "#doc"}
        if author_finess:
            contained.append(
                {
                    "resourceType": "Organization",
                    "id": "org",
                    "identifier": [
                        {"system": f"urn:oid:{STRUCTURE_OID}", "value": f"1{author_finess}"}
                    ],
                }
            )
            role["organization"] = {"reference": "#org"}
        contained.append(role)
        authors.append({"reference": "#author"})
    labels = [coding(Binding.CONFIDENTIALITY, c) for c in (*security, *visibility)]
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "contained": contained,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid_unique()}"},
        "status": "current",
        "type": {"coding": [coding(Binding.TYPE, type_code)]},
        "category": [{"coding": [coding(Binding.CLASS, "10")]}],
        "subject": patient,
        "date": "2026-12-01T10:00:00+01:00",
        "author": authors,
        "description": "Lettre de liaison",
        "securityLabel": [{"coding": [label]} for label in labels],
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "language": "fr-FR",
                    "url": binary_url,
                    "size": len(content),
                    "hash": base64.b64encode(
                        hashlib.sha1(content, usedforsecurity=False).digest()
                    ).decode(),
                    "title": "Lettre de liaison",
                    "creation": "2026-12-01T09:30:00+01:00",
                },
                "format": coding(Binding.FORMAT, fmt),
            }
        ],
        "context": {
            "period": {"start": "2026-11-25T08:00:00+01:00", "end": "2026-12-01T09:00:00+01:00"},
            "facilityType": {"coding": [coding(Binding.FACILITY_TYPE, "SA01")]},
            "practiceSetting": {"coding": [coding(Binding.PRACTICE_SETTING, "ETABLISSEMENT")]},
        },
    }
    if replaces:
        resource["relatesTo"] = [
            {"code": "replaces", "target": {"reference": f"DocumentReference/{replaces}"}}
        ]
    resource.update(changes)
    return resource


def bundle(
    *documents: tuple[bytes, str, dict[str, Any]],
    patient: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ITI-65 Bundle: a SubmissionSet listing one DocumentReference and its Binary per
    ``(content, content type, DocumentReference options)``."""
    patient = patient or {"identifier": {"system": f"urn:oid:{CHU_OID}", "value": IPP}}
    entries: list[dict[str, Any]] = []
    items = []
    for content, content_type, options in documents:
        ref_url, bin_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
        doc = document_reference(bin_url, content, content_type, patient, **options)
        entries.append(
            {
                "fullUrl": ref_url,
                "resource": doc,
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        )
        entries.append(
            {
                "fullUrl": bin_url,
                "resource": {
                    "resourceType": "Binary",
                    "contentType": content_type,
                    "data": base64.b64encode(content).decode(),
                },
                "request": {"method": "POST", "url": "Binary"},
            }
        )
        items.append({"item": {"reference": ref_url}})
    submission = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [
                {
                    "system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                    "code": "submissionset",
                }
            ]
        },
        "subject": patient,
        "date": "2026-12-01T10:00:00+01:00",
        "identifier": [
            {"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid_unique()}"}
        ],
        "entry": items,
    }
    list_entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": submission,
        "request": {"method": "POST", "url": "List"},
    }
    return {"resourceType": "Bundle", "type": "transaction", "entry": [list_entry, *entries]}


@dataclass
class Region:
    """The region the tests file documents in."""

    app: FastAPI
    client: TestClient
    db: Database
    rri: str
    chu: dict[str, str]  # headers of the CHU's client
    clinic: dict[str, str]  # headers of the clinic's client

    def provide(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            "/fhir", json=body, headers={**(headers or self.chu), "Content-Type": FHIR_JSON}
        )


def _client_headers(db: Database, client: TestClient, facility: str) -> dict[str, str]:
    with db.transaction() as session:
        created, secret = accounts_service.create_client(
            session, name=f"DPI {facility}", scope=SCOPES, finess=facility
        )
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(created.client_id, secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def make_region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    config: IdentityConfig = app.state.identity_config
    with db.transaction() as session:
        domains.add(session, config, CHU_OID, namespace="CHU", owner=CHU)
        domains.add(session, config, CLINIC_OID, namespace="CLINIQUE", owner=CLINIC)
        result = identity_service.feed(
            session, app.state.matcher, person(CHU_OID, IPP), actor="test", config=config
        )
        rri = result.rri
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, site=CHU),
        line(2, site=CLINIC),
    )
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    structures.write_bytes(
        ("finess;etalab;95;2024-01-18\n" + structure(CHU) + structure(CLINIC)).encode("cp1252")
    )
    assert run(db, people).error is None and run(db, structures).error is None
    return Region(
        app, client, db, rri, _client_headers(db, client, CHU), _client_headers(db, client, CLINIC)
    )
