"""The author the DMP is told about (issue 13): the profession and specialty of the author's
activity, from the directory, in the XDS metadata and the VIHF's role."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.documents import dmp_feed, vihf, xds
from enrs.documents.models import DocumentEntry
from enrs.kit.db import Database, utcnow
from tests.documents.world import CHU, DOCTOR_AT_CHU, bundle, make_region, pdf


def test_the_authors_profession_and_specialty_come_from_the_directory(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path
) -> None:
    region = make_region(app, client, db, tmp_path)
    options = {"author_rpps": DOCTOR_AT_CHU, "author_finess": CHU}
    assert region.provide(bundle((pdf("CR"), "application/pdf", options))).status_code == 200
    with db.transaction(write=False) as session:
        entry = session.scalar(select(DocumentEntry))
        assert entry is not None
        doc = dmp_feed.build(
            session, app.state.storage, entry, ("261049720912380", xds.INS_NIR_OID),
            source_id="1.2.250.1.999.4", now=utcnow(),
        )  # fmt: skip
    assert doc.author.role == xds.XdsCode("10", dmp_feed.PROFESSION_OID, "Médecin")
    assert doc.author.specialty is not None
    assert doc.author.specialty.scheme_oid == dmp_feed.SPECIALTY_OID
    assert vihf.PROFESSION_OID == dmp_feed.PROFESSION_OID
    metadata = xds.submit_objects_request(doc)
    roles = [
        v.text
        for slot in metadata.iter(f"{{{xds.RIM}}}Slot")
        if slot.get("name") == "authorRole"
        for v in slot.iter(f"{{{xds.RIM}}}Value")
    ]
    assert roles and roles[0].startswith("10^")
