"""The shared agenda (issue 15): a care circle's appointments on /fhir/Appointment, for its
current members only, with versions (If-Match), sane states, searches by patient, by
participant and by date; a professional's Schedule and free Slots, booked once only; the
coordination file's "Rendez-vous" section and its form. Driven over HTTP as a professional's
browser and a facility's software do."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from sqlalchemy import select

from enrs.accounts import service as accounts_service
from enrs.directory.identifiers import FINESS_SYSTEM, RPPS_SYSTEM
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.coordination.agenda_world import appointment, at, post, put, titles
from tests.coordination.circles import make_circle, operation
from tests.documents.world import CLINIC, DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, FHIR_JSON, Region

FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
Circle = tuple[str, TestClient, TestClient]
BOTH = (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE)


def _member_id(circle_json: dict[str, Any], rpps: str) -> str:
    return str(
        next(
            p["id"]
            for p in circle_json["participant"]
            if p["member"].get("identifier", {}).get("value") == f"8{rpps}"
            and p["extension"][0]["valueCode"] != "removed"
        )
    )


def test_members_make_read_and_find_appointments(
    region: Region, circle: Circle, db: Database
) -> None:
    team, chu, other = circle
    made = post(chu, "Appointment", appointment(region, team, "Bilan", at(2), with_rpps=BOTH))
    assert made.status_code == 201, made.text
    found = made.json()
    assert made.headers["ETag"] == 'W/"1"'
    assert made.headers["Location"].endswith(f"/Appointment/{found['id']}")
    assert found["status"] == "booked" and found["start"].endswith("Z")
    actors = [p["actor"] for p in found["participant"]]
    assert actors[0] == {"reference": f"Patient/{region.rri}"}
    assert {a["identifier"]["value"] for a in actors[1:]} == {f"8{r}" for r in BOTH}
    assert found["extension"][0]["valueReference"]["reference"] == f"CareTeam/{team}"
    assert found["meta"]["profile"] == [f"{FR_CORE}fr-core-appointment"]
    FhirAppointment.model_validate(found)

    later = appointment(region, team, "Consultation", at(40), with_rpps=(DOCTOR_AT_CHU,))
    assert post(other, "Appointment", later).status_code == 201
    read = other.get(f"/fhir/Appointment/{found['id']}")
    assert read.status_code == 200 and read.json()["description"] == "Bilan"

    # By patient, by participant (actor=me), by date (on start), by status.
    by_patient = chu.get(f"/fhir/Appointment?patient=Patient/{region.rri}")
    assert titles(by_patient) == ["Bilan", "Consultation"]
    assert titles(other.get("/fhir/Appointment?actor=me")) == ["Bilan"]
    assert titles(chu.get("/fhir/Appointment?actor=me")) == ["Bilan", "Consultation"]
    window = {"actor": "me", "date": [f"ge{at(1).date()}", f"lt{at(10).date()}"]}
    assert titles(chu.get("/fhir/Appointment", params=window)) == ["Bilan"]
    after = {"actor": "me", "date": f"gt{at(2).date()}"}
    assert titles(chu.get("/fhir/Appointment", params=after)) == ["Consultation"]
    proposed = {"actor": "me", "status": "proposed"}
    assert chu.get("/fhir/Appointment", params=proposed).json()["total"] == 0
    assert chu.get("/fhir/Appointment?actor=me&date=tomorrow").status_code == 400
    assert chu.get("/fhir/Appointment?actor=me&date=sa2030-01-01").status_code == 400
    assert chu.get("/fhir/Appointment?actor=me&status=done").status_code == 400
    assert chu.get("/fhir/Appointment").status_code == 400
    assert chu.get("/fhir/Appointment?actor=someone").status_code == 400
    assert chu.get("/fhir/Appointment?owner=me").status_code == 400

    with db.transaction() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.entity_ref == f"Appointment/{found['id']}")
        ).all()
    assert len(records) == 2  # created, read
    assert {r.patient_ref for r in records} == {f"Patient/{region.rri}"}
    assert {r.action for r in records} == {"C", "R"}

    metadata = chu.get("/fhir/metadata").json()
    kinds = {r["type"]: r for r in metadata["rest"][0]["resource"]}
    assert {i["code"] for i in kinds["Appointment"]["interaction"]} == {
        "create",
        "read",
        "update",
        "search-type",
    }
    assert {"patient", "actor", "date"} <= {p["name"] for p in kinds["Appointment"]["searchParam"]}


def test_only_current_members_see_and_change_appointments(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    body = appointment(region, team, "Bilan", at(3), with_rpps=(DOCTOR_AT_CHU,))
    found = post(chu_doctor, "Appointment", body).json()
    # Not in the circle: nothing made, read, changed or found.
    assert post(other_doctor, "Appointment", body).status_code == 403
    assert other_doctor.get(f"/fhir/Appointment/{found['id']}").status_code == 403
    assert put(other_doctor, "Appointment", {**found, "status": "cancelled"}).status_code == 403
    assert other_doctor.get(f"/fhir/Appointment?patient=Patient/{region.rri}").json()["total"] == 0
    # A participant who is not a member of the circle is refused.
    stranger = appointment(region, team, "x", at(3), with_rpps=(DOCTOR_ELSEWHERE,))
    assert post(chu_doctor, "Appointment", stranger).status_code == 422

    operation(
        chu_doctor,
        team,
        "invite",
        member={"identifier": {"system": RPPS_SYSTEM, "value": f"8{DOCTOR_ELSEWHERE}"}},
        role="IDE",
    )
    assert other_doctor.get(f"/fhir/Appointment/{found['id']}").status_code == 403  # invited
    accepted = operation(other_doctor, team, "accept").json()
    assert other_doctor.get(f"/fhir/Appointment/{found['id']}").status_code == 200
    theirs = post(chu_doctor, "Appointment", {**stranger, "description": "Pansement"})
    assert theirs.status_code == 201, theirs.text
    assert titles(other_doctor.get("/fhir/Appointment?actor=me")) == ["Pansement"]

    # Removed: out at once.
    removed = operation(
        chu_doctor, team, "remove", participant=_member_id(accepted, DOCTOR_ELSEWHERE)
    )
    assert removed.status_code == 200, removed.text
    assert other_doctor.get(f"/fhir/Appointment/{found['id']}").status_code == 403
    cancelled = {**theirs.json(), "status": "cancelled"}
    assert put(other_doctor, "Appointment", cancelled).status_code == 403
    assert other_doctor.get("/fhir/Appointment?actor=me").json()["total"] == 0
    # The others still change it; its participant kept although out of the circle now.
    assert put(chu_doctor, "Appointment", cancelled).status_code == 200
    assert chu_doctor.get("/fhir/Appointment/0123456789abcdef0123456789abcdef").status_code == 404
    # A new appointment cannot name them any more.
    assert post(chu_doctor, "Appointment", stranger).status_code == 422


def test_a_stale_update_is_refused_and_states_move_sanely(region: Region, circle: Circle) -> None:
    team, chu, other = circle
    body = appointment(region, team, "Visite", at(5), with_rpps=BOTH, status="proposed")
    found = post(chu, "Appointment", body).json()

    booked = put(other, "Appointment", {**found, "status": "booked"}, 'W/"1"')
    assert booked.status_code == 200, booked.text
    assert booked.headers["ETag"] == 'W/"2"' and booked.json()["status"] == "booked"
    racing = put(chu, "Appointment", {**found, "description": "Autre"}, 'W/"1"')
    assert racing.status_code == 412
    assert racing.json()["resourceType"] == "OperationOutcome"
    now = chu.get(f"/fhir/Appointment/{found['id']}")
    assert now.headers["ETag"] == 'W/"2"' and now.json()["description"] == "Visite"
    same = put(chu, "Appointment", now.json(), 'W/"2"')  # no change: no new version
    assert same.status_code == 200 and same.headers["ETag"] == 'W/"2"'

    # Moved and answered, then fulfilled: final.
    moved = {
        **now.json(),
        "start": at(6).isoformat(),
        "end": (at(6) + timedelta(hours=1)).isoformat(),
    }
    moved["participant"][1]["status"] = "accepted"
    changed = put(chu, "Appointment", moved, 'W/"2"')
    assert changed.status_code == 200, changed.text
    assert changed.json()["participant"][1]["status"] == "accepted"
    assert changed.json()["start"] == at(6).isoformat().replace("+00:00", "Z")
    assert put(chu, "Appointment", {**changed.json(), "status": "proposed"}).status_code == 409
    done = put(other, "Appointment", {**changed.json(), "status": "fulfilled"}, 'W/"3"')
    assert done.status_code == 200, done.text
    assert put(other, "Appointment", {**done.json(), "status": "cancelled"}).status_code == 409
    assert put(other, "Appointment", {**done.json(), "description": "x"}).status_code == 409
    assert put(other, "Appointment", done.json()).status_code == 200  # the same: no change
    assert put(chu, "Appointment", {**found, "status": "booked"}, "4").status_code == 400
    # A new appointment is proposed or booked.
    assert post(chu, "Appointment", {**body, "status": "fulfilled"}).status_code == 422


def test_bad_bodies_are_refused_and_change_nothing(region: Region, circle: Circle) -> None:
    team, chu, _other = circle
    good = appointment(region, team, "Bilan", at(2), with_rpps=(DOCTOR_AT_CHU,))
    no_patient = {**good, "participant": good["participant"][1:]}
    two_slots = {**good, "slot": [{"reference": "Slot/a"}, {"reference": "Slot/b"}]}
    twice = {**good, "participant": [*good["participant"], good["participant"][1]]}
    bad_answer = {
        **good,
        "participant": [good["participant"][0], {**good["participant"][1], "status": "maybe"}],
    }
    wrong = [
        ({**good, "description": ""}, 422),
        ({k: v for k, v in good.items() if k != "description"}, 422),
        ({**good, "end": good["start"]}, 422),
        ({**good, "start": "2030-01-01T09:00:00"}, 422),  # no time zone
        ({**good, "start": "2030-01-01"}, 422),
        ({**good, "start": "demain"}, 422),
        (no_patient, 422),
        ({**good, "participant": good["participant"][:1]}, 422),  # the patient alone
        (twice, 422),
        (bad_answer, 422),
        (two_slots, 422),
        ({**good, "status": "arrived"}, 422),
        ({**good, "extension": []}, 422),
        ({**good, "participant": "x"}, 422),
        ({**good, "resourceType": "Task"}, 422),
        ({**good, "slot": [{"reference": "Slot/0123"}]}, 404),
    ]
    for body, status in wrong:
        answer = post(chu, "Appointment", body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["resourceType"] == "OperationOutcome"
    another = {
        **good,
        "participant": [{"actor": {"reference": "Patient/NOPE"}}, *good["participant"][1:]],
    }
    assert post(chu, "Appointment", another).status_code == 422  # no such patient
    not_json = chu.post("/fhir/Appointment", content=b"{", headers={"Content-Type": FHIR_JSON})
    assert not_json.status_code == 400
    assert chu.get("/fhir/Appointment?actor=me").json()["total"] == 0

    found = post(chu, "Appointment", good).json()
    mismatch = chu.put(
        f"/fhir/Appointment/{found['id']}",
        json={**found, "id": "other"},
        headers={"Content-Type": FHIR_JSON},
    )
    assert mismatch.status_code == 400
    assert (
        put(
            chu,
            "Appointment",
            {
                **found,
                "extension": [
                    {
                        "url": found["extension"][0]["url"],
                        "valueReference": {"reference": "CareTeam/other"},
                    }
                ],
            },
        ).status_code
        == 422
    )


def _schedule(client: TestClient) -> dict[str, Any]:
    made = post(client, "Schedule", {"resourceType": "Schedule", "comment": "Tournée"})
    assert made.status_code == 201, made.text
    return dict(made.json())


def _slot(schedule: str, days: float, minutes: int = 60) -> dict[str, Any]:
    start = at(days, hour=14)
    return {
        "resourceType": "Slot",
        "schedule": {"reference": f"Schedule/{schedule}"},
        "status": "free",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
    }


def test_free_slots_are_booked_once(region: Region, circle: Circle) -> None:
    team, chu, other = circle
    schedule = _schedule(other)
    assert schedule["actor"][0]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    assert schedule["meta"]["profile"] == [f"{FR_CORE}fr-core-schedule"]
    assert post(other, "Schedule", {"resourceType": "Schedule"}).status_code == 409
    ident = f"{RPPS_SYSTEM}|8{DOCTOR_ELSEWHERE}"
    listed = chu.get("/fhir/Schedule", params={"actor:identifier": ident}).json()
    assert [e["resource"]["id"] for e in listed["entry"]] == [schedule["id"]]
    assert chu.get("/fhir/Schedule?actor=me").json()["total"] == 0

    assert post(chu, "Slot", _slot(schedule["id"], 3)).status_code == 403  # not theirs
    slot = post(other, "Slot", _slot(schedule["id"], 3))
    assert slot.status_code == 201, slot.text
    assert post(other, "Slot", _slot(schedule["id"], 3, 30)).status_code == 409  # overlaps
    assert post(other, "Slot", {**_slot(schedule["id"], 4), "status": "busy"}).status_code == 422
    free = {"schedule": f"Schedule/{schedule['id']}", "status": "free"}
    assert chu.get("/fhir/Slot", params=free).json()["total"] == 1

    start = at(3, hour=14)
    on_slot = appointment(
        region,
        team,
        "Visite",
        start,
        with_rpps=(DOCTOR_ELSEWHERE,),
        slot=[{"reference": f"Slot/{slot.json()['id']}"}],
    )
    without_them = {
        **on_slot,
        "participant": [
            on_slot["participant"][0],
            {"actor": {"identifier": {"system": RPPS_SYSTEM, "value": f"8{DOCTOR_AT_CHU}"}}},
        ],
    }
    assert post(chu, "Appointment", without_them).status_code == 422
    outside = appointment(
        region, team, "x", start, minutes=90, with_rpps=(DOCTOR_ELSEWHERE,), slot=on_slot["slot"]
    )
    assert post(chu, "Appointment", outside).status_code == 422
    booked = post(chu, "Appointment", on_slot)
    assert booked.status_code == 201, booked.text
    assert booked.json()["slot"] == on_slot["slot"]
    taken = chu.get(f"/fhir/Slot/{slot.json()['id']}").json()
    assert taken["status"] == "busy" and taken["meta"]["versionId"] == "2"
    assert taken["meta"]["profile"] == [f"{FR_CORE}fr-core-slot"]
    twice = post(other, "Appointment", {**on_slot, "description": "Autre"})
    assert twice.status_code == 409
    assert chu.get("/fhir/Slot", params=free).json()["total"] == 0
    # The owner cannot free a slot an appointment holds; cancelling the appointment does.
    assert put(other, "Slot", {**taken, "status": "free"}).status_code == 409
    cancel = put(chu, "Appointment", {**booked.json(), "status": "cancelled"})
    assert cancel.status_code == 200, cancel.text
    assert chu.get(f"/fhir/Slot/{slot.json()['id']}").json()["status"] == "free"
    again = post(other, "Appointment", {**on_slot, "status": "proposed"})
    assert again.status_code == 201, again.text
    assert chu.get(f"/fhir/Slot/{slot.json()['id']}").json()["status"] == "busy-tentative"
    confirmed = put(chu, "Appointment", {**again.json(), "status": "booked"})
    assert confirmed.status_code == 200, confirmed.text
    assert chu.get(f"/fhir/Slot/{slot.json()['id']}").json()["status"] == "busy"


def test_two_bookings_racing_for_one_slot_one_wins(region: Region, circle: Circle) -> None:
    team, chu, other = circle
    schedule = _schedule(other)
    slot = post(other, "Slot", _slot(schedule["id"], 2)).json()
    body = appointment(
        region,
        team,
        "Visite",
        at(2, hour=14),
        with_rpps=(DOCTOR_ELSEWHERE,),
        slot=[{"reference": f"Slot/{slot['id']}"}],
    )
    answers: list[int] = []
    barrier = threading.Barrier(2)

    def book(client: TestClient) -> None:
        barrier.wait()
        answers.append(post(client, "Appointment", body).status_code)

    threads = [threading.Thread(target=book, args=(c,)) for c in (chu, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(answers) == [201, 409]
    assert chu.get(f"/fhir/Appointment?patient=Patient/{region.rri}").json()["total"] == 1


def test_a_facilitys_software_in_the_circle_books_an_appointment(
    region: Region, circle: Circle, db: Database
) -> None:
    team, chu, other = circle
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name="DPI Clinique", scope="system/Appointment.crus", finess=CLINIC
        )
    token = region.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    ).json()["access_token"]
    software = {"Authorization": f"Bearer {token}"}
    body = appointment(region, team, "Sortie SSR", at(1), with_rpps=(DOCTOR_AT_CHU,))
    assert post(region.client, "Appointment", body, **software).status_code == 403  # not in

    clinic = {"identifier": {"system": FINESS_SYSTEM, "value": CLINIC}}
    assert operation(chu, team, "invite", member=clinic, role="SSR").is_success
    assert operation(other, team, "accept").is_success  # someone of the clinic accepts
    created = post(region.client, "Appointment", body, **software)
    assert created.status_code == 201, created.text
    assert region.client.get("/fhir/Schedule?actor=me", headers=software).status_code == 403


def test_the_coordination_file_lists_and_proposes_appointments(
    region: Region, circle: Circle
) -> None:
    team, chu, other = circle
    assert post(chu, "Appointment", appointment(region, team, "Bilan", at(2), with_rpps=BOTH))
    page = other.get(f"/coordination/{team}")
    assert page.status_code == 200
    section = page.text.split('id="rendez-vous"')[1].split("</section>")[0]
    assert "Bilan" in section and "confirmé" in section
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    member = page.text.split('<select id="avec" name="avec" required>')[1]
    option = member.split('<option value="')[1].split('"')[0]
    day = at(9).date().isoformat()
    form = {"motif": "Kiné <b>", "jour": day, "heure": "10:30", "duree": "45", "avec": option}
    refused = other.post(f"/coordination/{team}/rendez-vous", data={**form, "csrf": "x"})
    assert refused.status_code == 403
    sent = other.post(
        f"/coordination/{team}/rendez-vous", data={**form, "csrf": csrf}, follow_redirects=False
    )
    assert sent.status_code == 303, sent.text
    found = other.get("/fhir/Appointment?actor=me").json()["entry"]
    kine = next(e["resource"] for e in found if e["resource"]["description"] == "Kiné <b>")
    assert kine["status"] == "proposed"
    assert kine["start"][:10] == day
    page = chu.get(f"/coordination/{team}").text
    assert "Kiné &lt;b&gt;" in page and "Kiné <b>" not in page
    bad = other.post(f"/coordination/{team}/rendez-vous", data={**form, "jour": "", "csrf": csrf})
    assert bad.status_code == 400
