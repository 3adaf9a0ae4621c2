"""Access codes to a study (issue 16): created, listed and revoked over the API by those who
may read the study (a professional without a care relationship refused), kept as a hash only;
typed on the portal, a code opens a session that reads its study and nothing else through the
real WADO-RS endpoints; an expired or revoked code opens nothing and a revoked code ends its
sessions; the rate limit per address (a second address not locked out) and for the whole
platform; the audit trail of each step; a patient in Debian's Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from sqlalchemy import select, update

from enrs.imaging import share
from enrs.imaging.models import Study
from enrs.imaging.share_models import Share, ShareAttempt, ShareSession
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database, utcnow
from enrs.settings import Settings
from tests.conftest import Factory
from tests.documents.world import CHU, CLINIC, DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, make_region
from tests.imaging.conftest import Archived, ct_dataset
from tests.imaging.test_patients import CHU as CHU_OID_OF_TEST_PATIENTS
from tests.imaging.test_patients import _patient, _store
from tests.imaging.web_world import Imaging, client_headers, make_imaging
from tests.support.browser import wait_for_js
from tests.support.live_server import LiveServer, enrs_command, live_server
from tests.support.portal import csrf_of, log_in

WRITE = "system/ImagingStudy.r"
CODE = re.compile(r"^[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}$")


@pytest.fixture
def imaging(
    app: Any, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


def _shares(uid: str) -> str:
    return f"/imaging/studies/{uid}/shares"


def _user(imaging: Imaging, factory: Factory, name: str, **options: Any) -> TestClient:
    factory.user(name, **options)
    browser = TestClient(imaging.region.app)
    log_in(browser, name)
    return browser


def _create(imaging: Imaging, uid: str) -> dict[str, Any]:
    headers, _ = client_headers(imaging.region.db, imaging.client, scope=WRITE, finess=CHU)
    answer = imaging.client.post(_shares(uid), headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _open(visitor: TestClient, code: str) -> Any:
    form = {"code": code, "csrf": csrf_of(visitor.get("/imagerie/code").text)}
    return visitor.post("/imagerie/code", data=form, follow_redirects=False)


def _records(db: Database, category: str) -> list[AuditRecord]:
    with db.transaction(write=False) as session:
        return list(
            session.scalars(
                select(AuditRecord)
                .where(AuditRecord.category == category)
                .order_by(AuditRecord.seq)
            )
        )


def _rendered(ds: Any) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/rendered"
    )


def test_create_list_revoke_and_who_may(imaging: Imaging, tmp_path: Path, factory: Factory) -> None:
    _, ds = imaging.store(tmp_path, seed=2)
    uid, client, db = ds.StudyInstanceUID, imaging.client, imaging.region.db
    # Without the read scope, without a care relationship: refused; an unknown study: 404.
    stow_only, _ = client_headers(db, client, scope="system/ImagingStudy.c", finess=CHU)
    assert client.post(_shares(uid), headers=stow_only).status_code == 403
    clinic, _ = client_headers(db, client, scope=WRITE, finess=CLINIC)
    assert client.post(_shares(uid), headers=clinic).status_code == 403
    elsewhere = _user(imaging, factory, "dr.clinique", rpps=DOCTOR_ELSEWHERE)
    assert elsewhere.post(_shares(uid)).status_code == 403
    assert elsewhere.get(_shares(uid)).status_code == 403
    doctor = _user(imaging, factory, "dr.chu", rpps=DOCTOR_AT_CHU)
    missing = doctor.post(_shares("1.2.3.4.404"))
    assert missing.status_code == 404, missing.text

    before = utcnow()
    created = doctor.post(_shares(uid))
    assert created.status_code == 201, created.text
    body = created.json()
    assert CODE.match(body["code"]), body
    assert body["link"] == f"http://testserver/imagerie/code?c={body['code']}"
    expires = body["expires"]
    assert (
        str(before + timedelta(days=90))[:10]
        <= expires[:10]
        <= str(utcnow() + timedelta(days=90))[:10]
    )
    assert body["status"] == "active"

    # Only a hash is stored: no column holds the code, in any of its spellings.
    with db.transaction(write=False) as session:
        row = session.get(Share, body["id"])
        assert row is not None
        plain = body["code"].replace("-", "")
        assert row.code_hash == hashlib.sha256(plain.encode()).hexdigest()
        values = [str(getattr(row, c.key)) for c in Share.__table__.columns]
        assert not any(plain in v or body["code"] in v for v in values)

    listed = client.get(_shares(uid), headers=imaging.chu)
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()] == [body["id"]]
    assert "code" not in listed.json()[0] and listed.json()[0]["createdBy"] == "Dr.Chu"

    # Revocation: not by who may not read the study; by its creator; by the cell.
    share_url = f"{_shares(uid)}/{body['id']}"
    assert client.delete(share_url, headers=clinic).status_code == 403
    assert elsewhere.delete(share_url).status_code == 403
    assert client.delete(f"{_shares(uid)}/999999", headers=imaging.chu).status_code == 404
    assert doctor.delete(share_url).status_code == 204
    assert client.get(_shares(uid), headers=imaging.chu).json()[0]["status"] == "revoked"
    second = _create(imaging, uid)
    cell = _user(imaging, factory, "cell", roles=("identitovigilance",))
    assert cell.delete(f"{_shares(uid)}/{second['id']}").status_code == 204
    statuses = [s["status"] for s in client.get(_shares(uid), headers=imaging.chu).json()]
    assert statuses == ["revoked", "revoked"]

    records = _records(db, "imaging")
    done = [(r.interaction, r.outcome, r.patient_ref) for r in records if r.outcome == "0"]
    patient = f"Patient/{imaging.region.rri}"
    assert ("create", "0", patient) in done and ("read", "0", patient) in done
    assert ("delete", "0", patient) in done
    events = [json.loads(r.detail)["event"] for r in records if r.detail and r.outcome == "0"]
    assert events.count("create") == 2 and events.count("revoke") == 2
    assert any(r.outcome != "0" and r.patient_ref == patient for r in records)


def test_a_code_opens_its_study_and_nothing_else(imaging: Imaging, tmp_path: Path) -> None:
    _, ds = imaging.store(tmp_path, seed=3)
    _, other = imaging.store(tmp_path, seed=4)  # the same patient, another study
    created = _create(imaging, ds.StudyInstanceUID)
    patient = TestClient(imaging.region.app)

    form = patient.get(f"/imagerie/code?c={created['code']}")
    assert form.status_code == 200 and f'value="{created["code"]}"' in form.text
    typed = " " + created["code"].lower().replace("-", " ") + " "  # as one types it
    opened = _open(patient, typed)
    assert opened.status_code == 303, opened.text
    assert opened.headers["location"] == "/imagerie/examen"
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith(f"{share.COOKIE}=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    with imaging.region.db.transaction(write=False) as session:
        token = cookie.split(";")[0].split("=", 1)[1]
        stored = session.scalars(select(ShareSession)).one()
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()

    page = patient.get("/imagerie/examen")
    assert page.status_code == 200, page.text
    assert "TEST SYNTHETIC" in page.text and "TDM THORAX" in page.text
    assert "05/12/2026" in page.text and _rendered(ds) in page.text
    image = patient.get(_rendered(ds), headers={"Accept": "image/png"})
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    metadata = patient.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata")
    assert metadata.status_code == 200
    assert metadata.json()[0]["0020000D"]["Value"] == [ds.StudyInstanceUID]

    # The viewer opens for the code's session and finds that study only (QIDO-RS).
    viewer = f"/imagerie/visionneuse/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}"
    assert viewer in page.text.replace("&amp;", "&")
    no_session = TestClient(imaging.region.app).get(viewer, follow_redirects=False)
    assert no_session.status_code in (302, 303, 307) and "/login" in no_session.headers["location"]
    opened_viewer = patient.get(viewer, follow_redirects=False)
    assert opened_viewer.status_code in (200, 503), opened_viewer.status_code  # 503: not installed
    assert patient.get("/imagerie/visionneuse/app-config.js").status_code in (200, 503)
    found = patient.get("/dicomweb/studies")
    assert found.status_code == 200, found.text
    assert [s["0020000D"]["Value"] for s in found.json()] == [[ds.StudyInstanceUID]]
    series = patient.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series")
    assert series.status_code == 200 and len(series.json()) == 1
    assert patient.get(f"/dicomweb/studies/{other.StudyInstanceUID}/series").status_code == 403

    # Nothing else: the patient's other study, an unknown one, the codes themselves.
    assert patient.get(_rendered(other)).status_code == 403
    assert patient.get(f"/dicomweb/studies/{other.StudyInstanceUID}/metadata").status_code == 403
    assert patient.get("/dicomweb/studies/1.2.3.404/metadata").status_code == 404
    assert patient.get(_shares(ds.StudyInstanceUID)).status_code == 403
    assert patient.post(_shares(other.StudyInstanceUID)).status_code == 403
    assert patient.get("/fhir/Patient").status_code in (401, 403)

    # Ending the session on this browser: its cookie no longer reads; the code still works.
    ended = patient.post("/imagerie/examen/fin", data={"csrf": csrf_of(page.text)})
    assert ended.status_code == 200 and share.COOKIE not in patient.cookies
    token_client = TestClient(imaging.region.app, cookies={share.COOKIE: token})
    assert token_client.get(_rendered(ds)).status_code == 401
    assert _open(patient, created["code"]).status_code == 303

    agent = f"imaging-share:{created['id']}"
    opened_records = _records(imaging.region.db, "imaging-share")
    assert [(r.outcome, r.agent_id) for r in opened_records][:1] == [("0", agent)]
    assert opened_records[0].patient_ref == f"Patient/{imaging.region.rri}"
    reads = [r for r in _records(imaging.region.db, "dicomweb") if r.agent_id == agent]
    assert {r.entity_ref for r in reads if r.outcome == "0"} == {
        f"ImagingStudy/{ds.StudyInstanceUID}"
    }
    assert any(
        r.entity_ref == f"ImagingStudy/{other.StudyInstanceUID}" and r.outcome != "0" for r in reads
    )


def test_expired_and_revoked_codes(imaging: Imaging, tmp_path: Path) -> None:
    _, ds = imaging.store(tmp_path, seed=5)
    uid, db = ds.StudyInstanceUID, imaging.region.db
    old, live = _create(imaging, uid), _create(imaging, uid)
    with db.transaction() as session:
        session.execute(
            update(Share)
            .where(Share.id == old["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    visitor = TestClient(imaging.region.app)
    expired = _open(visitor, old["code"])
    assert expired.status_code == 410 and "Ce code a expiré" in expired.text
    assert share.COOKIE not in expired.headers.get("set-cookie", "")

    # A session opened, then the code revoked: the session ends at once.
    assert _open(visitor, live["code"]).status_code == 303
    assert visitor.get(_rendered(ds)).status_code == 200
    revoked = imaging.client.delete(f"{_shares(uid)}/{live['id']}", headers=imaging.chu)
    assert revoked.status_code == 204, revoked.text
    assert visitor.get(_rendered(ds)).status_code == 401
    ended = visitor.get("/imagerie/examen")
    assert ended.status_code == 401 and "Votre accès a pris fin" in ended.text
    again = _open(TestClient(imaging.region.app), live["code"])
    assert again.status_code == 410 and "Ce code a été révoqué" in again.text

    statuses = [json.loads(r.detail)["status"] for r in _records(db, "imaging-share") if r.detail]
    assert statuses == ["expired", "active", "revoked"]


def test_guessing_is_rate_limited(imaging: Imaging, tmp_path: Path) -> None:
    _, ds = imaging.store(tmp_path, seed=6)
    created = _create(imaging, ds.StudyInstanceUID)
    app, db = imaging.region.app, imaging.region.db
    guesser = TestClient(app, client=("203.0.113.7", 40000))
    for guess in [
        "AAAA-AAAA-AAAA",
        "not a code",
        "2222-3333-4444",
        "ZZZZ ZZZZ ZZZZ",
        "BBBBBBBBBBBB",
    ]:
        wrong = _open(guesser, guess)
        assert wrong.status_code == 400 and "Ce code n'est pas valide" in unescape(wrong.text)
    # The sixth try from that address waits, even with the right code.
    limited = _open(guesser, created["code"])
    assert limited.status_code == 429 and "Trop d'essais" in unescape(limited.text)
    assert limited.headers["retry-after"] == "900"
    # A form without its CSRF token is refused and not counted.
    assert guesser.post("/imagerie/code", data={"code": created["code"]}).status_code == 400
    # Another address is not locked out.
    other = TestClient(app, client=("198.51.100.9", 40000))
    assert _open(other, created["code"]).status_code == 303

    records = _records(db, "imaging-share")
    failures = [r for r in records if r.outcome != "0" and r.source_ip == "203.0.113.7"]
    assert len(failures) == 7  # 5 wrong codes, the limited try, the form without CSRF
    assert sum(1 for r in failures if r.outcome_desc == "access code unknown") == 5
    assert any(r.outcome_desc == "too many failed codes from this address" for r in failures)

    # Many addresses guessing: an address with one failure waits; a first try still works.
    with db.transaction() as session:
        session.add_all(
            ShareAttempt(source_ip=f"192.0.2.{i % 250}", success=False, at=utcnow())
            for i in range(share.MAX_FAILURES_ALL)
        )
    once = TestClient(app, client=("192.0.2.1", 40000))
    assert _open(once, created["code"]).status_code == 429
    first = TestClient(app, client=("100.64.0.1", 40000))
    assert _open(first, created["code"]).status_code == 303


@pytest.fixture
def server(tmp_path: Path, database_url: str, settings: Settings) -> Iterator[LiveServer]:
    env = {
        "ENRS_DATA_DIR": str(settings.data_dir),
        "ENRS_DATABASE_URL": database_url,
        "PATH": "/usr/bin",
    }
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    with live_server(data_dir=settings.data_dir, database_url=database_url) as running:
        yield running


@pytest.mark.browser
def test_a_patient_opens_the_study_in_the_browser(
    archive: Archived, tmp_path: Path, browser: Browser, server: LiveServer
) -> None:
    _patient(archive, "IPP-88")
    archive.register("MODALITY")
    ds = ct_dataset(patient_id="IPP-88", issuer=CHU_OID_OF_TEST_PATIENTS)
    _store(archive, tmp_path, ds)
    code = share.new_code()
    with archive.db.transaction() as session:
        study = session.scalars(select(Study).where(Study.study_uid == ds.StudyInstanceUID)).one()
        assert study.patient_status == "resolved"
        session.add(
            Share(
                study_id=study.id,
                code_hash=share.code_hash(code.replace("-", "")),
                created_by="test",
                created_by_name="Service d'imagerie",
                expires_at=utcnow() + timedelta(days=1),
            )
        )
    page = browser.new_page()
    page.goto(f"{server.base_url}/imagerie/code")
    page.fill("#code", code.lower())
    page.click("text=Ouvrir l'examen")
    # (each assertion waits for its page: a submitting click returns before the next page)
    expect(page.locator("h1")).to_have_text("Examen d'imagerie")
    expect(page.locator("#patient-name")).to_contain_text("TEST SYNTHETIC")
    expect(page.locator("#study-description")).to_have_text("TDM THORAX")
    image = page.locator("img.rendered").first
    image.wait_for()
    wait_for_js(page, "() => document.querySelector('img.rendered').complete")
    assert image.evaluate("i => i.naturalWidth") == 128
