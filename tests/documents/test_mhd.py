"""IHE MHD on the regional repository (issue 13): ITI-65 filed atomically with its hash, size
and content checked, ITI-67 searches, ITI-66, ITI-68 with the content encrypted at rest, and
everything a bad Bundle or a failing store must not leave behind."""

from __future__ import annotations

import base64
import copy
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enrs.documents.models import DocumentEntry, SubmissionSet
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.settings import Settings
from tests.documents.world import (
    CHU,
    CHU_OID,
    DOCTOR_AT_CHU,
    IPP,
    Region,
    bundle,
    make_region,
    pdf,
)
from tests.support.audit_failure import refuse_audit_inserts


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


def _filed(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    return [e["response"]["location"] for e in body["entry"]]


def _documents(region: Region, query: str, headers: dict[str, str] | None = None) -> Any:
    answer = region.client.get(f"/fhir/DocumentReference?{query}", headers=headers or region.chu)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ids(searchset: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"] for e in searchset.get("entry", []) if e["search"]["mode"] == "match"
    ]


def _counts(db: Database) -> tuple[int, int]:
    with db.transaction(write=False) as session:
        return (
            session.scalar(select(func.count()).select_from(DocumentEntry)) or 0,
            session.scalar(select(func.count()).select_from(SubmissionSet)) or 0,
        )


def _blobs(settings: Settings) -> list[Path]:
    root = settings.storage_path / "documents"
    return sorted(root.rglob("*.blob")) if root.exists() else []


BY_IPP = f"patient.identifier=urn:oid:{CHU_OID}|{IPP}"


def test_a_pdf_is_filed_found_and_retrieved_encrypted(region: Region, settings: Settings) -> None:
    content = pdf("Lettre de liaison de sortie")
    locations = _filed(region.provide(bundle((content, "application/pdf", {}))))
    assert locations[0].startswith("List/") and locations[1].startswith("DocumentReference/")
    doc_id = locations[1].split("/")[1]
    assert locations[2] == f"Binary/{doc_id}"

    found = _documents(region, BY_IPP)
    assert found["total"] == 1 and _ids(found) == [doc_id]
    resource = found["entry"][0]["resource"]
    assert resource["subject"] == {"reference": f"Patient/{region.rri}"}
    attachment = resource["content"][0]["attachment"]
    assert attachment["url"] == f"http://testserver/fhir/Binary/{doc_id}"
    assert (
        attachment["hash"]
        == base64.b64encode(hashlib.sha1(content, usedforsecurity=False).digest()).decode()
    )
    assert _ids(_documents(region, f"patient=Patient/{region.rri}")) == [doc_id]

    got = region.client.get(
        f"/fhir/Binary/{doc_id}", headers={**region.chu, "Accept": "application/pdf"}
    )
    assert got.status_code == 200 and got.content == content
    assert got.headers["content-type"] == "application/pdf"
    as_fhir = region.client.get(
        f"/fhir/Binary/{doc_id}", headers={**region.chu, "Accept": "application/fhir+json"}
    )
    assert base64.b64decode(as_fhir.json()["data"]) == content
    [blob] = _blobs(settings)
    assert b"Lettre de liaison" not in blob.read_bytes()  # encrypted at rest

    with region.db.transaction(write=False) as session:
        rows = session.execute(
            select(
                AuditRecord.interaction, AuditRecord.resource_type, AuditRecord.patient_ref
            ).where(AuditRecord.resource_type.in_(["DocumentReference", "Binary"]))
        ).all()
    assert ("search-type", "DocumentReference", f"Patient/{region.rri}") in rows
    assert ("read", "Binary", f"Patient/{region.rri}") in rows
    assert ("create", "DocumentReference", f"Patient/{region.rri}") in rows


def test_iti_67_filters(region: Region) -> None:
    letter = _filed(region.provide(bundle((pdf("a"), "application/pdf", {}))))[1].split("/")[1]
    report = _filed(
        region.provide(
            bundle(
                (
                    pdf("b"),
                    "application/pdf",
                    {"type_code": "11488-4", "date": "2026-12-03T10:00:00+01:00"},
                )
            )
        )
    )[1].split("/")[1]
    assert _ids(_documents(region, BY_IPP)) == [report, letter]  # newest first
    assert _ids(_documents(region, f"{BY_IPP}&type=http://loinc.org|11488-4")) == [report]
    assert _ids(_documents(region, f"{BY_IPP}&type=http://loinc.org|11490-0")) == [letter]
    assert _ids(_documents(region, f"{BY_IPP}&date=ge2026-12-02")) == [report]
    assert _ids(_documents(region, f"{BY_IPP}&status=current")) == [report, letter]
    assert _ids(_documents(region, f"{BY_IPP}&status=superseded")) == []
    assert len(_ids(_documents(region, f"{BY_IPP}&security-label=N"))) == 2
    assert _ids(_documents(region, f"{BY_IPP}&security-label=R")) == []
    assert len(_ids(_documents(region, f"{BY_IPP}&facility=SA01&setting=ETABLISSEMENT"))) == 2
    assert _ids(_documents(region, f"{BY_IPP}&facility=SA05")) == []
    assert len(_ids(_documents(region, f"{BY_IPP}&format=urn:ihe:iti:xds-sd:pdf:2008"))) == 2
    assert _ids(_documents(region, f"{BY_IPP}&period=ge2026-11-20&_count=1")) == [report]

    lists = region.client.get(f"/fhir/List?{BY_IPP}", headers=region.chu).json()
    assert lists["total"] == 2
    members = [e["resource"]["entry"][0]["item"]["reference"] for e in lists["entry"]]
    assert sorted(members) == sorted([f"DocumentReference/{report}", f"DocumentReference/{letter}"])


def test_a_query_without_its_patient_is_refused(region: Region) -> None:
    answer = region.client.get("/fhir/DocumentReference?status=current", headers=region.chu)
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"
    unknown = region.client.get(
        f"/fhir/DocumentReference?patient.identifier=urn:oid:{CHU_OID}|nobody", headers=region.chu
    )
    assert unknown.status_code == 422


def _tampered(change: str) -> dict[str, Any]:
    body = bundle((pdf(), "application/pdf", {}))
    doc, binary = body["entry"][1]["resource"], body["entry"][2]["resource"]
    attachment = doc["content"][0]["attachment"]
    if change == "hash":
        attachment["hash"] = base64.b64encode(
            hashlib.sha1(b"other", usedforsecurity=False).digest()
        ).decode()
    elif change == "size":
        attachment["size"] += 1
    elif change == "not-a-pdf":
        data = b"<html>not a pdf</html>"
        binary["data"] = base64.b64encode(data).decode()
        attachment.update(
            size=len(data),
            hash=base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode(),
        )
    elif change == "content-type":
        binary["contentType"] = "image/png"
    elif change == "type-code":
        doc["type"] = {"coding": [{"system": "http://loinc.org", "code": "99999-9"}]}
    elif change == "patient":
        unknown = {"identifier": {"system": f"urn:oid:{CHU_OID}", "value": "nobody"}}
        doc["subject"] = body["entry"][0]["resource"]["subject"] = unknown
    elif change == "unlisted":
        body["entry"][0]["resource"]["entry"] = []
    elif change == "base64":
        binary["data"] = "%%%not base64%%%"
    return body


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ("hash", 422, "hash"),
        ("size", 422, "size"),
        ("not-a-pdf", 422, "not application/pdf"),
        ("content-type", 422, "contentType"),
        ("type-code", 422, "99999-9"),
        ("patient", 422, "nobody"),
        ("unlisted", 422, "not listed"),
        ("base64", 422, "base64"),
    ],
)
def test_a_bad_bundle_is_refused_and_nothing_is_stored(
    region: Region, settings: Settings, change: str, status: int, words: str
) -> None:
    _filed(region.provide(bundle((pdf("kept"), "application/pdf", {}))))
    before = _counts(region.db), _blobs(settings)
    answer = region.provide(_tampered(change))
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"]
    assert (_counts(region.db), _blobs(settings)) == before
    assert len(_ids(_documents(region, BY_IPP))) == 1  # still serving, the first one intact


