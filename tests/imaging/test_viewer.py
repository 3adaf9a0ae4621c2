"""The imaging viewer in the browser (issue 16): OHIF's prebuilt viewer, installed by ``make
test-deps`` (``make viewer``) at the version the Makefile pins, served under
``/imagerie/visionneuse`` for a logged-in portal user, with OUR configuration (the archive's
``/dicomweb``, same origin) and its own Content Security Policy; WADO-RS frames, which it draws;
and Debian's Chromium showing a CT stored with DCMTK's storescu, in French.

A missing viewer fails these tests (``make test-deps`` installs it), as a missing DCMTK does."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from enrs.imaging.viewer import PREFIX, Viewer
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import make_region
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.imaging.web_world import Imaging, client_headers, make_imaging, parts
from tests.support.browser import wait_for_js
from tests.support.live_server import LiveServer, enrs_command, live_server
from tests.support.portal import log_in

ROOT = Path(__file__).resolve().parents[2]


def viewer_dir() -> Path:
    """The installed viewer: ``ENRS_VIEWER_DIR``, else where ``make viewer`` puts the version
    the Makefile pins. Missing: the test fails, saying how to install it."""
    given = os.environ.get("ENRS_VIEWER_DIR")
    if given:
        found = Path(given)
    else:
        version = re.search(r"^OHIF_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
        assert version is not None
        found = ROOT / "vendor" / "ohif" / version.group(1)
    assert (found / "index.html").is_file(), (
        f"the imaging viewer is not installed in {found}: `make test-deps` (or `make viewer`)"
    )
    return found


@pytest.fixture
def installed(app: FastAPI) -> Path:
    folder = viewer_dir()
    app.state.viewer = Viewer(folder)
    return folder


def ct_series(count: int = 5, *, size: int = 128, **options: object) -> list[Dataset]:
    """A synthetic CT series of ``count`` slices (with their geometry, as a scanner's)."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for n in range(1, count + 1):
        ds = ct_dataset(study_uid=study, series_uid=series, seed=n, size=size, **options)  # type: ignore[arg-type]
        ds.InstanceNumber = n
        ds.ImagePositionPatient = [-45.0, -45.0, 2.5 * n]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.5
        ds.FrameOfReferenceUID = frame_of_reference
        ds.WindowCenter, ds.WindowWidth = 1000, 3000
        slices.append(ds)
    return slices


def store_series(archive: Archived, tmp_path: Path, slices: list[Dataset]) -> None:
    paths = [write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm") for ds in slices]
    done = archive.storescu(*paths)
    assert done.returncode == 0 and done.stderr.count("Success") >= len(paths), done.stderr


# --- the pages -------------------------------------------------------------------------------


def test_the_page_needs_a_session_and_is_rewritten(
    installed: Path, client: TestClient, factory: Factory
) -> None:
    url = f"{PREFIX}/viewer?StudyInstanceUIDs=1.2.3"
    anonymous = client.get(url, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    assert client.get(f"{PREFIX}/app-config.js", follow_redirects=False).status_code == 303
    factory.user("pro")
    log_in(client, "pro")
    page = client.get(url)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    assert '<html lang="fr">' in html and "<title>Visionneuse d'imagerie</title>" in html
    assert f'window.PUBLIC_URL="{PREFIX}/"' in html and 'window.PUBLIC_URL="/"' not in html
    assert re.search(rf'src="{PREFIX}/app\.bundle\.[0-9a-f]{{16}}\.js"', html)
    assert f'src="{PREFIX}/app-config.js"' in html and "init-service-worker" not in html
    assert not re.search(r'(href|src)="/(?!imagerie/visionneuse/)', html)
    assert "localStorage.setItem('i18nextLng','fr')" in html
    # One policy, the viewer's: its inline scripts by hash, WebAssembly, blob: workers.
    policies = page.headers.get_list("content-security-policy")
    assert len(policies) == 1
    policy = policies[0]
    assert "'wasm-unsafe-eval'" in policy and "worker-src 'self' blob:" in policy
    assert "frame-ancestors 'none'" in policy and "'unsafe-eval'" not in policy
    for script in re.findall(r"<script>(.*?)</script>", html, re.S):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    # The same page for the viewer's other routes, and its root.
    assert client.get(f"{PREFIX}/").text == html
    assert client.get(PREFIX, follow_redirects=False).headers["location"] == f"{PREFIX}/"


def test_our_configuration_not_the_packages(installed: Path, client: TestClient, factory: Factory):
    factory.user("pro")
    log_in(client, "pro")
    answer = client.get(f"{PREFIX}/app-config.js")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/javas")
    config = answer.text
    assert f'"routerBasename": "{PREFIX}"' in config
    assert "window.location.origin + '/dicomweb'" in config
    assert '"imageRendering": "wadors"' in config and '"staticWado": false' in config
    assert '"showStudyList": false' in config
    assert config.count('"namespace"') == 1  # one data source: no local files, no ?url=
    assert "cloudfront" not in config and "dangerouslyUseDynamicConfig" not in config
    assert "cloudfront" in (installed / "app-config.js").read_text()  # the package's, unused


def test_the_files_cached_and_moved_under_the_prefix(installed: Path, client: TestClient) -> None:
    """The viewer's files are public code: no session, the hashed ones cached for a year, the
    webpack public path moved under the prefix; nothing outside the folder."""
    bundle = next(installed.glob("app.bundle.*.js")).name
    answer = client.get(f"{PREFIX}/{bundle}")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert f'__webpack_require__.p = "{PREFIX}/";'.encode() in answer.content
    assert b'__webpack_require__.p = "/";' not in answer.content
    wasm = next(installed.glob("*.wasm")).name
    answer = client.get(f"{PREFIX}/{wasm}")
    assert answer.headers["content-type"] == "application/wasm"
    assert answer.content == (installed / wasm).read_bytes()
    # The package's policy-free default headers are still there, with the platform's CSP.
    assert answer.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    manifest = client.get(f"{PREFIX}/manifest.json")
    assert manifest.status_code == 200 and manifest.headers["cache-control"] == "no-cache"
    viewer = Viewer(installed)
    assert viewer.file("../../pyproject.toml") is None and viewer.file("/etc/passwd") is None
    assert viewer.file("index.html") is not None
    # A path that is no file is the viewer's page: it needs the session.
    outside = client.get(f"{PREFIX}/..%2F..%2Fpyproject.toml", follow_redirects=False)
    assert outside.status_code == 303


def test_not_installed_says_so_in_french(
    app: FastAPI, client: TestClient, factory: Factory, tmp_path: Path
) -> None:
    factory.user("pro")
    log_in(client, "pro")
    for viewer in (Viewer(None), Viewer(tmp_path / "absent")):
        app.state.viewer = viewer
        page = client.get(f"{PREFIX}/viewer", headers={"Accept": "text/html"})
        assert page.status_code == 503
        assert "La visionneuse d&#39;imagerie n&#39;est pas installée" in page.text
        assert client.get("/healthz").status_code == 200


# --- WADO-RS frames ------------------------------------------------------------------------------


@pytest.fixture
def imaging(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


def test_frames_as_stored(imaging: Imaging, tmp_path: Path, factory: Factory) -> None:
    from tests.documents.world import CHU_OID, IPP

    (ds,) = ct_series(1, patient_id=IPP, issuer=CHU_OID)
    store_series(imaging.archive, tmp_path, [ds])
    url = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames"
    )
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    client = imaging.client
    answer = client.get(f"{url}/1", headers={**imaging.chu, "Accept": accept})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith('multipart/related; type="application/oc')
    ((kind, content),) = parts(answer)
    assert kind == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert content == ds.PixelData
    assert client.get(f"{url}/2", headers=imaging.chu).status_code == 404
    assert client.get(f"{url}/0", headers=imaging.chu).status_code == 400
    assert client.get(f"{url}/x", headers=imaging.chu).status_code == 400
    jpeg = {**imaging.chu, "Accept": "multipart/related; type=image/jpeg"}
    assert client.get(f"{url}/1", headers=jpeg).status_code == 406
    assert client.get(f"{url}/1", headers=imaging.clinic).status_code == 403  # no relationship
    # The portal session reads it too, as the viewer does (same origin, the cookie).
    factory.user("cell", roles=("identitovigilance",))
    log_in(client, "cell")
    by_cookie = client.get(f"{url}/1", headers={"Accept": accept})
    assert by_cookie.status_code == 200 and parts(by_cookie)[0][1] == ds.PixelData


# --- QIDO-RS ----------------------------------------------------------------------------------


def _value(ds: dict, tag: str) -> object:  # type: ignore[type-arg]
    return ds[tag].get("Value", [None])[0]


def test_qido_follows_the_study_rule(imaging: Imaging, tmp_path: Path, factory: Factory) -> None:
    from tests.documents.world import CHU, CHU_OID, CLINIC, IPP

    slices = ct_series(2, patient_id=IPP, issuer=CHU_OID)
    store_series(imaging.archive, tmp_path, slices)
    study, series = slices[0].StudyInstanceUID, slices[0].SeriesInstanceUID
    db, client = imaging.region.db, imaging.client
    chu, _ = client_headers(db, client, scope="system/ImagingStudy.rs", finess=CHU)
    clinic, _ = client_headers(db, client, scope="system/ImagingStudy.rs", finess=CLINIC)
    by_uid = f"/dicomweb/studies?StudyInstanceUID={study}&includefield=00081030&limit=101"
    assert client.get(by_uid, headers=imaging.chu).status_code == 403  # .r only: no search
    found = client.get(by_uid, headers=chu)
    assert found.status_code == 200 and found.headers["content-type"] == "application/dicom+json"
    (answer,) = found.json()
    assert _value(answer, "0020000D") == study and _value(answer, "00100020") == IPP
    assert answer["00080061"]["Value"] == ["CT"] and _value(answer, "00201208") == 2
    assert _value(answer, "00201206") == 1 and _value(answer, "00081030") == "TDM THORAX"
    assert _value(answer, "00080020") == "20261205" and _value(answer, "00080050") == "ACC0001"
    assert _value(answer, "00100010") == {"Alphabetic": "TEST^SYNTHETIC"}
    # By the tag too; the clinic has no care relationship: the study is left out.
    assert len(client.get(f"/dicomweb/studies?0020000D={study}", headers=chu).json()) == 1
    assert client.get(by_uid, headers=clinic).json() == []
    # A search naming no study shows a reader only their own (STOW-RS) studies.
    assert client.get("/dicomweb/studies", headers=chu).json() == []
    assert client.get(f"/dicomweb/studies?PatientID={IPP}", headers=chu).json() == []
    # Naming the patient by PatientID and issuer (OID, namespace or the RRI): their studies,
    # for a reader with a care relationship (the CHU has the patient in care, the clinic not).
    rri_oid = imaging.region.app.state.identity_config.rri_authority
    by_patient = f"/dicomweb/studies?PatientID={IPP}&IssuerOfPatientID={CHU_OID}"
    assert [_value(a, "0020000D") for a in client.get(by_patient, headers=chu).json()] == [study]
    assert client.get(by_patient, headers=clinic).json() == []
    by_rri = f"/dicomweb/studies?PatientID={imaging.region.rri}&IssuerOfPatientID={rri_oid}"
    assert [_value(a, "0020000D") for a in client.get(by_rri, headers=chu).json()] == [study]
    wildcard = f"/dicomweb/studies?PatientID={IPP[:3]}*&IssuerOfPatientID={CHU_OID}"
    assert client.get(wildcard, headers=chu).json() == []  # no wildcard names a patient
    # Series and instances: the study's rule (403, 404), limit and offset.
    series_url = f"/dicomweb/studies/{study}/series"
    (one,) = client.get(series_url, headers=chu).json()
    assert _value(one, "0020000E") == series and _value(one, "00201209") == 2
    assert _value(one, "00080060") == "CT" and _value(one, "00200011") == 2
    assert client.get(series_url, headers=clinic).status_code == 403
    assert client.get("/dicomweb/studies/1.2.3/series", headers=chu).status_code == 404
    instances_url = f"{series_url}/{series}/instances"
    listed = client.get(instances_url, headers=chu).json()
    assert [_value(i, "00200013") for i in listed] == [1, 2]
    assert [_value(i, "00080018") for i in listed] == [ds.SOPInstanceUID for ds in slices]
    second = client.get(f"{instances_url}?limit=1&offset=1", headers=chu).json()
    assert [_value(i, "00080018") for i in second] == [slices[1].SOPInstanceUID]
    assert client.get(instances_url, headers=clinic).status_code == 403
    assert client.get(f"{series_url}/1.2.3/instances", headers=chu).status_code == 404
    assert len(client.get(f"{series_url}?SeriesNumber=2", headers=chu).json()) == 1
    assert client.get(f"{series_url}?SeriesNumber=3", headers=chu).json() == []
    assert len(client.get(f"/dicomweb/studies/{study}/instances", headers=chu).json()) == 2
    # Bad queries: no such attribute, a value not of its form, paging that is not a number.
    assert client.get("/dicomweb/studies?NotAKeyword=1", headers=chu).status_code == 400
    assert client.get("/dicomweb/studies?StudyDate=hier", headers=chu).status_code == 400
    assert client.get(f"{series_url}?SeriesNumber=deux", headers=chu).status_code == 400
    assert client.get("/dicomweb/studies?includefield=Nope", headers=chu).status_code == 400
    assert client.get("/dicomweb/studies?limit=x", headers=chu).status_code == 400
    assert client.get("/dicomweb/studies?offset=-1", headers=chu).status_code == 400
    # The care circle lets the clinic in; an admin's portal session sees every study.
    imaging.join_circle()
    assert len(client.get(by_uid, headers=clinic).json()) == 1
    factory.user("cell", roles=("identitovigilance",))
    admin = TestClient(imaging.region.app)
    log_in(admin, "cell")
    everything = admin.get("/dicomweb/studies").json()
    assert [_value(s, "0020000D") for s in everything] == [study]
    assert len(admin.get(f"/dicomweb/studies?PatientID={IPP}").json()) == 1
    assert admin.get("/dicomweb/studies?PatientID=NOBODY").json() == []
    assert len(admin.get("/dicomweb/studies?00100010=test*&ModalitiesInStudy=CT").json()) == 1
    assert admin.get("/dicomweb/studies?ModalitiesInStudy=MR").json() == []
    assert admin.get("/dicomweb/studies?StudyDate=20261206-").json() == []
    assert len(admin.get("/dicomweb/series?Modality=CT").json()) == 1
    assert len(admin.get(f"/dicomweb/instances?SeriesInstanceUID={series}").json()) == 2
    assert client.get("/dicomweb/series", headers=chu).json() == []  # not the CHU's own
    # Audited: each search, with the patient it showed.
    with db.transaction(write=False) as session:
        searches = session.scalars(
            select(AuditRecord).where(
                AuditRecord.category == "dicomweb",
                AuditRecord.interaction == "search-type",
                AuditRecord.outcome == "0",
            )
        ).all()
    shown = [r for r in searches if r.patient_ref == f"Patient/{imaging.region.rri}"]
    assert len(shown) >= 8 and all(r.query is not None for r in searches)
    refused = [r for r in searches if '"not_readable":1' in (r.detail or "")]
    assert len(refused) == 1 and refused[0].patient_ref is None


# --- in the browser ------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url, "PATH": "/usr/bin"}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    extra = {"ENRS_VIEWER_DIR": str(viewer_dir())}
    with live_server(data_dir=data_dir, database_url=database_url, extra_env=extra) as running:
        yield running


DRAWN = """() => {
    const c = document.querySelector('.cornerstone-canvas');
    if (!c || !c.width) return 0;
    // Copy the viewport to a 2D canvas and count its distinct colours.
    const copy = document.createElement('canvas');
    copy.width = c.width; copy.height = c.height;
    const ctx = copy.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
}"""


@pytest.mark.browser
def test_a_ct_in_the_browser(
    archive: Archived, tmp_path: Path, browser: Browser, server: LiveServer
) -> None:
    """The cell (who reads every study) opens a CT of 5 slices stored by storescu from the
    study's page: the viewport is drawn (many grey levels, not a blank canvas), in French; the
    mouse wheel scrolls the slices, a drag changes the window/level, the zoom tool zooms, the
    length tool measures in mm."""
    archive.register("MODALITY")
    slices = ct_series(5, patient_id="LOCAL-9", issuer="RADIOLOGIE-X")
    store_series(archive, tmp_path, slices)
    study = slices[0].StudyInstanceUID
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(server.base_url + "/login")
    page.fill("#username", "cellule")
    page.fill("#password", "Cellule-demo-2026!")
    page.click("button[type=submit]")
    page.goto(f"{server.base_url}/identitovigilance/imagerie/{study}")
    page.click("#viewer-link")  # the cell's page of the study opens it in the viewer
    page.wait_for_url(f"{server.base_url}{PREFIX}/viewer?StudyInstanceUIDs={study}")
    page.locator(".cornerstone-canvas").first.wait_for(state="visible", timeout=60_000)
    wait_for_js(page, f"() => ({DRAWN})() > 50")
    body = page.locator("body")
    # The study list, the guide and the overlay come a moment after the image: waited for.
    shown = ["Études", "TDM THORAX", "Vous pouvez faire défiler les images", "(1/5)"]
    shown += [re.compile(r"W:\s*3000\s"), re.compile(r"L:\s*1000")]  # the CT's window/level
    for text in shown:
        expect(body).to_contain_text(text, use_inner_text=True, timeout=60_000)
    if page.locator("text=Tout passer").count():
        page.click("text=Tout passer")
    box = page.locator(".cornerstone-canvas").first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    expect(body).to_contain_text("(2/5)", use_inner_text=True, timeout=60_000)
    page.mouse.down()
    page.mouse.move(x + 80, y + 40, steps=8)
    page.mouse.up()
    expect(body).not_to_contain_text(
        re.compile(r"W:\s*3000\s"), use_inner_text=True, timeout=60_000
    )
    canvas = page.locator(".cornerstone-canvas").first
    before = canvas.screenshot()
    page.click('[data-cy="Zoom-btn"]')
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y - 120, steps=8)
    page.mouse.up()
    deadline = time.monotonic() + 60
    while canvas.screenshot() == before:  # zoomed: drawn anew
        assert time.monotonic() < deadline, "the zoom tool changed nothing"
        page.wait_for_timeout(250)
    page.click('[data-cy="Length-btn"]')
    page.mouse.move(x - 100, y)
    page.mouse.down()
    page.mouse.move(x + 100, y, steps=10)
    page.mouse.up()
    # The length in mm (0.7 mm pixels), and the viewer asks, in French, to track it.
    expect(body).to_contain_text(re.compile(r"\d+(\.\d+)? mm"), use_inner_text=True, timeout=60_000)
    # (the question comes a moment after the length is drawn: waited for, not read at once)
    expect(body).to_contain_text(
        "Suivre les mesures pour cette série ?", use_inner_text=True, timeout=60_000
    )
    assert not failed, failed
    assert not [p for p in problems if "Content Security Policy" in p], problems
