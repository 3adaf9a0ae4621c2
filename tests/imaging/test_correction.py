"""The identitovigilance cell's corrections of archived studies: the list of flagged studies,
a correction with its history, the refusals (nothing changed by them), a correction kept when
the modality sends more of the study (DCMTK's storescu), the command line and the portal."""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from enrs.identity import service as identity_service
from enrs.identity.updates import link_identities
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.imaging import correction
from enrs.imaging.models import Instance, StudyCorrection
from enrs.kit.audit.models import AuditRecord
from enrs.kit.errors import BadRequest, Conflict, NotFound, Unprocessable
from enrs.settings import Settings
from tests.conftest import Factory
from tests.imaging.conftest import Archived, ct_dataset, dataset_bytes, write
from tests.imaging.test_patients import CHU, _patient, _store, _study
from tests.support.live_server import LiveServer, enrs_command, live_server, run_enrs
from tests.support.portal import csrf_of, log_in

UNREGISTERED = "1.2.250.1.4242.7"  # a well-formed OID that is no domain of the server


def _unknown_study(archive: Archived, tmp_path: Path, pid: str = "LOCAL-9") -> str:
    """A study the archive flags ``unknown``: a PatientID of an issuer it cannot read."""
    ds = ct_dataset(patient_id=pid, issuer="RADIOLOGIE-X")
    _store(archive, tmp_path, ds)
    assert _study(archive, ds.StudyInstanceUID).patient_status == "unknown"
    return str(ds.StudyInstanceUID)


def _correct(archive: Archived, uid: str, **options: object) -> correction.Corrected:
    options.setdefault("reason", "Examen de Mme JOSEPH, vérifié avec le service d'imagerie")
    options.setdefault("actor", "test")
    with archive.db.transaction() as session:
        return correction.correct(session, archive.config, uid, **options)  # type: ignore[arg-type]


def _history(archive: Archived, uid: str) -> list[StudyCorrection]:
    with archive.db.transaction(write=False) as session:
        return correction.history(session, uid)[1]


def test_flagged_studies_are_listed_by_pages(archive: Archived, tmp_path: Path) -> None:
    _patient(archive, "IPP-77")
    archive.register("MODALITY")
    first, second = _unknown_study(archive, tmp_path), _unknown_study(archive, tmp_path, "L-2")
    _store(archive, tmp_path, ct_dataset(patient_id="IPP-77", issuer="CHU"))
    with archive.db.transaction(write=False) as session:
        flagged = correction.studies(session, flagged=True)
        assert flagged.total == 2 and [r.study.study_uid for r in flagged.rows] == [first, second]
        assert "'RADIOLOGIE-X' is neither an OID" in (flagged.rows[0].study.patient_note or "")
        page2 = correction.studies(session, flagged=True, limit=1, offset=1)
        assert page2.total == 2 and [r.study.study_uid for r in page2.rows] == [second]
        resolved = correction.studies(session, status="resolved")
        assert resolved.total == 1 and resolved.rows[0].patient is not None
        assert correction.studies(session).total == 3
        for bad in ({"status": "lost"}, {"limit": 0}, {"offset": -1}):
            with pytest.raises(BadRequest):
                correction.studies(session, **bad)  # type: ignore[arg-type]


def test_a_correction_attaches_the_study_and_is_kept(archive: Archived, tmp_path: Path) -> None:
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    with archive.db.transaction(write=False) as session:
        stamp = correction.stamp(session, correction.study(session, uid).study)
    done = _correct(archive, uid, patient=(CHU, "IPP-77"), accession="ACC-77", expected=stamp)
    assert done.after is not None and done.after.rri == rri and done.before is None
    study = _study(archive, uid)
    assert (study.patient_status, study.patient_note) == ("resolved", None)
    assert (study.source_patient_id, study.source_issuer) == ("IPP-77", CHU)
    assert study.accession_number == "ACC-77"
    [kept] = _history(archive, uid)
    assert (kept.patient_before, kept.patient_after) == (None, study.patient_id)
    assert (kept.source_patient_id_before, kept.source_issuer_before) == ("LOCAL-9", "RADIOLOGIE-X")
    assert (kept.accession_before, kept.accession_after) == ("ACC0001", "ACC-77")
    assert (kept.status_before, kept.status_after) == ("unknown", "resolved")
    assert kept.actor == "test" and kept.reason.startswith("Examen de Mme JOSEPH")
    detail = json.loads(correction.audit_detail(done))
    assert detail["patient_after"] == rri and detail["status"] == ["unknown", "resolved"]