def test_an_oversized_document_and_a_repeated_unique_id(region: Region, settings: Settings) -> None:
    region.app.state.settings = settings.model_copy(update={"max_document_bytes": 2048})
    big = pdf("x" * 3000)
    assert region.provide(bundle((big, "application/pdf", {}))).status_code == 413
    body = bundle((pdf(), "application/pdf", {}))
    _filed(region.provide(body))
    again = copy.deepcopy(body)
    again["entry"][0]["resource"]["identifier"][0]["value"] = "urn:oid:1.2.250.1.999.9.1"
    answer = region.provide(again)
    assert answer.status_code == 409 and "already registered" in answer.text
    assert _counts(region.db) == (1, 1)


def test_a_store_that_fails_leaves_neither_rows_nor_contents(
    region: Region, settings: Settings
) -> None:
    two = bundle((pdf("one"), "application/pdf", {}), (pdf("two"), "application/pdf", {}))
    refuse_audit_inserts(region.db, True)  # the transaction fails after the contents are written
    try:
        answer = region.provide(two)
    finally:
        refuse_audit_inserts(region.db, False)
    assert answer.status_code == 503
    assert _counts(region.db) == (0, 0) and _blobs(settings) == []

    shutil.rmtree(settings.storage_path / "documents", ignore_errors=True)
    (settings.storage_path / "documents").parent.mkdir(parents=True, exist_ok=True)
    (settings.storage_path / "documents").write_text("a file where the folder should be")
    answer = region.provide(bundle((pdf("three"), "application/pdf", {})))
    assert answer.status_code == 503, answer.text
    assert _counts(region.db) == (0, 0)
    (settings.storage_path / "documents").unlink()
    _filed(region.provide(bundle((pdf("four"), "application/pdf", {}))))
    assert _counts(region.db) == (1, 1) and len(_blobs(settings)) == 1


