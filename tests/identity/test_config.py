"""The identity server's configuration is passed down, never read at import: two applications
built in one process answer each with its own OID arc, and importing the code reads no
setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.conftest import Factory
from tests.identity.feeders import register_domains
from tests.identity.test_fhir import CHU, INS, auth, feed, fr_patient
from tests.identity.test_hl7 import ANS_EXAMPLE, CONFIG, code, feed_server

from enrs.accounts import service as accounts_service
from enrs.app import create_app
from enrs.identity.auth import finess_authority
from enrs.identity.config import IdentityConfig
from enrs.identity.models import SourceIdentity
from enrs.identity.traits import INS_DEMO_NIR_OID, INS_OIDS, INS_TEST_NIR_OID
from enrs.kit.db import Database
from enrs.settings import Settings

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, enrs
names = [m.name for m in pkgutil.walk_packages(enrs.__path__, "enrs.")]
for name in names:
    if name != "enrs.__main__":  # runs the command line
        importlib.import_module(name)
print(len(names))
"""


def test_importing_every_module_reads_no_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env["ENRS_OID_ROOT"] = "not-an-oid"  # Settings() would refuse it
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        cwd=tmp_path,  # no .env there
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 50


def _token(client: TestClient, db: Database) -> str:
    register_domains(db, [CHU])
    with db.transaction() as session:
        created, secret = accounts_service.create_client(
            session, name="DPI", scope="system/Patient.cruds", authorities=[CHU]
        )
    assert secret is not None
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(created.client_id, secret)
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _rri_systems(resource: dict[str, Any]) -> set[str]:
    return {i["system"] for i in resource["identifier"] if i["type"]["coding"][0]["code"] == "RRI"}


def test_two_apps_in_one_process_answer_with_their_own_oid_root(
    settings: Settings, factory: Factory, client: TestClient
) -> None:
    # The fixture's app (the placeholder root) and a second one on the same database.
    other_app = create_app(settings.model_copy(update={"oid_root": "1.2.250.1.71.9"}))
    first = feed(client, _token(client, factory.db), fr_patient("1", CHU))
    assert first.status_code == 201, first.text
    assert _rri_systems(first.json()) == {f"urn:oid:{settings.oid_root}.1"}
    rri = first.json()["identifier"][-1]["value"]
    with TestClient(other_app) as other:
        token = _token(other, other_app.state.db)
        regional = other.get(f"/fhir/Patient/{rri}", headers=auth(token))
        assert regional.status_code == 200, regional.text
        assert _rri_systems(regional.json()) == {"urn:oid:1.2.250.1.71.9.1"}
        pix = other.get(
            f"/fhir/Patient/$ihe-pix?sourceIdentifier=urn:oid:{CHU}|1", headers=auth(token)
        )
        assert pix.status_code == 200, pix.text
        systems = {p["valueIdentifier"]["system"] for p in pix.json()["parameter"][:-1]}
        assert systems == {"urn:oid:1.2.250.1.71.9.1"}
    again = client.get(f"/fhir/Patient/{rri}", headers=auth(factory.token("system/Patient.rs")))
    assert _rri_systems(again.json()) == {f"urn:oid:{settings.oid_root}.1"}


# --- test and demo INS: development only ---------------------------------------------------


def _with_ins(oid: str) -> dict[str, Any]:
    body = fr_patient("1", CHU, status="VALI")
    body["identifier"].append({"use": "official", "system": f"urn:oid:{oid}", "value": INS})
    return body


def _identities(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(SourceIdentity)) or 0)


@pytest.mark.parametrize("oid", [INS_TEST_NIR_OID, INS_DEMO_NIR_OID])
def test_a_test_or_demo_ins_is_refused_outside_development(
    client: TestClient, factory: Factory, db: Database, oid: str
) -> None:
    response = feed(client, _token(client, db), _with_ins(oid))
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "development" in outcome["issue"][0]["diagnostics"]
    assert _identities(db) == 0


def test_a_test_ins_is_accepted_in_development(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"dev": True}))
    with TestClient(app) as dev:
        token = _token(dev, app.state.db)
        response = feed(dev, token, _with_ins(INS_TEST_NIR_OID))
        assert response.status_code == 201, response.text
        systems = {i["system"] for i in response.json()["identifier"]}
        assert f"urn:oid:{INS_TEST_NIR_OID}" in systems  # echoed to its feeder


def test_a_test_ins_over_hl7_is_refused_outside_development(database_url: str) -> None:
    # The ANS example's GAM, registered by its FINESS (MSH-4 CHU-X alone names no OID).
    sender = finess_authority("000897405", CONFIG)
    message = ANS_EXAMPLE.replace("|GAM|CHU-X|", "|GAM|CHU-X^000897405^M|", 1)
    with feed_server(database_url, {sender: (sender,)}) as production:
        answer = production.send(message)  # its INS has the test OID
        assert code(answer) == "AE"
        error = answer.segment("ERR")
        assert str(error[2]) == "PID^1^3" and "development" in str(error[8])
        assert production.count(SourceIdentity) == 0
    development = IdentityConfig(CONFIG.oid_root, INS_OIDS)
    with feed_server(database_url, {}, config=development) as dev:
        assert code(dev.send(message)) == "AA"
        assert dev.count(SourceIdentity) == 1
