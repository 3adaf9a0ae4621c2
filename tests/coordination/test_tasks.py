"""Coordination tasks (issue 15): asked by a member of the care circle, assigned to a person, a
structure or a role of the circle, with due dates and states; a professional's tasks; overdue
ones flagged; a racing update refused (If-Match); on the same /fhir/Task URLs as the
identitovigilance cell's queue. Driven over HTTP as a professional's browser and a facility's
software do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.accounts import service as accounts_service
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import (
    CLINIC,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    FHIR_JSON,
    Region,
)
from tests.identity.test_workbench import _doubtful_pair
from tests.support.portal import log_in

CARE_TEAM = "https://enrs.fr/fhir/StructureDefinition/task-care-team"


def _doctor(rpps: str) -> dict[str, Any]:
    return {"identifier": {"system": RPPS_SYSTEM, "value": f"8{rpps}"}}


CLINIC_REF = {"identifier": {"system": FINESS_SYSTEM, "value": CLINIC}}


def _circle(region: Region, browser: TestClient) -> str:
    body = {
        "resourceType": "CareTeam",
        "name": "Retour à domicile",
        "subject": {"reference": f"Patient/{region.rri}"},
    }
    made = browser.post("/fhir/CareTeam", json=body, headers={"Content-Type": FHIR_JSON})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _operation(browser: TestClient, team: str, name: str, **values: Any) -> Any:
    parameter = [
        {"name": k, "valueReference" if isinstance(v, dict) else "valueString": v}
        for k, v in values.items()
    ]
    answer = browser.post(
        f"/fhir/CareTeam/{team}/${name}",
        json={"resourceType": "Parameters", "parameter": parameter},
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _join(inviter: TestClient, invited: TestClient, team: str, member: Any, role: str) -> None:
    _operation(inviter, team, "invite", member=member, role=role)
    _operation(invited, team, "accept")


def _task(region: Region, team: str, title: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "extension": [{"url": CARE_TEAM, "valueReference": {"reference": f"CareTeam/{team}"}}],
        "status": "requested",
        "intent": "order",
        "code": {"text": title},
        "for": {"reference": f"Patient/{region.rri}"},
        **elements,
    }


def _post(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/fhir/Task", json=body, headers={"Content-Type": FHIR_JSON, **(headers or {})}
    )


def _put(client: TestClient, resource: dict[str, Any], if_match: str | None = None) -> Any:
    headers = {"Content-Type": FHIR_JSON, **({"If-Match": if_match} if if_match else {})}
    return client.put(f"/fhir/Task/{resource['id']}", json=resource, headers=headers)


def _titles(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return sorted(e["resource"]["code"]["text"] for e in answer.json()["entry"])


def _due(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def test_tasks_go_to_a_person_a_structure_or_a_role_and_each_sees_theirs(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient, db: Database
) -> None:
    team = _circle(region, chu_doctor)
    _join(chu_doctor, other_doctor, team, _doctor(DOCTOR_ELSEWHERE), "IDE")
    _join(chu_doctor, other_doctor, team, CLINIC_REF, "SSR")  # accepted for the structure

    person = _post(chu_doctor, _task(region, team, "Pansement", owner=_doctor(DOCTOR_ELSEWHERE)))
    assert person.status_code == 201, person.text
    made = person.json()
    assert person.headers["ETag"] == 'W/"1"'
    assert person.headers["Location"].endswith(f"/Task/{made['id']}")
    assert not made["id"].isdigit() and made["status"] == "requested"
    assert made["owner"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    assert made["requester"]["display"] == "Dr.Chu"
    role = _post(chu_doctor, _task(region, team, "Prise de sang", performerType=[{"text": "IDE"}]))
    assert role.status_code == 201, role.text
    assert "owner" not in role.json() and role.json()["performerType"] == [{"text": "IDE"}]
    structure = _post(chu_doctor, _task(region, team, "Bilan SSR", owner=CLINIC_REF))
    assert structure.status_code == 201, structure.text
    mine = _post(other_doctor, _task(region, team, "Ordonnance", owner=_doctor(DOCTOR_AT_CHU)))
    assert mine.status_code == 201, mine.text

    theirs = ["Bilan SSR", "Pansement", "Prise de sang"]
    assert _titles(other_doctor.get("/fhir/Task?owner=me")) == theirs
    assert _titles(chu_doctor.get("/fhir/Task?owner=me")) == ["Ordonnance"]
    everything = chu_doctor.get(f"/fhir/Task?patient=Patient/{region.rri}")
    assert _titles(everything) == sorted([*theirs, "Ordonnance"])
    requested = other_doctor.get("/fhir/Task", params={"owner": "me", "status": "completed"})
    assert requested.json()["total"] == 0

    # The owner is in the circle: a role nobody holds, a professional who is not a member.
    nobody = _post(chu_doctor, _task(region, team, "Kiné", performerType=[{"text": "Kiné"}]))
    assert nobody.status_code == 422
    stranger = _task(region, team, "x", owner=_doctor("10000099999"))
    assert _post(chu_doctor, stranger).status_code == 422
    assert _post(chu_doctor, _task(region, team, "x")).status_code == 422  # no owner

    with db.transaction() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.entity_ref == f"Task/{made['id']}")
        ).all()
    assert len(records) == 1 and records[0].patient_ref == f"Patient/{region.rri}"


def test_overdue_tasks_are_flagged_and_found(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = _circle(region, chu_doctor)
    _join(chu_doctor, other_doctor, team, _doctor(DOCTOR_ELSEWHERE), "IDE")
    ide = {"performerType": [{"text": "IDE"}]}
    late = _task(region, team, "Late", restriction={"period": {"end": _due(-1)}}, **ide)
    soon = _task(region, team, "Soon", restriction={"period": {"end": _due(1)}}, **ide)
    done = _task(region, team, "Done", restriction={"period": {"end": _due(-2)}}, **ide)
    for body in (late, soon, done):
        assert _post(chu_doctor, body).status_code == 201
    finished = next(
        e["resource"]
        for e in other_doctor.get("/fhir/Task?owner=me").json()["entry"]
        if e["resource"]["code"]["text"] == "Done"
    )
    assert finished["businessStatus"]["text"] == "en retard"
    assert _put(other_doctor, {**finished, "status": "completed"}).status_code == 200

    found = other_doctor.get("/fhir/Task?owner=me&overdue=true")
    assert _titles(found) == ["Late"]
    assert found.json()["entry"][0]["resource"]["businessStatus"]["coding"][0]["code"] == "overdue"
    on_time = other_doctor.get("/fhir/Task?owner=me&overdue=false").json()["entry"]
    assert all("businessStatus" not in e["resource"] for e in on_time) and len(on_time) == 2
    assert other_doctor.get("/fhir/Task?owner=me&overdue=maybe").status_code == 400

    # The coordination file lists the open tasks, the overdue one flagged, not the done one.
    page = other_doctor.get(f"/coordination/{team}")
    assert page.status_code == 200
    listed = page.text.split('<ul id="taches">')[1].split("</ul>")[0]
    items = listed.split("<li")[1:]
    assert [i.split(">", 1)[1].split(" —")[0].strip() for i in items] == ["Late", "Soon"]
    assert "en retard" in items[0] and "en retard" not in items[1]


def test_a_stale_update_is_refused_and_changes_nothing(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = _circle(region, chu_doctor)
    _join(chu_doctor, other_doctor, team, _doctor(DOCTOR_ELSEWHERE), "IDE")
    read = _post(chu_doctor, _task(region, team, "Pansement", performerType=[{"text": "IDE"}]))
    task = read.json()

    accepted = _put(other_doctor, {**task, "status": "accepted"}, 'W/"1"')
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["ETag"] == 'W/"2"' and accepted.json()["status"] == "accepted"
    racing = _put(chu_doctor, {**task, "status": "cancelled"}, 'W/"1"')  # read before
    assert racing.status_code == 412
    assert racing.json()["resourceType"] == "OperationOutcome"
    now = chu_doctor.get(f"/fhir/Task/{task['id']}")
    assert now.headers["ETag"] == 'W/"2"' and now.json()["status"] == "accepted"

    # Reassigned to a person with a due date, then done: completed is final.
    moved = {**now.json(), "owner": _doctor(DOCTOR_ELSEWHERE), "status": "in-progress"}
    moved.pop("performerType")
    moved["restriction"] = {"period": {"end": "2030-01-31"}}
    changed = _put(chu_doctor, moved, 'W/"2"')
    assert changed.status_code == 200, changed.text
    assert changed.json()["owner"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    assert changed.json()["restriction"]["period"]["end"].startswith("2030-02-01T00:00:00")
    done = _put(other_doctor, {**changed.json(), "status": "completed"}, 'W/"3"')
    assert done.status_code == 200, done.text
    reopened = _put(other_doctor, {**done.json(), "status": "in-progress"}, 'W/"4"')
    assert reopened.status_code == 409
    assert _put(chu_doctor, {**task, "status": "accepted"}, "4").status_code == 400


def test_only_current_members_see_and_change_tasks(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = _circle(region, chu_doctor)
    task = _post(chu_doctor, _task(region, team, "Bilan", owner=_doctor(DOCTOR_AT_CHU))).json()
    # Not in the circle: no task made, read, changed or found.
    refused = _post(other_doctor, _task(region, team, "x", owner=_doctor(DOCTOR_AT_CHU)))
    assert refused.status_code == 403
    assert other_doctor.get(f"/fhir/Task/{task['id']}").status_code == 403
    assert _put(other_doctor, {**task, "status": "cancelled"}).status_code == 403
    assert other_doctor.get(f"/fhir/Task?patient=Patient/{region.rri}").json()["total"] == 0

    _operation(chu_doctor, team, "invite", member=_doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert other_doctor.get(f"/fhir/Task/{task['id']}").status_code == 403  # invited only
    accepted = _operation(other_doctor, team, "accept")
    assert other_doctor.get(f"/fhir/Task/{task['id']}").status_code == 200
    theirs = _post(chu_doctor, _task(region, team, "IDE", performerType=[{"text": "IDE"}]))
    assert _titles(other_doctor.get("/fhir/Task?owner=me")) == ["IDE"]

    # Removed: out at once, their tasks too.
    member = next(
        p["id"]
        for p in accepted["participant"]
        if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    )
    _operation(chu_doctor, team, "remove", participant=member)
    assert other_doctor.get(f"/fhir/Task/{theirs.json()['id']}").status_code == 403
    assert _put(other_doctor, {**theirs.json(), "status": "accepted"}).status_code == 403
    assert other_doctor.get("/fhir/Task?owner=me").json()["total"] == 0
    assert chu_doctor.get(f"/fhir/Task/{theirs.json()['id']}").status_code == 200
    # Its owner kept although nobody holds the role now: the others still close it.
    assert _put(chu_doctor, {**theirs.json(), "status": "cancelled"}).status_code == 200
    assert chu_doctor.get("/fhir/Task/0123456789abcdef0123456789abcdef").status_code == 404


def test_a_facilitys_software_in_the_circle_creates_a_task(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient, db: Database
) -> None:
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name="DPI Clinique", scope="system/Task.cru", finess=CLINIC
        )
    token = region.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    ).json()["access_token"]
    software = {"Authorization": f"Bearer {token}"}
    team = _circle(region, chu_doctor)
    body = _task(region, team, "Sortie SSR", owner=_doctor(DOCTOR_AT_CHU), priority="urgent")
    assert _post(region.client, body, software).status_code == 403  # the clinic is not in

    _join(chu_doctor, other_doctor, team, CLINIC_REF, "SSR")
    created = _post(region.client, body, software)
    assert created.status_code == 201, created.text
    assert created.json()["requester"]["display"] == "DPI Clinique"
    assert created.json()["priority"] == "urgent"
    read = region.client.get(f"/fhir/Task/{created.json()['id']}", headers=software)
    assert read.status_code == 200 and read.headers["ETag"] == 'W/"1"'
    assert _titles(chu_doctor.get("/fhir/Task?owner=me")) == ["Sortie SSR"]
    # Its Task scope does not open the identitovigilance cell's queue to the clinic.
    assert region.client.get("/fhir/Task", headers=software).status_code == 403
    assert region.client.get("/fhir/Task/1", headers=software).status_code == 403


def test_the_cells_queue_is_unaffected(client: TestClient, factory: Factory, db: Database) -> None:
    task_id = _doubtful_pair(db)
    factory.user("cell", roles=("identitovigilance",))
    factory.user("pro", roles=("professional",))
    cell, pro = TestClient(client.app), TestClient(client.app)
    log_in(cell, "cell")
    log_in(pro, "pro")

    queue = cell.get("/fhir/Task")
    assert queue.status_code == 200, queue.text
    assert [e["resource"]["id"] for e in queue.json()["entry"]] == [str(task_id)]
    assert cell.get(f"/fhir/Task/{task_id}").status_code == 200
    # A professional's Task scope is not the cell's queue; the cell's role not the circles'.
    assert pro.get("/fhir/Task").status_code == 403
    assert pro.get(f"/fhir/Task/{task_id}").status_code == 403
    assert pro.get("/fhir/Task?owner=me").json()["total"] == 0
    assert cell.get("/fhir/Task?owner=me").status_code == 403
    assert cell.get("/fhir/Task/abcdef").status_code == 403

    metadata = client.get("/fhir/metadata").json()
    [task] = [r for r in metadata["rest"][0]["resource"] if r["type"] == "Task"]
    assert {i["code"] for i in task["interaction"]} == {"create", "read", "update", "search-type"}
    assert {"owner", "patient", "overdue", "focus", "code"} <= {
        p["name"] for p in task["searchParam"]
    }
    assert "digits only" in task["documentation"]
