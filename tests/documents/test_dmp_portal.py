"""The DMP feed in the portal (issue 13): each document's way to the DMP on its page, and for
the regional team a page with the counts, the documents that need a look (the DMP's reason
for a refusal) and a button to try one again; admins only, audited."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from enrs.documents.models import DmpExport, DocumentEntry
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import CHU, DOCTOR_AT_CHU, Region, bundle, make_region, pdf
from tests.support.portal import csrf_of, log_in

REASON = "XDSRegistryError: le patient n'a pas de DMP"


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


def _file(region: Region, title: str) -> str:
    options = {"author_rpps": DOCTOR_AT_CHU, "author_finess": CHU}
    answer = region.provide(bundle((pdf(title), "application/pdf", options)))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def _refuse(db: Database, doc_id: str) -> None:
    with db.transaction() as session:
        entry = session.scalar(select(DocumentEntry).where(DocumentEntry.resource_id == doc_id))
        assert entry is not None
        session.execute(
            update(DmpExport)
            .where(DmpExport.document_id == entry.id)
            .values(status="refused", attempts=1, last_error=REASON)
        )


def _status(db: Database, doc_id: str) -> str:
    with db.transaction(write=False) as session:
        return str(
            session.scalar(
                select(DmpExport.status)
                .join(DocumentEntry, DocumentEntry.id == DmpExport.document_id)
                .where(DocumentEntry.resource_id == doc_id)
            )
        )


def test_the_dmp_feed_seen_and_restarted_from_the_portal(
    region: Region, client: TestClient, factory: Factory, db: Database
) -> None:
    refused, waiting = _file(region, "Compte rendu refusé"), _file(region, "Compte rendu")
    _refuse(db, refused)
    factory.user("dr.chu", rpps=DOCTOR_AT_CHU)
    factory.user("root", roles=("admin",))

    log_in(client, "dr.chu")
    page = html.unescape(client.get(f"/dossiers/{region.rri}/documents/{refused}").text)
    assert f"DMP : refusé par le DMP ({REASON})" in page
    page = html.unescape(client.get(f"/dossiers/{region.rri}/documents/{waiting}").text)
    assert "DMP : en attente d'envoi" in page
    assert client.get("/admin/dmp").status_code == 403
    client.cookies.clear()

    log_in(client, "root")
    page = html.unescape(client.get("/admin/dmp").text)
    assert f"/documents/{refused}" in page and REASON in page
    assert "<td>1</td><td>0</td><td>0</td><td>0</td><td>1</td>" in page.replace("\n", "")
    assert waiting not in page  # a first wait needs no look
    assert f'action="/admin/dmp/{refused}/relancer"' in page
    csrf = csrf_of(client.get("/account").text)
    assert client.post(f"/admin/dmp/{refused}/relancer", data={"csrf": "x"}).status_code == 403
    assert _status(db, refused) == "refused"
    again = client.post(f"/admin/dmp/{refused}/relancer", data={"csrf": csrf})
    assert again.status_code == 200 and "renvoyé au prochain passage" in html.unescape(again.text)
    assert _status(db, refused) == "pending"
    assert client.post("/admin/dmp/inconnu/relancer", data={"csrf": csrf}).status_code == 404
    with db.transaction(write=False) as session:
        trail = session.execute(
            select(AuditRecord.interaction, AuditRecord.entity_ref, AuditRecord.outcome).where(
                AuditRecord.resource_type == "DmpExport"
            )
        ).all()
    assert ("update", f"DocumentReference/{refused}", "0") in trail
