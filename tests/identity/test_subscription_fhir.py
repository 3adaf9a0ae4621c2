"""FHIR R4 Subscription (rest-hook) made by a facility's client itself: its hook gets the
PMIR patient-feed messages of the patients it holds, from the durable queue; the checks on
who may subscribe to what."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.identity.feeders import CHU, CLINIC, feeder_token, register_domains
from tests.identity.test_notify import dispatching, doubtful_pair, status
from tests.support.receivers import HttpReceiver
from tests.support.waiting import wait_until

from enrs.identity import workbench
from enrs.kit.db import Database
from enrs.kit.outbound.queue import statuses

FHIR = "application/fhir+json"


def subscription(criteria: str, endpoint: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "identités de la clinique",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR, **channel},
    }


def test_a_facility_subscribes_its_hook_and_gets_its_patients(
    client: TestClient, db: Database
) -> None:
    register_domains(db, [CHU, CLINIC])
    token = feeder_token(client, db, "system/Subscription.crds", [CLINIC])
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": FHIR}
    hook = HttpReceiver().start()
    url = f"http://127.0.0.1:{hook.port}/fhir-hook"
    try:
        task_id = doubtful_pair(db)  # the CHU's 10 and the clinic's 20, not linked yet
        made = client.post(
            "/fhir/Subscription",
            json=subscription(
                f"Patient?identifier=urn:oid:{CLINIC}|", url, header=["Authorization: Bearer k"]
            ),
            headers=bearer,
        )
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["status"] == "active" and sub["criteria"].endswith(f"{CLINIC}|")
        assert made.headers["Location"].endswith(f"/Subscription/{sub['id']}")
        with dispatching(db):
            with db.transaction() as session:
                workbench.decide(session, task_id, "MERGE", reason="même personne", actor="cell")
            assert wait_until(lambda: len(hook.posts()) == 1)
        [post] = hook.posts()
        assert post["path"] == "/fhir-hook" and post["headers"]["Authorization"] == "Bearer k"
        history = post["body"]["entry"][1]["resource"]["entry"]
        retired, survivor = (e["resource"] for e in history)
        assert retired["active"] is False and retired["link"][0]["type"] == "replaced-by"
        systems = {i["system"] for i in survivor["identifier"]}
        assert f"urn:oid:{CLINIC}" in systems and f"urn:oid:{CHU}" not in systems  # its own
        # Read, search, delete: its own only.
        read = client.get(f"/fhir/Subscription/{sub['id']}", headers=bearer)
        assert read.status_code == 200 and read.json()["status"] == "active"
        assert client.get("/fhir/Subscription", headers=bearer).json()["total"] == 1
        other = feeder_token(client, db, "system/Subscription.crds", [CHU])
        stranger = {"Authorization": f"Bearer {other}"}
        assert client.get(f"/fhir/Subscription/{sub['id']}", headers=stranger).status_code == 404
        assert client.get("/fhir/Subscription", headers=stranger).json()["total"] == 0
        gone = client.delete(f"/fhir/Subscription/{sub['id']}", headers=bearer)
        assert gone.status_code == 204
        off = client.get(f"/fhir/Subscription/{sub['id']}", headers=bearer).json()
        assert off["status"] == "off"
        assert not status(db, off_name(db)).active
    finally:
        hook.stop()


def off_name(db: Database) -> str:
    with db.transaction(write=False) as session:
        return next(s.name for s in statuses(session) if s.name.startswith("fhir:"))


def test_who_may_subscribe_to_what(client: TestClient, db: Database) -> None:
    register_domains(db, [CHU, CLINIC])
    clinic = {
        "Authorization": f"Bearer {feeder_token(client, db, 'system/Subscription.c', [CLINIC])}"
    }
    url = "http://127.0.0.1:9/hook"

    def post(body: dict[str, Any], who: dict[str, str] = clinic) -> tuple[int, str]:
        answer = client.post("/fhir/Subscription", json=body, headers={**who, "Content-Type": FHIR})
        return answer.status_code, answer.text

    assert post(subscription(f"Patient?identifier=urn:oid:{CHU}|", url))[0] == 403  # not its own
    code, text = post(subscription("Patient", url))
    assert code == 403 and "for a service" in text  # every patient: not for a facility
    assert post(subscription("Observation", url))[0] == 422
    bad_type = subscription(f"Patient?identifier=urn:oid:{CLINIC}|", url)
    bad_type["channel"]["type"] = "websocket"
    assert post(bad_type)[0] == 422
    no_url = subscription(f"Patient?identifier=urn:oid:{CLINIC}|", "ftp://x")
    assert post(no_url)[0] == 400
    service = {"Authorization": f"Bearer {feeder_token(client, db, 'system/Subscription.c', [])}"}
    assert post(subscription("Patient", url), service)[0] == 201  # a service: every patient
    reader = {"Authorization": f"Bearer {feeder_token(client, db, 'system/Patient.rs', [])}"}
    assert post(subscription("Patient", url), reader)[0] == 403  # no Subscription scope
    assert client.post("/fhir/Subscription", json=subscription("Patient", url)).status_code == 401
