"""The imaging retention job: instances stored by DCMTK's storescu through the real listener,
moved to the fs backend's cold folder (and once to an S3 storage class, on moto's HTTP server
as the storage tests use) and read back through the archive's reading path
(``storage.get(instance.blob_key)``); crashes reproduced by a real failing filesystem (the cold
folder is a file) or by stopping after the job's first steps (the public storage calls it is
made of); the ``enrs imaging retention run`` command in a subprocess."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr
from pydicom import dcmread
from sqlalchemy import select, update

from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import matcher_for
from enrs.identity.models import SourceIdentity
from enrs.imaging import retention
from enrs.imaging.dicom import Archive, DicomListener
from enrs.imaging.encoding import dataset_of
from enrs.imaging.models import Instance, Series, Study, StudyCorrection
from enrs.imaging.reading_models import Reading, ReadingGroup, ReadingRequest
from enrs.imaging.share_models import Share, ShareSession
from enrs.kit.audit.models import AuditRecord
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database, utcnow
from enrs.kit.storage import FsBlobStorage, open_storage
from enrs.kit.storage.s3 import S3BlobStorage
from enrs.settings import Settings
from tests.imaging.conftest import AET, Archived, ct_dataset, dataset_bytes, write
from tests.support.identities import person
from tests.support.live_server import run_enrs

CHU = "1.2.250.1.71.4.2.2.1"


def _store_study(
    archive: Archived, tmp_path: Path, *, study_date: str, count: int, born: str | None = "19610409"
) -> list[Path]:
    study_uid = ct_dataset().StudyInstanceUID
    series_uid = ct_dataset().SeriesInstanceUID
    files = []
    for n in range(count):
        ds = ct_dataset(study_uid=study_uid, series_uid=series_uid, seed=n + 1, size=64)
        ds.StudyDate = study_date
        if born is None:
            del ds.PatientBirthDate
        else:
            ds.PatientBirthDate = born
        files.append(write(ds, tmp_path / f"{study_uid}-{n}.dcm"))
    done = archive.storescu(*files)
    assert done.returncode == 0, done.stderr
    return files


def _instances(archive: Archived) -> list[Instance]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(Instance).order_by(Instance.id)))


def _by_uid(archive: Archived) -> dict[str, Instance]:
    return {i.sop_instance_uid: i for i in _instances(archive)}


def _retention_audit(archive: Archived) -> list[AuditRecord]:
    with archive.db.transaction(write=False) as session:
        found = select(AuditRecord).where(AuditRecord.category == "retention")
        return list(session.scalars(found.order_by(AuditRecord.seq)))


def _read_back(archive: Archived, files: list[Path]) -> None:
    """Every file's data set, read through the archive's reading path, byte for byte."""
    stored = _by_uid(archive)
    for path in files:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert dataset_of(archive.storage.get(stored[uid].blob_key)) == dataset_bytes(path)


def _cold_root(archive: Archived) -> Path:
    assert isinstance(archive.storage, FsBlobStorage) and archive.storage.cold_root is not None
    return archive.storage.cold_root


def _warm_root(archive: Archived) -> Path:
    assert isinstance(archive.storage, FsBlobStorage)
    return archive.storage.root


@pytest.fixture
def archive_fs(archive: Archived) -> Archived:
    archive.register("MODALITY")
    return archive


def test_old_studies_move_to_the_cold_folder(archive_fs: Archived, tmp_path: Path) -> None:
    archive = archive_fs
    old = _store_study(archive, tmp_path, study_date="20240105", count=3)
    recent = _store_study(archive, tmp_path, study_date=f"{utcnow():%Y%m%d}", count=1)
    dry = retention.move_cold(archive.db, archive.storage, days=365, dry_run=True)
    assert (dry.studies, dry.instances) == (1, 3) and dry.bytes > 3 * 64 * 64 * 2
    assert {i.storage_tier for i in _instances(archive)} == {"warm"}  # dry: nothing moved
    moved = retention.move_cold(archive.db, archive.storage, days=365)
    assert (moved.studies, moved.instances, moved.failed) == (1, 3, [])
    stored = _by_uid(archive)
    tiers = sorted(i.storage_tier for i in stored.values())
    assert tiers == ["cold", "cold", "cold", "warm"]
    cold = _cold_root(archive)
    for instance in stored.values():
        key = instance.blob_key
        in_cold = (cold / f"{key}.blob").is_file()
        in_warm = (_warm_root(archive) / f"{key}.blob").is_file()
        assert (in_cold, in_warm) == (
            instance.storage_tier == "cold",
            instance.storage_tier == "warm",
        )
    _read_back(archive, old + recent)
    (entry,) = _retention_audit(archive)
    assert entry.interaction == "update" and entry.action == "U" and entry.agent_id == "retention"
    assert entry.entity_ref.startswith("ImagingStudy/")
    assert json.loads(entry.detail or "{}")["instances"] == 3
    # Idempotent: a second run finds nothing to do and audits nothing.
    again = retention.move_cold(archive.db, archive.storage, days=365)
    assert (again.studies, again.instances) == (0, 0)
    assert len(_retention_audit(archive)) == 1
    assert retention.tiers(archive.db) == {"cold": 3, "warm": 1}


def test_unwritable_cold_tier_loses_nothing(archive_fs: Archived, tmp_path: Path) -> None:
    archive = archive_fs
    files = _store_study(archive, tmp_path, study_date="20200301", count=2)
    cold = _cold_root(archive)
    cold.parent.mkdir(parents=True, exist_ok=True)
    cold.write_bytes(b"not a folder")  # the cold disk is unusable: every copy fails
    moved = retention.move_cold(archive.db, archive.storage, days=30)
    assert (moved.studies, moved.instances, len(moved.failed)) == (0, 0, 2)
    assert {i.storage_tier for i in _instances(archive)} == {"warm"}
    assert _retention_audit(archive) == []
    _read_back(archive, files)
    cold.unlink()  # the disk is back: the next run moves them
    moved = retention.move_cold(archive.db, archive.storage, days=30)
    assert (moved.instances, moved.failed) == (2, [])
    _read_back(archive, files)


def test_interrupted_move_resumes(archive_fs: Archived, tmp_path: Path) -> None:
    """The job died after copying an instance (both copies exist), and after copying and
    releasing another (only the cold copy exists, the row still says warm)."""
    archive = archive_fs
    files = _store_study(archive, tmp_path, study_date="20190704", count=3)
    first, second, _ = _instances(archive)
    archive.storage.copy_to_cold(first.blob_key)
    archive.storage.copy_to_cold(second.blob_key)
    archive.storage.release_warm(second.blob_key)
    _read_back(archive, files)  # readable in every intermediate state
    moved = retention.move_cold(archive.db, archive.storage, days=30)
    assert (moved.studies, moved.instances, moved.failed) == (1, 3, [])
    assert {i.storage_tier for i in _instances(archive)} == {"cold"}
    warm_root = _warm_root(archive)
    assert not list(warm_root.rglob("*.dcm.*"))  # no warm copy left behind
    assert len(list(_cold_root(archive).rglob("*.dcm.blob"))) == 3
    _read_back(archive, files)


def test_damaged_warm_blob_is_not_moved(archive_fs: Archived, tmp_path: Path) -> None:
    archive = archive_fs
    _store_study(archive, tmp_path, study_date="20190704", count=2)
    first, second = _instances(archive)
    warm_root = _warm_root(archive)
    blob = warm_root / f"{first.blob_key}.blob"
    damaged = bytearray(blob.read_bytes())
    damaged[200] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    moved = retention.move_cold(archive.db, archive.storage, days=30)
    assert moved.failed == [first.blob_key] and moved.instances == 1
    assert blob.read_bytes() == bytes(damaged)  # the warm copy is kept as it was
    tiers = {i.blob_key: i.storage_tier for i in _instances(archive)}
    assert tiers == {first.blob_key: "warm", second.blob_key: "cold"}
    (entry,) = _retention_audit(archive)
    assert json.loads(entry.detail or "{}") == {
        "study_uid": entry.entity_ref.removeprefix("ImagingStudy/"),
        "tier": "cold",
        "instances": 1,
        "left": 1,
    }


def _set_patient(archive: Archived, study_uid: str, patient_id: int) -> None:
    with archive.db.transaction() as session:
        session.execute(
            update(Study).where(Study.study_uid == study_uid).values(patient_id=patient_id)
        )


def _study_uids(archive: Archived) -> list[str]:
    with archive.db.transaction(write=False) as session:
        return list(session.scalars(select(Study.study_uid).order_by(Study.id)))


def test_purge_counts_from_the_patients_last_exam(archive_fs: Archived, tmp_path: Path) -> None:
    archive = archive_fs
    _store_study(archive, tmp_path, study_date="19990101", count=2)  # A: patient 7
    _store_study(archive, tmp_path, study_date="19980101", count=1)  # B: patient 7
    _store_study(archive, tmp_path, study_date="19970101", count=1)  # C: patient 8, seen lately
    _store_study(archive, tmp_path, study_date="20250101", count=1)  # D: patient 8
    kept_recent = _store_study(archive, tmp_path, study_date="20240101", count=1)  # E: none
    a, b, c, d, e = _study_uids(archive)
    for uid, patient in ((a, 7), (b, 7), (c, 8), (d, 8)):
        _set_patient(archive, uid, patient)
    with archive.db.transaction() as session:  # A was corrected by the cell: its history goes too
        study_a = session.scalars(select(Study.id).where(Study.study_uid == a)).one()
        session.add(StudyCorrection(study_id=study_a, actor="cli:test", reason="test",
                                    status_before="unknown", status_after="resolved"))  # fmt: skip
        share = Share(study_id=study_a, code_hash="0" * 64, created_by="user:1",
                      created_by_name="Dr Test", expires_at=utcnow())  # fmt: skip
        session.add(share)
        session.flush()
        session.add(ShareSession(share_id=share.id, token_hash="1" * 64, expires_at=utcnow()))
        group = ReadingGroup(name="Téléradiologie")
        session.add(group)
        session.flush()
        request = ReadingRequest(resource_id="r-1", study_id=study_a, patient_id=7,
                                 requesting_finess="970000000", requested_by="user:1",
                                 group_id=group.id, kind="teleradiology", priority="routine",
                                 state="done", due_at=utcnow())  # fmt: skip
        session.add(request)
        session.flush()
        session.add(Reading(resource_id="g-1", request_id=request.id, step="first", state="signed"))
    retention.move_cold(archive.db, archive.storage, days=365 * 5)  # A, B, C go cold
    keys_a_b = [i.blob_key for i in _instances(archive)][:3]
    dry = retention.purge(archive.db, archive.storage, years=20, dry_run=True)
    assert (dry.studies, dry.instances) == (2, 3)
    assert len(_study_uids(archive)) == 5
    done = retention.purge(archive.db, archive.storage, years=20)
    assert (done.studies, done.instances, done.contents_left) == (2, 3, 0)
    assert _study_uids(archive) == [c, d, e]  # C kept: patient 8 had an exam in 2025
    for key in keys_a_b:
        assert not archive.storage.exists(key)
    with archive.db.transaction(write=False) as session:
        assert session.scalars(select(Series.id)).all() != []
        assert len(session.scalars(select(Instance.id)).all()) == 3
        assert session.scalars(select(StudyCorrection.id)).all() == []
        assert session.scalars(select(Share.id)).all() == []
        assert session.scalars(select(ShareSession.id)).all() == []
        assert session.scalars(select(ReadingRequest.id)).all() == []
        assert session.scalars(select(Reading.id)).all() == []
    deletions = [r for r in _retention_audit(archive) if r.interaction == "delete"]
    assert sorted(r.entity_ref or "" for r in deletions) == sorted(
        [f"ImagingStudy/{a}", f"ImagingStudy/{b}"]
    )
    assert all(r.action == "D" and r.agent_kind == "system" for r in deletions)
    _read_back(archive, kept_recent)
    assert retention.purge(archive.db, archive.storage, years=20).studies == 0


def test_a_minors_studies_are_kept_until_their_28th_birthday(
    archive_fs: Archived, tmp_path: Path
) -> None:
    """R.1112-7: 20 years after the last exam, but not before the 28th birthday; a study
    without a birth date may be a minor's: kept. The patient's every study counts."""
    archive = archive_fs
    twenty_eight = (utcnow() - timedelta(days=round(365.25 * 28))).date()
    young = (twenty_eight + timedelta(days=30)).strftime("%Y%m%d")  # 28 next month
    grown = (twenty_eight - timedelta(days=30)).strftime("%Y%m%d")  # 28 last month
    _store_study(archive, tmp_path, study_date="20010101", count=1, born=young)  # A: patient 7
    _store_study(archive, tmp_path, study_date="20010101", count=1, born=grown)  # B: patient 7
    _store_study(archive, tmp_path, study_date="20010101", count=1, born=grown)  # C: none
    _store_study(archive, tmp_path, study_date="20010101", count=1, born=None)  # D: none
    a, b, _c, d = _study_uids(archive)
    for uid in (a, b):
        _set_patient(archive, uid, 7)
    assert retention.purge(archive.db, archive.storage, years=20, dry_run=True).studies == 1
    done = retention.purge(archive.db, archive.storage, years=20)
    assert done.studies == 1
    assert _study_uids(archive) == [a, b, d]  # B kept with A: one patient, one record


def _ago(years: float) -> date:
    return (utcnow() - timedelta(days=round(365.25 * years))).date()


def _fed(archive: Archived, ipp: str, name: str, death: date | None, flag: str = "Y") -> int:
    """A regional patient fed by the CHU with PID-29 ``death`` and PID-30 ``flag`` in its
    record (as an ADT gives them); its id."""
    pid = {"30": flag} | ({"29": death.strftime("%Y%m%d")} if death else {})
    data = person(CHU, ipp, birth_name=name, record={"v2": {"PID": pid, "segments": []}})
    with archive.db.transaction() as session:
        if identity_service.authority_by_namespace(session, "CHU") is None:
            domains.add(session, archive.config, CHU, namespace="CHU")
        fed = identity_service.feed(
            session, matcher_for(None), data, actor="test", config=archive.config
        )
        source = session.get(SourceIdentity, fed.source_id)
        assert source is not None
        return source.patient_id


def test_a_dead_patients_studies_go_ten_years_after_the_death(
    archive_fs: Archived, tmp_path: Path
) -> None:
    """R.1112-7: a patient who died less than 10 years after their last exam has their record
    kept 10 years from the death, in all cases (a minor's too), before the 20 years; the day
    from the identities the facilities fed (the latest one when they differ); a death without
    its day, or one 10 years after the last exam or more, changes nothing."""
    archive = archive_fs
    day = lambda years: _ago(years).strftime("%Y%m%d")  # noqa: E731
    cases = {  # name: (last exam, death, kept?)
        "MARTIN": (12, 11, False),  # died 11 years ago, a year after the last exam: goes
        "BERNARD": (12, 9, True),  # died 9 years ago: 10 years not passed
        "THOMAS": (12, None, True),  # the death's day unknown: the 20 years
        "PETIT": (21, 12, False),  # both periods passed: counted once
        "ROBERT": (15, 2, True),  # died 13 years after the last exam: the 20 years
    }
    patients = {}
    for n, (name, (exam, death, _)) in enumerate(cases.items()):
        patients[name] = _fed(archive, f"IPP-D{n}", name, _ago(death) if death else None)
        _store_study(archive, tmp_path, study_date=day(exam + 1), count=1, born=None)
        _store_study(archive, tmp_path, study_date=day(exam), count=1, born=None)
    # A second identity of BERNARD's (another facility's record, linked) says 11 years ago:
    # the later day counts.
    other = _fed(archive, "IPP-D9", "LEFEBVRE", _ago(11))
    with archive.db.transaction() as session:
        session.execute(
            update(SourceIdentity)
            .where(SourceIdentity.patient_id == other)
            .values(patient_id=patients["BERNARD"])
        )
    uids = _study_uids(archive)
    for n, name in enumerate(cases):
        for uid in uids[2 * n : 2 * n + 2]:
            _set_patient(archive, uid, patients[name])
    gone = [u for n, c in enumerate(cases.values()) if not c[2] for u in uids[2 * n : 2 * n + 2]]
    dry = retention.purge(archive.db, archive.storage, years=20, dry_run=True)
    assert dry.studies == len(gone) == 4
    assert retention.purge(archive.db, archive.storage, years=20).studies == 4
    assert _study_uids(archive) == [u for u in uids if u not in gone]
    deletions = [r for r in _retention_audit(archive) if r.interaction == "delete"]
    assert sorted(r.entity_ref or "" for r in deletions) == sorted(
        f"ImagingStudy/{u}" for u in gone
    )
    assert retention.purge(archive.db, archive.storage, years=20).studies == 0


def test_orphan_blobs_are_swept_after_their_grace(
    archive_fs: Archived, settings: Settings, tmp_path: Path
) -> None:
    """A blob under ``imaging/`` that no instance names (a process killed between writing it
    and committing its row) is removed once older than the grace period, audited; the
    archived instances' blobs and a fresh orphan stay."""
    archive = archive_fs
    kept = _store_study(archive, tmp_path, study_date="20240101", count=2)
    orphan = "imaging/2026/12/0123456789abcdef0123456789abcdef.dcm"
    archive.storage.put(orphan, b"DICM half-filed", "application/dicom")
    fresh = retention.sweep(archive.db, archive.storage, grace=timedelta(hours=1))
    assert (fresh.orphans, archive.storage.exists(orphan)) == (0, True)  # within its grace
    counted = run_enrs(settings, "imaging", "retention", "sweep", "--hours", "0", "--dry-run")
    assert counted.returncode == 0 and "would remove 1 orphan blob(s)" in counted.stdout
    assert archive.storage.exists(orphan)
    done = retention.sweep(archive.db, archive.storage, grace=timedelta(0))
    assert (done.orphans, done.failed) == (1, 0)
    assert not archive.storage.exists(orphan)
    assert all(archive.storage.exists(i.blob_key) for i in _instances(archive))
    _read_back(archive, kept)
    [audited] = [r for r in _retention_audit(archive) if r.entity_ref == orphan]
    assert (audited.interaction, audited.action) == ("delete", "D")
    assert retention.sweep(archive.db, archive.storage, grace=timedelta(0)).orphans == 0


def test_study_without_date_counts_from_its_reception(archive_fs: Archived, tmp_path: Path) -> None:
    archive = archive_fs
    ds = ct_dataset(size=16)
    del ds.StudyDate
    done = archive.storescu(write(ds, tmp_path / "nodate.dcm"))
    assert done.returncode == 0, done.stderr
    assert retention.move_cold(archive.db, archive.storage, days=1).instances == 0
    with archive.db.transaction() as session:
        received = utcnow() - timedelta(days=3)
        session.execute(update(Study).values(created_at=received))
    assert retention.move_cold(archive.db, archive.storage, days=1).instances == 1


def test_cli_run(archive_fs: Archived, settings: Settings, tmp_path: Path) -> None:
    archive = archive_fs
    files = _store_study(archive, tmp_path, study_date="20000101", count=2)
    off = run_enrs(settings, "imaging", "retention", "run")
    assert off.returncode == 0, off.stderr
    assert "cold tier: disabled" in off.stdout and "retention: disabled" in off.stdout
    env = {"ENRS_IMAGING_COLD_AFTER_DAYS": "90", "ENRS_IMAGING_RETENTION_YEARS": "30"}
    dry = run_enrs(settings, "imaging", "retention", "run", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert "cold tier (would move): 2 instance(s) of 1 study(ies)" in dry.stdout
    assert "retention (would delete): 0 study(ies)" in dry.stdout
    assert "instances now: 2 warm, 0 cold" in dry.stdout
    run = run_enrs(settings, "imaging", "retention", "run", **env)
    assert run.returncode == 0, run.stderr
    assert "cold tier (did move): 2 instance(s) of 1 study(ies)" in run.stdout
    assert "instances now: 0 warm, 2 cold" in run.stdout
    _read_back(archive, files)
    purge = run_enrs(settings, "imaging", "retention", "run", ENRS_IMAGING_RETENTION_YEARS="20")
    assert "retention (did delete): 1 study(ies), 2 instance(s)" in purge.stdout
    assert _instances(archive) == []
    assert list(_cold_root(archive).rglob("*.dcm.blob")) == []


@pytest.fixture
def archive_s3(settings: Settings) -> Iterator[Archived]:
    """The archive's listener storing into an S3 bucket (moto's HTTP server, as the storage
    tests use), the cold tier being the ``GLACIER_IR`` storage class."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint_url": f"http://127.0.0.1:{port}",
            "s3_bucket": "enrs-imaging",
            "s3_access_key_id": "test",
            "s3_secret_access_key": SecretStr("test"),
            "s3_cold_storage_class": "GLACIER_IR",
        }
    )
    db = Database(s3.database_url)
    storage = open_storage(s3)
    audit = AuditWriter(db)
    config = IdentityConfig.from_settings(s3)
    listener = DicomListener(Archive(db, storage, audit, config), host="127.0.0.1", port=0, aet=AET)
    listener.start()
    try:
        archived = Archived(db, storage, listener.port, config, listener)
        archived.register("MODALITY")
        yield archived
    finally:
        listener.stop()
        audit.close()
        storage.close()
        db.dispose()
        server.stop()


def test_s3_move_is_a_storage_class_change(archive_s3: Archived, tmp_path: Path) -> None:
    archive = archive_s3
    files = _store_study(archive, tmp_path, study_date="20210910", count=2)
    moved = retention.move_cold(archive.db, archive.storage, days=30)
    assert (moved.studies, moved.instances, moved.failed) == (1, 2, [])
    assert isinstance(archive.storage, S3BlobStorage)
    for instance in _instances(archive):
        assert instance.storage_tier == "cold"
        head = archive.storage.client.head_object(
            Bucket="enrs-imaging", Key=f"{instance.blob_key}.blob"
        )
        assert head["StorageClass"] == "GLACIER_IR"
    _read_back(archive, files)
    assert retention.move_cold(archive.db, archive.storage, days=30).instances == 0
    assert len(_retention_audit(archive)) == 1