def test_a_correction_survives_more_instances_of_the_study(
    archive: Archived, tmp_path: Path
) -> None:
    """The modality sends more of the study with its wrong PatientID: the study stays with
    the patient the cell chose (and so does the C-STORE's audit record); a third PatientID
    is a conflict again. The archived bytes are those received."""
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    first = ct_dataset(patient_id="LOCAL-9", issuer="RADIOLOGIE-X")
    path = write(first, tmp_path / "first.dcm")
    done = archive.storescu(path)
    assert done.returncode == 0, done.stderr
    uid = str(first.StudyInstanceUID)
    _correct(archive, uid, regional_id=rri)
    more = ct_dataset(patient_id="LOCAL-9", issuer="RADIOLOGIE-X", study_uid=uid, seed=7)
    _store(archive, tmp_path, more)
    study = _study(archive, uid)
    assert study.patient_status == "resolved", study.patient_note
    with archive.db.transaction(write=False) as session:
        now = identity_service.current_patient(session, study.patient_id or 0)
        assert now is not None and now.rri == rri
        last = session.scalars(
            select(AuditRecord)
            .where(AuditRecord.interaction == "C-STORE")
            .order_by(AuditRecord.seq.desc())
        ).first()
        assert last is not None and last.patient_ref == f"Patient/{rri}"
        stored = session.scalars(
            select(Instance).where(Instance.sop_instance_uid == first.SOPInstanceUID)
        ).one()
        assert stored.sha256 == hashlib.sha256(dataset_bytes(path)).hexdigest()
    third = ct_dataset(patient_id="OTHER-1", issuer="RADIOLOGIE-X", study_uid=uid, seed=8)
    _store(archive, tmp_path, third)
    study = _study(archive, uid)
    assert study.patient_status == "conflict" and "'OTHER-1'" in (study.patient_note or "")


def test_a_resolved_study_is_reattached_with_its_history(archive: Archived, tmp_path: Path) -> None:
    first = _patient(archive, "IPP-77")
    second = _patient(archive, "IPP-78")
    archive.register("MODALITY")
    ds = ct_dataset(patient_id="IPP-77", issuer="CHU")
    _store(archive, tmp_path, ds)
    uid = str(ds.StudyInstanceUID)
    with pytest.raises(BadRequest, match="reason"):
        _correct(archive, uid, regional_id=second, reason="  ")
    with pytest.raises(BadRequest, match="nothing to change"):
        _correct(archive, uid, regional_id=first, reason="déjà bon")
    done = _correct(archive, uid, regional_id=second, reason="Erreur de dossier au scanner")
    assert done.before is not None and done.before.rri == first
    assert done.after is not None and done.after.rri == second
    back = _correct(archive, uid, patient=(CHU, "IPP-77"), reason="Retour : c'était le bon")
    assert back.after is not None and back.after.rri == first
    kept = _history(archive, uid)
    assert [(c.status_before, c.status_after) for c in kept] == [("resolved", "resolved")] * 2
    assert [c.source_patient_id_after for c in kept] == [second, "IPP-77"]
    assert kept[0].patient_after == kept[1].patient_before != kept[1].patient_after


