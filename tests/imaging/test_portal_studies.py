"""A patient's imaging studies in the portal and the access codes of a study (issue 16): the
list shows what the access rule lets the professional read (a professional without a care
relationship refused, in French), every page audited with the patient; codes created and
revoked through the CSRF-protected forms (through share.py: the code typed on
``/imagerie/code`` opens the study, then no more once revoked); a form without its CSRF token
changes nothing; in Debian's Chromium, a doctor creates a code that a fresh browser opens."""

from __future__ import annotations

import re
from datetime import date
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from enrs.identity import service as identity_service
from enrs.imaging.share_models import Share
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import CHU_OID, DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, make_region
from tests.imaging.conftest import Archived
from tests.imaging.web_world import Imaging, make_imaging
from tests.support.identities import person
from tests.support.live_server import live_server
from tests.support.portal import PASSWORD, csrf_of, log_in

CODE = re.compile(r'<strong id="code">([A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4})<')


@pytest.fixture
def imaging(
    app: Any, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


def _user(imaging: Imaging, factory: Factory, name: str, **options: Any) -> TestClient:
    factory.user(name, **options)
    browser = TestClient(imaging.region.app, headers={"Accept": "text/html"})
    log_in(browser, name)
    return browser


def _studies(imaging: Imaging) -> str:
    return f"/imagerie/patients/{imaging.region.rri}"


def _page(imaging: Imaging, uid: str) -> str:
    return f"{_studies(imaging)}/examens/{uid}"


def _records(db: Database, **where: Any) -> list[AuditRecord]:
    with db.transaction(write=False) as session:
        found = select(AuditRecord).filter_by(category="imaging", **where)
        return list(session.scalars(found.order_by(AuditRecord.seq)))


def _shares(db: Database) -> list[Share]:
    with db.transaction(write=False) as session:
        return list(session.scalars(select(Share).order_by(Share.id)))


def _code_opens(imaging: Imaging, code: str) -> int:
    visitor = TestClient(imaging.region.app)
    form = {"code": code, "csrf": csrf_of(visitor.get("/imagerie/code").text)}
    return visitor.post("/imagerie/code", data=form, follow_redirects=False).status_code


def test_the_patients_studies_by_the_access_rule(
    imaging: Imaging, tmp_path: Path, factory: Factory
) -> None:
    _, first = imaging.store(tmp_path, seed=1)
    imaging.store(tmp_path, seed=2, study_uid=first.StudyInstanceUID,
                  series_uid=first.SeriesInstanceUID)  # fmt: skip
    _, second = imaging.store(tmp_path, seed=3)
    db, rri = imaging.region.db, imaging.region.rri
    doctor = _user(imaging, factory, "dr.chu", rpps=DOCTOR_AT_CHU)

    # From the patient's file to the list: both studies, with the viewer's link for each.
    assert f'href="/imagerie/patients/{rri}"' in doctor.get(f"/dossiers/{rri}").text
    page = doctor.get(_studies(imaging))
    assert page.status_code == 200, page.text
    html = unescape(page.text)
    assert "2 examen(s)" in html
    for ds, images in ((first, 2), (second, 1)):
        uid = ds.StudyInstanceUID
        row = html.split(f'data-uid="{uid}"')[1].split("</tr>")[0]
        assert '<td class="date">05/12/2026</td>' in row
        assert '<td class="modality">CT</td>' in row
        assert '<td class="description">TDM THORAX</td>' in row
        assert f'<td class="images">{images}</td>' in row
        assert f'href="/imagerie/visionneuse/viewer?StudyInstanceUIDs={uid}"' in row
    listed = _records(db, interaction="search-type")
    assert [(r.patient_ref, r.outcome) for r in listed] == [(f"Patient/{rri}", "0")]

    # A professional without a care relationship sees nothing: refused, in French, audited.
    elsewhere = _user(imaging, factory, "dr.clinique", rpps=DOCTOR_ELSEWHERE)
    refused = elsewhere.get(_studies(imaging))
    assert refused.status_code == 403
    assert "pas de relation de soins avec ce patient" in unescape(refused.text)
    assert first.StudyInstanceUID not in refused.text
    study_refused = elsewhere.get(_page(imaging, first.StudyInstanceUID))
    assert study_refused.status_code == 403
    assert "Vous n'avez pas accès à cet examen" in unescape(study_refused.text)
    failed = [r for r in _records(db) if r.agent_name == "Dr.Clinique"]
    assert len(failed) == 2 and all(r.patient_ref == f"Patient/{rri}" for r in failed)
    assert all(r.outcome != "0" for r in failed)

    # Not a professional; an unknown patient; an unknown study.
    clerk = _user(imaging, factory, "secretaire", roles=("social",))
    assert clerk.get(_studies(imaging)).status_code == 403
    assert clerk.get("/imagerie/patients/RRI-INCONNU").status_code == 403  # role first
    assert doctor.get("/imagerie/patients/RRI-INCONNU").status_code == 404
    assert doctor.get(_page(imaging, "1.2.3.404")).status_code == 404
    # The study page, audited as a read of the study with its patient.
    shown = doctor.get(_page(imaging, first.StudyInstanceUID))
    assert shown.status_code == 200 and "Aucun code actif." in shown.text
    read = _records(db, interaction="read")[-1]
    assert read.entity_ref == f"ImagingStudy/{first.StudyInstanceUID}"
    assert read.patient_ref == f"Patient/{rri}" and read.outcome == "0"


def test_codes_created_and_revoked_through_the_forms(
    imaging: Imaging, tmp_path: Path, factory: Factory
) -> None:
    _, ds = imaging.store(tmp_path, seed=4)
    uid, db, rri = ds.StudyInstanceUID, imaging.region.db, imaging.region.rri
    doctor = _user(imaging, factory, "dr.chu", rpps=DOCTOR_AT_CHU)
    csrf = csrf_of(doctor.get(_page(imaging, uid)).text)

    created = doctor.post(f"{_page(imaging, uid)}/codes", data={"csrf": csrf})
    assert created.status_code == 201, created.text
    found = CODE.search(created.text)
    assert found is not None, created.text
    code = found.group(1)
    assert f"http://testserver/imagerie/code?c={code}" in created.text
    assert re.search(r'id="code-expiry">\d\d/\d\d/\d{4}<', created.text)
    [share] = _shares(db)
    assert share.created_by_name == "Dr.Chu" and share.revoked_at is None
    assert code not in share.code_hash  # kept as its hash only

    # The code opens the study on /imagerie/code; the list shows its use.
    assert _code_opens(imaging, code) == 303
    page = unescape(doctor.get(_page(imaging, uid)).text)
    row = page.split(f'data-id="{share.id}"')[1].split("</tr>")[0]
    assert '<td class="by">Dr.Chu</td>' in row and '<td class="uses">1</td>' in row
    assert code not in page  # shown once, at its creation

    revoked = doctor.post(
        f"{_page(imaging, uid)}/codes/{share.id}/revocation",
        data={"csrf": csrf},
        follow_redirects=False,
    )
    assert revoked.status_code == 303, revoked.text
    after = unescape(doctor.get(revoked.headers["location"]).text)
    assert "Code révoqué" in after and "Aucun code actif." in after
    assert "révoqué (1 utilisation(s))" in after
    assert _code_opens(imaging, code) == 410
    assert _shares(db)[0].revoked_at is not None
    # A code of another study, or none: 404 in French.
    missing = doctor.post(f"{_page(imaging, uid)}/codes/999/revocation", data={"csrf": csrf})
    assert missing.status_code == 404
    assert "Ce code d'accès n'existe pas" in unescape(missing.text)

    audited = [(r.interaction, r.patient_ref, r.outcome) for r in _records(db)]
    assert ("create", f"Patient/{rri}", "0") in audited
    assert ("delete", f"Patient/{rri}", "0") in audited


def test_forms_without_their_csrf_token_or_care_relationship(
    imaging: Imaging, tmp_path: Path, factory: Factory
) -> None:
    _, ds = imaging.store(tmp_path, seed=5)
    uid, db = ds.StudyInstanceUID, imaging.region.db
    doctor = _user(imaging, factory, "dr.chu", rpps=DOCTOR_AT_CHU)
    csrf = csrf_of(doctor.get(_page(imaging, uid)).text)
    for token in ({}, {"csrf": "faux"}):
        refused = doctor.post(f"{_page(imaging, uid)}/codes", data=token)
        assert refused.status_code == 403, refused.text
    assert _shares(db) == []

    created = doctor.post(f"{_page(imaging, uid)}/codes", data={"csrf": csrf})
    assert created.status_code == 201
    [share] = _shares(db)
    revoke = f"{_page(imaging, uid)}/codes/{share.id}/revocation"
    assert doctor.post(revoke, data={}).status_code == 403
    # A professional without a care relationship, with their own session's token.
    elsewhere = _user(imaging, factory, "dr.clinique", rpps=DOCTOR_ELSEWHERE)
    theirs = csrf_of(elsewhere.get("/account").text)
    assert elsewhere.post(f"{_page(imaging, uid)}/codes", data={"csrf": theirs}).status_code == 403
    assert elsewhere.post(revoke, data={"csrf": theirs}).status_code == 403
    assert len(_shares(db)) == 1 and _shares(db)[0].revoked_at is None


def _other_patient(imaging: Imaging) -> str:
    """A second patient of the CHU (IPP 800002): their RRI."""
    app = imaging.region.app
    with imaging.region.db.transaction() as session:
        other = person(CHU_OID, "800002", birth_name="MARTIN", given_names=["Paul"],
                       birth_date=date(1950, 1, 2), sex="M")  # fmt: skip
        done = identity_service.feed(
            session, app.state.matcher, other, actor="test", config=app.state.identity_config
        )
        return done.rri


def test_the_list_holds_the_patients_studies_only(
    imaging: Imaging, tmp_path: Path, factory: Factory
) -> None:
    """The cell reads every study (the rule's clause is "all"): the page still lists this
    patient's studies only, not another patient's nor an unattached one."""
    _, mine = imaging.store(tmp_path, seed=7)
    other_rri = _other_patient(imaging)
    _, theirs = imaging.store(tmp_path, seed=8, patient_id="800002")
    _, unknown = imaging.store(tmp_path, seed=9, patient_id="999999")
    cell = _user(imaging, factory, "cellule", roles=("identitovigilance",))
    page = cell.get(_studies(imaging))
    assert page.status_code == 200, page.text
    assert mine.StudyInstanceUID in page.text and "1 examen(s)" in page.text
    assert theirs.StudyInstanceUID not in page.text
    assert unknown.StudyInstanceUID not in page.text
    other = cell.get(f"/imagerie/patients/{other_rri}").text
    assert theirs.StudyInstanceUID in other and mine.StudyInstanceUID not in other
    # A study opened under another patient's file: 404, in French.
    wrong = cell.get(f"/imagerie/patients/{other_rri}/examens/{mine.StudyInstanceUID}")
    assert wrong.status_code == 404
    assert "n'est pas dans le dossier de ce patient" in unescape(wrong.text)


@pytest.mark.browser
def test_a_doctor_gives_a_code_that_opens_the_study(
    browser: Browser, app: FastAPI, imaging: Imaging, factory: Factory, tmp_path: Path,
    database_url: str,
) -> None:  # fmt: skip
    _, ds = imaging.store(tmp_path, seed=6)
    factory.user("dr.chu", rpps=DOCTOR_AT_CHU)
    data_dir = app.state.settings.data_dir
    with live_server(data_dir=data_dir, database_url=database_url) as server:
        base = server.base_url
        page = browser.new_context().new_page()
        page.goto(base + "/login")
        page.fill("#username", "dr.chu")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        page.goto(f"{base}/dossiers/{imaging.region.rri}")
        page.click("#lien-imagerie")
        row = page.locator(f'tr[data-uid="{ds.StudyInstanceUID}"]')
        expect(row.locator(".description")).to_have_text("TDM THORAX")
        expect(row.locator("a.viewer")).to_have_text("Ouvrir dans la visionneuse")
        row.locator("a.details").click()
        page.click("#create-code button")
        code = page.locator("#code").inner_text()
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){2}", code), code

        visitor = browser.new_context().new_page()  # the patient, no account, no cookie
        visitor.goto(base + "/imagerie/code")
        visitor.fill("#code", code)
        visitor.click("text=Ouvrir l'examen")
        expect(visitor.locator("h1")).to_have_text("Examen d'imagerie")
        expect(visitor.locator("#study-description")).to_have_text("TDM THORAX")

        page.goto(f"{base}/imagerie/patients/{imaging.region.rri}/examens/{ds.StudyInstanceUID}")
        expect(page.locator("#active-codes .uses")).to_have_text("1")
