"""STOW-RS (issue 16): DICOM files stored over DICOMweb by a facility's system client, filed by
the C-STORE code path; the PS3.18 response (ReferencedSOPSequence, FailedSOPSequence with
FailureReason; 200, 202, 409), nothing kept of a refused instance, who may store, the audit
trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enrs.imaging import repository
from enrs.imaging.encoding import dataset_of
from enrs.imaging.models import Instance
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.documents.world import CHU, CHU_OID, IPP, make_region
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.imaging.web_world import STORE, Imaging, client_headers, make_imaging, multipart, parts

DICOM_JSON = "application/dicom+json"
REFERENCED, FAILED, REASON, RETRIEVE_URL = "00081199", "00081198", "00081197", "00081190"


@pytest.fixture
def imaging(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


@pytest.fixture
def pacs(imaging: Imaging) -> dict[str, str]:
    """The CHU's PACS: it stores, and its facility owns the CHU's domain (its authority)."""
    region = imaging.region
    return client_headers(region.db, region.client, scope=STORE, finess=CHU)[0]


def _file(tmp_path: Path, **options: Any) -> tuple[bytes, Any]:
    options.setdefault("patient_id", IPP)
    ds = ct_dataset(**options)
    return write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm").read_bytes(), ds


def _stow(imaging: Imaging, headers: dict[str, str], *files: bytes, url: str = "") -> Any:
    body, kind = multipart(*files)
    return imaging.client.post(
        f"/dicomweb/studies{url}",
        content=body,
        headers={**headers, "Content-Type": kind, "Accept": DICOM_JSON},
    )


def _instances(imaging: Imaging) -> int:
    with imaging.region.db.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _blobs(imaging: Imaging) -> list[str]:
    return list(imaging.archive.storage.iter_keys("imaging/"))


def _reasons(answer: Any) -> list[int]:
    return [item[REASON]["Value"][0] for item in answer.json()[FAILED]["Value"]]


def test_stow_stores_as_c_store_does(
    imaging: Imaging, pacs: dict[str, str], tmp_path: Path
) -> None:
    content, ds = _file(tmp_path)  # no issuer: the client's authority (the CHU's domain)
    answer = _stow(imaging, pacs, content)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == DICOM_JSON
    body = answer.json()
    (item,) = body[REFERENCED]["Value"]
    assert item["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert item[RETRIEVE_URL]["Value"][0].endswith(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    assert FAILED not in body
    with imaging.region.db.transaction(write=False) as session:
        study = repository.study(session, ds.StudyInstanceUID)
        assert study is not None
        assert study.patient_status == "resolved" and study.source_issuer == CHU_OID
        assert study.sending_aet.startswith("pacs-")  # the client id, not an AE title
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.interaction == "STOW-RS")
        ).all()
    (record,) = records
    assert record.category == "dicomweb" and record.outcome == "0"
    assert record.patient_ref == f"Patient/{imaging.region.rri}"
    assert record.entity_ref == f"ImagingStudy/{ds.StudyInstanceUID}"

    again = _stow(imaging, pacs, content)  # the same bytes again: a success, nothing new
    assert again.status_code == 200 and _instances(imaging) == 1 and len(_blobs(imaging)) == 1

    got = imaging.client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=imaging.chu)
    ((_, retrieved),) = parts(got)
    assert dataset_of(retrieved) == dataset_of(content)


def test_truncated_and_duplicates_fail_and_store_nothing(
    imaging: Imaging, pacs: dict[str, str], tmp_path: Path
) -> None:
    content, ds = _file(tmp_path)
    answer = _stow(imaging, pacs, content[:-1000])
    assert answer.status_code == 409, answer.text
    assert _reasons(answer) == [0xC000]
    assert answer.json()[FAILED]["Value"][0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert REFERENCED not in answer.json()
    assert _instances(imaging) == 0 and _blobs(imaging) == []

    not_dicom = _stow(imaging, pacs, b"%PDF-1.4 not a DICOM file" * 10)
    assert not_dicom.status_code == 409 and _reasons(not_dicom) == [0xC000]

    assert _stow(imaging, pacs, content).status_code == 200
    other, _ = _file(tmp_path, sop_uid=ds.SOPInstanceUID, study_uid=ds.StudyInstanceUID,
                     series_uid=ds.SeriesInstanceUID, seed=9)  # fmt: skip
    duplicate = _stow(imaging, pacs, other)
    assert duplicate.status_code == 409 and _reasons(duplicate) == [0x0111]
    assert _instances(imaging) == 1 and len(_blobs(imaging)) == 1
    got = imaging.client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=imaging.chu)
    ((_, kept),) = parts(got)
    assert dataset_of(kept) == dataset_of(content)  # the original is kept

    mixed, good = _file(tmp_path), _file(tmp_path)
    some = _stow(imaging, pacs, good[0], mixed[0][:-500])
    assert some.status_code == 202
    assert len(some.json()[REFERENCED]["Value"]) == 1 and _reasons(some) == [0xC000]
    assert _instances(imaging) == 2 and len(_blobs(imaging)) == 2

    with imaging.region.db.transaction(write=False) as session:
        refused = session.scalars(
            select(AuditRecord).where(
                AuditRecord.interaction == "STOW-RS", AuditRecord.outcome != "0"
            )
        ).all()
    assert len(refused) == 3  # truncated twice, the duplicate (the non-DICOM file: below)
    with imaging.region.db.transaction(write=False) as session:
        requests = session.scalars(
            select(AuditRecord).where(
                AuditRecord.category == "dicomweb", AuditRecord.interaction == "create"
            )
        ).all()
    assert len(requests) == 5 and any("not_dicom_files" in (r.detail or "") for r in requests)


def test_stow_into_a_study(imaging: Imaging, pacs: dict[str, str], tmp_path: Path) -> None:
    content, ds = _file(tmp_path)
    wrong = _stow(imaging, pacs, content, url="/1.2.3.4")
    assert wrong.status_code == 409 and _reasons(wrong) == [0xA900]
    assert _instances(imaging) == 0
    right = _stow(imaging, pacs, content, url=f"/{ds.StudyInstanceUID}")
    assert right.status_code == 200
    assert right.json()[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{ds.StudyInstanceUID}")


def test_bad_bodies(imaging: Imaging, pacs: dict[str, str], tmp_path: Path) -> None:
    content, _ = _file(tmp_path)
    client = imaging.client
    as_file = client.post(
        "/dicomweb/studies", content=content, headers={**pacs, "Content-Type": "application/dicom"}
    )
    assert as_file.status_code == 415
    body, kind = multipart(content, part_type="application/pdf")
    pdf_part = client.post(
        "/dicomweb/studies", content=body, headers={**pacs, "Content-Type": kind}
    )
    assert pdf_part.status_code == 415
    no_boundary = client.post(
        "/dicomweb/studies",
        content=b"x",
        headers={**pacs, "Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert no_boundary.status_code == 400
    body, kind = multipart(content)
    unclosed = client.post(
        "/dicomweb/studies", content=body[:-40], headers={**pacs, "Content-Type": kind}
    )
    assert unclosed.status_code == 400
    assert _instances(imaging) == 0 and _blobs(imaging) == []


def test_who_may_store(imaging: Imaging, tmp_path: Path) -> None:
    content, _ = _file(tmp_path)
    region = imaging.region
    assert _stow(imaging, {}, content).status_code == 401
    assert _stow(imaging, imaging.chu, content).status_code == 403  # read scope only
    unbound, _ = client_headers(region.db, region.client, scope=STORE)
    refused = _stow(imaging, unbound, content)
    assert refused.status_code == 403 and "authority" in refused.json()["detail"]
    bound, _ = client_headers(region.db, region.client, scope=STORE, authorities=(CHU_OID,))
    stored = _stow(imaging, bound, content)
    assert stored.status_code == 200
    # No structure, so no care relationship: it reads the study as its own (rule 2) only.
    study = stored.json()[RETRIEVE_URL]["Value"][0].partition("/dicomweb")[2]
    assert imaging.client.get(f"/dicomweb{study}/metadata", headers=bound).status_code == 200
    assert (
        imaging.client.get(f"/dicomweb{study}/metadata", headers=imaging.clinic).status_code == 403
    )