def test_refused_corrections_change_nothing(archive: Archived, tmp_path: Path) -> None:
    rri = _patient(archive, "IPP-77")
    merged = _patient(archive, "IPP-78")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    with archive.db.transaction() as session:
        link_identities(
            session, authority=CHU, first_ipp="IPP-77", second_ipp="IPP-78", actor="test"
        )
        stale = correction.stamp(session, correction.study(session, uid).study)
    before = _study(archive, uid)
    _correct(archive, uid, accession="ACC-2")  # the accession number alone: still flagged
    assert _study(archive, uid).patient_status == "unknown"
    refusals: list[tuple[type[Exception], dict[str, object]]] = [
        (BadRequest, {"patient": (CHU, "IPP-77"), "reason": ""}),
        (BadRequest, {"patient": (CHU, "IPP-77"), "regional_id": rri}),
        (BadRequest, {"accession": "ACC\\1"}),
        (BadRequest, {"accession": "A" * 17}),
        (BadRequest, {"accession": "ACC-2"}),  # nothing to change
        (UnknownDomain, {"patient": (UNREGISTERED, "IPP-77")}),
        (UnknownPatient, {"patient": (CHU, "IPP-404")}),
        (NotFound, {"regional_id": "RRI-DOES-NOT-EXIST"}),
        (Unprocessable, {"regional_id": merged}),
        (Conflict, {"regional_id": rri, "expected": stale}),  # corrected since
    ]
    for error, options in refusals:
        with pytest.raises(error):
            _correct(archive, uid, **options)
    with pytest.raises(NotFound):
        _correct(archive, "1.2.3.4", regional_id=rri)
    with pytest.raises(BadRequest):
        correction.parse_patient("IPP-77")
    assert correction.parse_patient(f" {CHU}:IPP-77 ") == (CHU, "IPP-77")
    after = _study(archive, uid)
    assert (after.patient_status, after.patient_id, after.source_patient_id) == (
        before.patient_status,
        before.patient_id,
        before.source_patient_id,
    )
    assert len(_history(archive, uid)) == 1


# --- the command line ------------------------------------------------------------------------


def test_the_command_line(archive: Archived, tmp_path: Path, settings: Settings) -> None:
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    listed = run_enrs(settings, "imaging", "studies", "--flagged")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{uid}\tunknown\t-\tLOCAL-9\tRADIOLOGIE-X\tACC0001\t")
    assert "1 study(ies)" in listed.stderr
    refused = run_enrs(settings, "imaging", "study", "correct", uid, "--patient", f"{CHU}:IPP-404",
                    "--reason", "essai")  # fmt: skip
    assert refused.returncode == 1 and "IPP-404" in refused.stderr
    none = run_enrs(settings, "imaging", "study", "correct", uid, "--reason", "rien")
    assert none.returncode == 2 and "--patient, --regional-id or --accession" in none.stderr
    done = run_enrs(settings, "imaging", "study", "correct", uid, "--patient", f"{CHU}:IPP-77",
                 "--accession", "ACC-77", "--reason", "Vérifié avec le service")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{uid}\tresolved\t{rri}\tIPP-77\t{CHU}\tACC-77\t")
    assert run_enrs(settings, "imaging", "studies", "--flagged").stdout == ""
    history = run_enrs(settings, "imaging", "study", "history", uid)
    assert history.returncode == 0, history.stderr
    kept = history.stdout.splitlines()[1].split("\t")
    assert kept[1].startswith("cli:") and kept[2] == f"patient - -> {rri}"
    assert kept[3] == f"PatientID LOCAL-9^RADIOLOGIE-X -> IPP-77^{CHU}"
    assert kept[4:] == ["accession ACC0001 -> ACC-77", "status unknown -> resolved",
                        "Vérifié avec le service"]  # fmt: skip
    with archive.db.transaction(write=False) as session:
        audited = session.scalars(
            select(AuditRecord).where(AuditRecord.category == "dicom",
                                      AuditRecord.resource_type == "ImagingStudy",
                                      AuditRecord.interaction != "C-STORE")
            .order_by(AuditRecord.seq)
        ).all()  # fmt: skip
        kinds = [(r.interaction, r.action, r.patient_ref) for r in audited]
        assert ("update", "U", f"Patient/{rri}") in kinds and (
            "read",
            "R",
            f"Patient/{rri}",
        ) in kinds
        assert kinds[0] == ("search-type", "E", None)


