"""The region of the reading tests: the CHU (which has the patient in care and asks for
readings, its doctor ``dr.chu``), a teleradiology practice whose three radiologists
(``dr.a``, ``dr.b``, ``dr.c``) read for the groups "Garde de nuit" and "Dépistage", and
studies of the patient stored in the archive by DCMTK's storescu."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.imaging import reading
from enrs.imaging.models import Study
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.directory.test_import import finess, line, rpps, run, structure, write
from tests.imaging.conftest import Archived, ct_dataset
from tests.imaging.conftest import write as write_dicom
from tests.support.identities import person
from tests.support.portal import log_in

CHU, PRACTICE = finess(1), finess(2)
CHU_OID = "1.2.250.1.999.1.1"
IPP = "800001"
DOCTOR, RADIOLOGISTS = rpps(1), {"dr.a": rpps(3), "dr.b": rpps(4), "dr.c": rpps(5)}
NIGHT, SCREENING = "Garde de nuit", "Dépistage"


@dataclass
class Radiology:
    app: FastAPI
    db: Database
    archive: Archived
    rri: str
    tmp_path: Path

    def study(self, description: str = "TDM THORAX") -> str:
        """A study of the patient stored by the CHU's modality; its Study Instance UID."""
        ds = ct_dataset(patient_id=IPP, issuer="CHU")
        ds.StudyDescription = description
        sent = self.archive.storescu(write_dicom(ds, self.tmp_path / f"{ds.SOPInstanceUID}.dcm"))
        assert sent.returncode == 0, sent.stderr
        with self.db.transaction(write=False) as session:
            found = session.scalars(select(Study).where(Study.study_uid == ds.StudyInstanceUID))
            assert found.one().patient_status == "resolved"
        return str(ds.StudyInstanceUID)

    def portal(self, username: str) -> TestClient:
        browser = TestClient(self.app)
        log_in(browser, username)
        return browser


def make_radiology(
    app: FastAPI, db: Database, factory: Factory, archive: Archived, tmp_path: Path
) -> Radiology:
    config = app.state.identity_config
    with db.transaction() as session:
        domains.add(session, config, CHU_OID, namespace="CHU", owner=CHU)
        rri = identity_service.feed(
            session, app.state.matcher, person(CHU_OID, IPP), actor="test", config=config
        ).rri
        reading.add_group(session, NIGHT, list(RADIOLOGISTS.values()))
        reading.add_group(session, SCREENING, list(RADIOLOGISTS.values()))
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, site=CHU),
        *(line(n, site=PRACTICE) for n in (3, 4, 5)),
    )
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    structures.write_bytes(
        ("finess;etalab;95;2024-01-18\n" + structure(CHU) + structure(PRACTICE)).encode("cp1252")
    )
    assert run(db, people).error is None and run(db, structures).error is None
    factory.user("dr.chu", rpps=DOCTOR)
    for username, number in RADIOLOGISTS.items():
        factory.user(username, rpps=number)
    archive.register("MODALITY")
    return Radiology(app, db, archive, rri, tmp_path)
