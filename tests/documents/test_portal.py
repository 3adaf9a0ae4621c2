"""The patient file in a real browser (Playwright driving Debian's Chromium) against ``enrs
serve`` (issue 13): documents listed and filtered, a structured CDA shown as HTML, a PDF
uploaded and opened in the browser's viewer, bris de glace by a professional outside the
care relationship, and the access log that shows it."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from enrs.accounts import service as accounts_service
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import matcher_for
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT
from tests.directory.test_import import line, run, structure, write
from tests.documents.world import (
    CHU,
    CHU_OID,
    CLINIC,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    IPP,
    SCOPES,
    bundle,
    pdf,
)
from tests.support.browser import wait_for_query
from tests.support.identities import person
from tests.support.live_server import LiveServer, live_server

DATA = Path(__file__).parent / "data"
PASSWORD = "Correct-horse-42!"


def _prepare(database_url: str, tmp_path: Path) -> str:
    """The CHU, the patient it fed, two doctors (one at the CHU), the regional team; the
    patient's RRI."""
    db = Database(database_url)
    config = IdentityConfig(PLACEHOLDER_OID_ROOT)
    with db.transaction() as session:
        domains.add(session, config, CHU_OID, namespace="CHU", owner=CHU)
        rri = identity_service.feed(
            session, matcher_for(None), person(CHU_OID, IPP), actor="test", config=config
        ).rri
        for username, rpps, roles in (
            ("dr.chu", DOCTOR_AT_CHU, ["professional"]),
            ("dr.autre", DOCTOR_ELSEWHERE, ["professional"]),
            ("regional", None, ["admin"]),
        ):
            accounts_service.create_user(
                session,
                username=username,
                display_name=username,
                password=PASSWORD,
                roles=roles,
                rpps=rpps,
            )
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, site=CHU),
        line(2, site=CLINIC),
    )
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    text = "finess;etalab;95;2024-01-18\n" + structure(CHU) + structure(CLINIC)
    structures.write_bytes(text.encode("cp1252"))
    assert run(db, people).error is None and run(db, structures).error is None
    db.dispose()
    return rri


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[LiveServer, str]]:
    rri = _prepare(database_url, tmp_path)
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as running:
        yield running, rri


def _chu_token(server: LiveServer, database_url: str) -> str:
    db = Database(database_url)
    with db.transaction() as session:
        created, secret = accounts_service.create_client(
            session, name="DPI CHU", scope=SCOPES, finess=CHU
        )
    db.dispose()
    answer = httpx.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(created.client_id, secret or ""),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _structured_cda(rri: str) -> dict[str, Any]:
    """An ITI-65 Bundle with the N3 CDA of the fixtures, its metadata as its header says."""
    content = (DATA / "n3_structured.xml").read_bytes()
    body = bundle(
        (
            content,
            "text/xml",
            {
                "type_code": "34133-9",
                "security": ("R",),
                "fmt": "urn:asip:ci-sis:vsm:2012",
                "author_finess": CHU,
            },
        ),
        patient={"reference": f"Patient/{rri}"},
    )
    doc = body["entry"][1]["resource"]
    attachment = doc["content"][0]["attachment"]
    attachment["creation"] = "2024-03-20T10:45:00"
    digest = hashlib.sha1(content, usedforsecurity=False).digest()
    attachment["hash"] = base64.b64encode(digest).decode()
    doc["context"]["period"] = {"start": "2024-03-18T00:00:00", "end": "2024-03-18T00:00:00"}
    doc["description"] = "Lettre de liaison à la sortie"
    doc["date"] = "2024-03-20T12:00:00+01:00"
    return body


def _log_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