# --- the portal ------------------------------------------------------------------------------


def test_the_cells_pages(
    archive: Archived, tmp_path: Path, client: TestClient, factory: Factory
) -> None:
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    factory.user("pro")
    log_in(client, "pro")
    assert client.get("/identitovigilance/imagerie").status_code == 403
    client.cookies.clear()
    factory.user("ida", roles=("identitovigilance",))
    log_in(client, "ida")
    listing = client.get("/identitovigilance/imagerie")
    assert listing.status_code == 200 and "1 examen(s)." in listing.text
    assert "neither an OID nor a registered domain" in listing.text and uid in listing.text
    assert client.get("/identitovigilance/imagerie?statut=perdu").status_code == 400
    page = client.get(f"/identitovigilance/imagerie/{uid}")
    assert page.status_code == 200 and "Aucune correction." in page.text
    version = page.text.split('name="version" value="')[1].split('"')[0]
    form = {"autorite": "rri", "identifiant": rri, "motif": "Vérifié", "version": version}
    no_csrf = client.post(f"/identitovigilance/imagerie/{uid}/correction", data=form)
    assert no_csrf.status_code == 403
    form["csrf"] = csrf_of(page.text)
    unknown = client.post(f"/identitovigilance/imagerie/{uid}/correction",
                          data={**form, "identifiant": "NOBODY"})  # fmt: skip
    assert unknown.status_code == 404 and "Correction refusée" in unknown.text
    done = client.post(f"/identitovigilance/imagerie/{uid}/correction", data=form)
    assert done.status_code == 200 and "Correction enregistrée." in done.text
    assert f'<td id="patient">{rri}</td>' in done.text and "Vérifié" in done.text
    assert "<td>Ida</td>" in done.text  # who corrected, as the cell knows them
    again = client.post(f"/identitovigilance/imagerie/{uid}/correction",
                        data={**form, "accession": "ACC-9"})  # fmt: skip
    assert again.status_code == 409 and "changed since it was shown" in again.text
    assert "0 examen(s)." in client.get("/identitovigilance/imagerie").text
    with archive.db.transaction(write=False) as session:
        record = session.scalars(
            select(AuditRecord)
            .where(AuditRecord.interaction == "update", AuditRecord.outcome == "0",
                   AuditRecord.resource_type == "ImagingStudy")
        ).one()  # fmt: skip
        assert record.patient_ref == f"Patient/{rri}"
        assert record.entity_ref == f"ImagingStudy/{uid}" and record.agent_name == "Ida"
        assert len(correction.history(session, uid)[1]) == 1


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url, "PATH": "/usr/bin"}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running


@pytest.mark.browser
def test_the_cell_corrects_a_study_in_the_browser(
    archive: Archived, tmp_path: Path, browser: Browser, server: LiveServer
) -> None:
    rri = _patient(archive, "IPP-77")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    page = browser.new_page()
    page.goto(server.base_url + "/login")
    page.fill("#username", "cellule")
    page.fill("#password", "Cellule-demo-2026!")
    page.click("button[type=submit]")
    page.click("text=Identitovigilance")
    page.click("#imaging-link")
    # (each assertion waits for its page: a submitting click returns before the next page)
    expect(page.locator("#studies-count")).to_contain_text("1 examen(s).")
    expect(page.locator("#studies td.why")).to_contain_text("neither an OID")
    page.click("text=Corriger")
    expect(page.locator("h1")).to_contain_text("Patient inconnu")
    page.select_option("#autorite", "rri")
    page.fill("#identifiant", rri)
    page.fill("#accession-field", "ACC-77")
    page.fill("#motif", "Examen de Mme JOSEPH : vérifié avec le service d'imagerie")
    page.click("text=Enregistrer la correction")
    expect(page.locator("body")).to_contain_text("Correction enregistrée.")
    expect(page.locator("#patient")).to_have_text(rri)
    expect(page.locator("#accession")).to_have_text("ACC-77")
    history = page.locator("#history tbody tr")
    expect(history).to_contain_text("Patient inconnu → Rattaché")
    expect(history).to_contain_text("vérifié avec le service")
    page.click("text=← Examens à rattacher")
    expect(page.locator("#studies-count")).to_contain_text("0 examen(s).")
    assert _study(archive, uid).patient_status == "resolved"