def test_a_tampered_content_is_never_handed_out(region: Region, settings: Settings) -> None:
    doc_id = _filed(region.provide(bundle((pdf(), "application/pdf", {}))))[1].split("/")[1]
    [blob] = _blobs(settings)
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    answer = region.client.get(f"/fhir/Binary/{doc_id}", headers=region.chu)
    assert answer.status_code == 500
    assert b"Compte rendu" not in answer.content


def test_no_document_without_a_token(region: Region) -> None:
    doc_id = _filed(region.provide(bundle((pdf(), "application/pdf", {}))))[1].split("/")[1]
    assert region.client.get(f"/fhir/Binary/{doc_id}").status_code == 401
    assert region.client.get(f"/fhir/DocumentReference?{BY_IPP}").status_code == 401
    assert (
        region.client.post("/fhir", json=bundle((pdf(), "application/pdf", {}))).status_code == 401
    )
    assert CHU  # the CHU's client filed it


def test_a_cda_is_checked_against_its_metadata(region: Region) -> None:
    from enrs.documents.models import DocumentEntry as Entry
    from tests.documents.test_hl7 import cda

    def cda_bundle(content: bytes, **options: Any) -> dict[str, Any]:
        options.setdefault("author_rpps", DOCTOR_AT_CHU)
        return bundle((content, "text/xml", options))

    assert region.provide(cda_bundle(cda())).status_code == 200
    other = region.provide(cda_bundle(cda(ipp="800002")))
    assert other.status_code == 422 and "patient id" in other.text
    wrong_type = region.provide(cda_bundle(cda(), type_code="11488-4"))
    assert wrong_type.status_code == 422 and "type 11490-0 in the CDA" in wrong_type.text
    wrong_level = region.provide(cda_bundle(cda(), security=("R",)))
    assert wrong_level.status_code == 422 and "confidentiality" in wrong_level.text
    broken = region.provide(cda_bundle(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id"))
    assert broken.status_code == 422 and "CDA" in broken.text
    with region.db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == 1


def test_a_cda_replacement_is_refused_unless_the_metadata_replace_too(region: Region) -> None:
    from tests.documents.test_hl7 import cda

    def version(extension: str, parent: str | None) -> bytes:
        text = cda().decode().replace('extension="CR1"', f'extension="{extension}"')
        if parent is not None:
            related = (
                '<relatedDocument typeCode="RPLC"><parentDocument>'
                f'<id root="1.2.250.1.999.7.5" extension="{parent}"/>'
                "</parentDocument></relatedDocument><componentOf>"
            )
            text = text.replace("<componentOf>", related)
        return text.encode()

    def provide(content: bytes, **options: Any) -> Any:
        options.setdefault("author_rpps", DOCTOR_AT_CHU)
        return region.provide(bundle((content, "text/xml", options)))

    def filed_id(response: Any) -> str:
        [location] = [x for x in _filed(response) if x.startswith("DocumentReference/")]
        return str(location.split("/")[1])

    first_id = filed_id(provide(version("CR1", None)))
    other_id = filed_id(provide(version("CR9", None)))
    # the CDA says it replaces CR1, the metadata say nothing: refused
    silent = provide(version("CR2", "CR1"))
    assert silent.status_code == 422 and "name no replaced document" in silent.text
    assert _counts(region.db)[0] == 2
    right = provide(version("CR2", "CR1"), replaces=first_id)
    assert right.status_code == 200, right.text
    with region.db.transaction(write=False) as session:
        rows = session.execute(select(DocumentEntry.resource_id, DocumentEntry.status)).all()
    statuses = dict(rows)
    assert statuses[first_id] == "superseded" and statuses[other_id] == "current"