@pytest.mark.browser
def test_the_patient_file_in_a_browser(
    browser: Browser, server: tuple[LiveServer, str], database_url: str, tmp_path: Path
) -> None:
    live, rri = server
    base = live.base_url
    token = _chu_token(live, database_url)
    filed = httpx.post(
        f"{base}/fhir",
        json=_structured_cda(rri),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert filed.status_code == 200, filed.text

    page = browser.new_page()
    _log_in(page, base, "dr.chu")
    page.click(".services >> text=Dossier patient")
    page.wait_for_url("**/dossiers")
    page.fill("#identifiant", rri)
    page.click("#recherche-patient button[type=submit]")
    page.wait_for_url(f"**/dossiers/{rri}")
    assert (
        f"pris en charge par votre structure (FINESS {CHU})"
        in page.locator("#relation").inner_text()
    )
    assert page.locator("#documents tbody tr").count() == 1
    page.click("#documents >> text=Lettre de liaison à la sortie")
    page.wait_for_url(f"**/dossiers/{rri}/documents/*")
    sections = page.locator("#cda h2, #cda h3, #cda h4").all_inner_texts()
    assert "Motif d'hospitalisation" in sections and "Résultats" in sections
    page.screenshot(path=str(tmp_path / "cda.png"), full_page=True)

    page.goto(f"{base}/dossiers/{rri}")
    upload = tmp_path / "lettre.pdf"
    upload.write_bytes(pdf(f"Consultation {uuid.uuid4().hex[:6]}"))
    page.set_input_files("#fichier", str(upload))
    page.select_option("#type-depot", "11488-4")
    page.fill("#titre", "Compte rendu de consultation")
    page.fill("#date_document", "2026-12-02")
    page.select_option("#secteur", "SA01")
    page.select_option("#cadre", "ETABLISSEMENT")
    page.click("#deposer button[type=submit]")
    page.wait_for_url(f"**/dossiers/{rri}?message=depot")
    assert page.locator("#documents tbody tr").count() == 2
    page.select_option("#type", "11488-4")
    page.click("#filtres button[type=submit]")
    wait_for_query(page, type="11488-4")
    rows = page.locator("#documents tbody tr")
    assert rows.count() == 1 and "Compte rendu de consultation" in rows.first.inner_text()
    page.fill("#du", "2030-01-01")
    page.click("#filtres button[type=submit]")
    wait_for_query(page, type="11488-4", du="2030-01-01")
    assert page.locator("#aucun").count() == 1
    page.goto(f"{base}/dossiers/{rri}")
    page.click("#documents >> text=Compte rendu de consultation")
    frame = page.locator("#visionneuse")
    expect(frame).to_have_count(1)  # (the click returns before the document's page is there)
    shown = page.request.get(base + str(frame.get_attribute("src")))
    assert shown.headers["content-type"] == "application/pdf"
    assert shown.body() == upload.read_bytes()

    other = browser.new_page()
    _log_in(other, base, "dr.autre")
    other.goto(f"{base}/dossiers/{rri}")
    assert other.locator("#declarer").count() == 1
    assert other.locator("#aucun").count() == 1
    other.fill("#motif", "Patient admis inconscient aux urgences")
    other.check("#urgence")
    other.click("#declarer button[type=submit]")
    other.wait_for_url(f"**/dossiers/{rri}?message=acces")
    assert "accès en urgence (bris de glace)" in other.locator("#relation").inner_text()
    assert other.locator("#documents tbody tr").count() == 2  # both are shared documents
    team = browser.new_page()
    _log_in(team, base, "regional")
    team.goto(f"{base}/dossiers/{rri}/journal")
    journal = team.locator("#journal").inner_text()
    assert "dr.autre" in journal and "accès en urgence" in journal
    team.screenshot(path=str(tmp_path / "journal.png"), full_page=True)
    team.goto(f"{base}/")
    team.click(".services >> text=Accès en urgence")
    team.wait_for_url("**/admin/bris-de-glace")
    assert "Patient admis inconscient" in team.locator("#urgences").inner_text()
    team.click("#urgences button[type=submit]")
    expect(team.locator("#aucun")).to_have_count(1)

    # A result not yet announced to the patient: others are warned, its author's structure
    # makes it visible, for good, once the announcement is made.
    announced = bundle(
        (
            pdf("Résultat"),
            "application/pdf",
            {
                "visibility": ("INVISIBLE_PATIENT",),
                "author_finess": CHU,
                "description": "Résultat d'anatomopathologie",
            },
        ),
        patient={"reference": f"Patient/{rri}"},
    )
    filed = httpx.post(
        f"{base}/fhir",
        json=announced,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert filed.status_code == 200, filed.text
    other.goto(f"{base}/dossiers/{rri}")
    other.click("#documents >> text=Résultat d'anatomopathologie")
    warning = other.locator("#alerte-visibilite").inner_text()
    assert "ce document n'est pas visible du patient" in warning
    assert other.locator("#rendre-visible").count() == 0  # not the author's structure
    page.goto(f"{base}/dossiers/{rri}")
    row = page.locator("#documents tbody tr", has_text="Résultat d'anatomopathologie")
    assert "non visible par le patient" in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(f"**/dossiers/{rri}/documents/*")
    assert page.locator("#alerte-visibilite").count() == 1
    page.check("#confirme")
    page.click("#rendre-visible button[type=submit]")
    page.wait_for_url("**?message=visible")
    assert page.locator("#alerte-visibilite").count() == 0
    assert page.locator("#rendre-visible").count() == 0