def test_two_corrections_at_once_one_is_refused(archive: Archived, tmp_path: Path) -> None:
    """Two members of the cell correct the study they both see: the second waits for the
    first (the row lock; on SQLite the write lock), then is refused, the first kept."""
    first = _patient(archive, "IPP-77")
    second = _patient(archive, "IPP-78")
    archive.register("MODALITY")
    uid = _unknown_study(archive, tmp_path)
    with archive.db.transaction(write=False) as session:
        seen = correction.stamp(session, correction.study(session, uid).study)
    holding, outcome = threading.Event(), queue.Queue[object]()

    def other_member() -> None:
        holding.wait(30)
        try:
            outcome.put(_correct(archive, uid, regional_id=second, expected=seen))
        except Conflict as exc:
            outcome.put(exc)

    thread = threading.Thread(target=other_member)
    thread.start()
    with archive.db.transaction() as session:
        correction.correct(session, archive.config, uid, reason="le premier", actor="a",
                           regional_id=first, expected=seen)  # fmt: skip
        holding.set()
        time.sleep(0.5)  # the other member's correction is waiting for this one
    thread.join(60)
    refused = outcome.get(timeout=1)
    assert isinstance(refused, Conflict) and "changed since it was shown" in refused.message
    assert [c.actor for c in _history(archive, uid)] == ["a"]


def test_a_corrected_study_leaves_with_its_corrected_identifiers(
    archive: Archived, tmp_path: Path
) -> None:
    """C-GET of a corrected study: the data sets carry the cell's Patient ID, issuer and
    accession number; the archive keeps the bytes it received, pixel data included."""
    from io import BytesIO

    from pydicom import dcmread

    from tests.imaging.test_dicom_retrieve import _getscu, _register

    _patient(archive, "IPP-77")
    _register(archive, "MODALITY", store=True, retrieve=True)
    uid = _unknown_study(archive, tmp_path)
    with archive.db.transaction(write=False) as session:
        [(key, digest)] = session.execute(select(Instance.blob_key, Instance.sha256)).all()
    _correct(archive, uid, patient=(CHU, "IPP-77"), accession="ACC-77")
    done = _getscu(archive, tmp_path / "got", uid)
    assert done.returncode == 0, done.stderr
    [path] = list((tmp_path / "got").iterdir())
    got, kept = dcmread(path), dcmread(BytesIO(archive.storage.get(key)))
    assert (got.PatientID, got.IssuerOfPatientID, got.AccessionNumber) == ("IPP-77", CHU, "ACC-77")
    [qualifier] = got.IssuerOfPatientIDQualifiersSequence
    assert (qualifier.UniversalEntityID, qualifier.UniversalEntityIDType) == (CHU, "ISO")
    assert (kept.PatientID, kept.IssuerOfPatientID) == ("LOCAL-9", "RADIOLOGIE-X")
    assert got.PixelData == kept.PixelData and got.SOPInstanceUID == kept.SOPInstanceUID
    with archive.db.transaction(write=False) as session:
        assert session.scalars(select(Instance.sha256)).all() == [digest]
