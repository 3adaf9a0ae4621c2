"""The region of the DICOMweb tests: the document tests' region (a CHU with the patient in care,
a clinic without), the facilities' software as system clients with ``ImagingStudy`` scopes,
the archive's DICOM listener (DCMTK's storescu stores through it) and multipart helpers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from enrs.accounts import service as accounts_service
from enrs.coordination import service as coordination_service
from enrs.documents.access import reader_of
from enrs.identity import service as identity_service
from enrs.kit.db import Database
from enrs.kit.security.principal import Principal
from enrs.kit.security.scopes import ScopeSet
from tests.documents.world import CHU, CHU_OID, CLINIC, IPP, Region
from tests.imaging.conftest import Archived, ct_dataset, write

READ = "system/ImagingStudy.r"
STORE = "system/ImagingStudy.cr"


def client_headers(
    db: Database,
    client: TestClient,
    *,
    scope: str,
    finess: str | None = None,
    authorities: tuple[str, ...] = (),
) -> tuple[dict[str, str], str]:
    """The headers of a new system client's token, and its client id."""
    with db.transaction() as session:
        created, secret = accounts_service.create_client(
            session, name="PACS", scope=scope, finess=finess, authorities=list(authorities)
        )
    answer = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(created.client_id, secret)
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}, created.client_id


@dataclass
class Imaging:
    region: Region
    archive: Archived
    chu: dict[str, str]  # the CHU's software: the patient in care there
    clinic: dict[str, str]  # the clinic's: no relationship with the patient
    chu_id: str
    clinic_id: str

    @property
    def client(self) -> TestClient:
        return self.region.client

    def store(self, tmp_path: Path, **options: Any) -> tuple[Path, Any]:
        """A CT image of the region's patient (IPP of the CHU) stored by storescu."""
        options.setdefault("patient_id", IPP)
        options.setdefault("issuer", CHU_OID)
        ds = ct_dataset(**options)
        path = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        done = self.archive.storescu(path)
        assert done.returncode == 0 and "Success" in done.stderr + done.stdout, done.stderr
        return path, ds

    def join_circle(self) -> None:
        """The CHU's software makes a care circle and invites the clinic, which accepts."""
        db = self.region.db
        with db.transaction() as session:
            patient = identity_service.patient_by_rri(session, self.region.rri)
            assert patient is not None
            chu = coordination_service.Actor(reader_of(session, system_principal(self.chu_id)))
            team = coordination_service.create(session, chu, patient, name="Suivi")
            new = coordination_service.NewMember("organization", "member", finess=CLINIC)
            coordination_service.invite(session, chu, team, new)
            clinic = coordination_service.Actor(
                reader_of(session, system_principal(self.clinic_id))
            )
            coordination_service.accept(session, clinic, team)


def system_principal(client_id: str) -> Principal:
    """The principal of a facility's software (its reader is its member facility)."""
    return Principal("client", client_id, "PACS", ScopeSet.parse(READ), client_id=client_id)


def multipart(*files: bytes, part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + f + b"\r\n" for f in files
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def parts(answer: Any) -> list[tuple[str, bytes]]:
    """The parts (Content-Type, content) of a multipart/related answer."""
    message = Message()
    message["content-type"] = answer.headers["content-type"]
    boundary = message.get_param("boundary")
    assert isinstance(boundary, str)
    delimiter = b"--" + boundary.encode()
    found = []
    for chunk in answer.content.split(b"\r\n" + delimiter)[0:]:
        chunk = chunk.removeprefix(delimiter)
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        found.append((head.decode().partition(":")[2].strip(), content))
    return found


def make_imaging(region: Region, archive: Archived) -> Imaging:
    archive.register("MODALITY")
    chu, chu_id = client_headers(region.db, region.client, scope=READ, finess=CHU)
    clinic, clinic_id = client_headers(region.db, region.client, scope=READ, finess=CLINIC)
    return Imaging(region, archive, chu, clinic, chu_id, clinic_id)
