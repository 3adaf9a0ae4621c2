"""A professional's agenda as an iCalendar feed at a secret URL (RFC 5545), read back with the
``icalendar`` parser as a calendar client does: events, updates (SEQUENCE), cancellations,
no patient identity, every fetch audited, the URL replaced or revoked (404), a member removed
from the circle losing its appointments; and the "Mon agenda" page that manages it."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from fastapi.testclient import TestClient
from icalendar import Calendar
from sqlalchemy import select

from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.coordination.agenda_world import appointment, at, post, put
from tests.coordination.circles import operation
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, Region

Circle = tuple[str, TestClient, TestClient]


def _feed(client: TestClient) -> str:
    made = client.post("/api/coordination/agenda-feed")
    assert made.status_code == 201, made.text
    url = str(made.json()["url"])
    assert "/agenda/" in url and url.endswith(".ics")
    return url[url.index("/agenda/") :]


def _events(anonymous: TestClient, path: str) -> dict[str, Any]:
    """The feed's VEVENTs by UID, parsed by the icalendar library."""
    answer = anonymous.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(answer.content)
    assert str(calendar["VERSION"]) == "2.0" and str(calendar["METHOD"]) == "PUBLISH"
    return {str(e["UID"]): e for e in calendar.walk("VEVENT")}


def _fetches(db: Database) -> list[AuditRecord]:
    with db.transaction() as session:
        stmt = select(AuditRecord).where(AuditRecord.query == "iCalendar feed")
        return list(session.scalars(stmt.order_by(AuditRecord.seq)))


def test_the_feed_carries_events_updates_and_cancellations(
    region: Region, circle: Circle, db: Database
) -> None:
    team, chu, other = circle
    anonymous = TestClient(region.app)
    both = (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE)
    visit = post(chu, "Appointment", appointment(region, team, "Visite", at(2), with_rpps=both))
    mine_only = appointment(region, team, "Staff", at(3), with_rpps=(DOCTOR_AT_CHU,))
    assert post(chu, "Appointment", mine_only).status_code == 201
    old = appointment(region, team, "Ancien", at(-60), with_rpps=both)
    assert post(chu, "Appointment", old).status_code == 201  # before the feed's window
    path = _feed(other)

    events = _events(anonymous, path)
    assert len(events) == 1  # theirs only, in the window
    [(uid, event)] = events.items()
    found = visit.json()
    assert uid.startswith(f"{found['id']}@")
    assert event["DTSTART"].dt == at(2) and event["DTSTART"].dt.tzinfo is not None
    assert event["DTSTART"].dt.utcoffset() == timedelta(0)
    assert event["DTEND"].dt == at(2) + timedelta(minutes=30)
    assert int(event["SEQUENCE"]) == 1 and str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Visite — Suivi greffe rénale"
    assert event["DTSTAMP"].dt.tzinfo is not None
    assert str(event["URL"]).endswith(f"/coordination/{team}")
    # Minimised: nothing that identifies the patient.
    body = anonymous.get(path).text
    assert region.rri not in body and "Patient" not in body

    # Moved: the same UID, a higher SEQUENCE; cancelled: STATUS:CANCELLED, still there.
    moved = {**found, "start": at(4).isoformat(), "end": (at(4) + timedelta(hours=1)).isoformat()}
    changed = put(chu, "Appointment", moved, 'W/"1"')
    assert changed.status_code == 200, changed.text
    event = _events(anonymous, path)[uid]
    assert int(event["SEQUENCE"]) == 2 and event["DTSTART"].dt == at(4).astimezone(UTC)
    assert put(other, "Appointment", {**changed.json(), "status": "cancelled"}).status_code == 200
    event = _events(anonymous, path)[uid]
    assert str(event["STATUS"]) == "CANCELLED" and int(event["SEQUENCE"]) == 3

    proposed = appointment(region, team, "Kiné", at(5), with_rpps=both, status="proposed")
    assert post(chu, "Appointment", proposed).status_code == 201
    statuses = {str(e["SUMMARY"]): str(e["STATUS"]) for e in _events(anonymous, path).values()}
    assert statuses == {
        "Visite — Suivi greffe rénale": "CANCELLED",
        "Kiné — Suivi greffe rénale": "TENTATIVE",
    }

    fetches = _fetches(db)
    assert len(fetches) == 5  # each fetch, with the professional and the patient
    assert {r.outcome for r in fetches} == {"0"}
    assert {r.agent_name for r in fetches} == {"Dr.Clinique"}
    assert {r.patient_ref for r in fetches} == {f"Patient/{region.rri}"}
    assert all(r.resource_type == "Appointment" for r in fetches)


def test_a_feed_url_is_replaced_revoked_and_closed_to_removed_members(
    region: Region, circle: Circle, db: Database
) -> None:
    team, chu, other = circle
    anonymous = TestClient(region.app)
    both = (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE)
    assert post(chu, "Appointment", appointment(region, team, "Visite", at(1), with_rpps=both))
    first = _feed(other)
    assert len(_events(anonymous, first)) == 1
    second = _feed(other)  # a new URL: the old one stops at once
    assert anonymous.get(first).status_code == 404
    assert len(_events(anonymous, second)) == 1
    assert anonymous.get("/agenda/not-a-token.ics").status_code == 404
    refused = [r for r in _fetches(db) if r.outcome != "0"]
    assert len(refused) == 2 and {r.agent_kind for r in refused} == {"anonymous"}
    assert all(r.patient_ref is None for r in refused)

    # Removed from the circle: its appointments leave the feed at once.
    circle_now = chu.get(f"/fhir/CareTeam/{team}").json()
    member = next(
        p["id"]
        for p in circle_now["participant"]
        if p["member"].get("identifier", {}).get("value") == f"8{DOCTOR_ELSEWHERE}"
    )
    assert operation(chu, team, "remove", participant=member).status_code == 200
    assert _events(anonymous, second) == {}

    revoked = other.delete("/api/coordination/agenda-feed")
    assert revoked.status_code == 204
    assert anonymous.get(second).status_code == 404
    assert other.delete("/api/coordination/agenda-feed").status_code == 404
    assert anonymous.post("/api/coordination/agenda-feed").status_code == 401


def test_my_agenda_page_lists_appointments_and_manages_the_feed(
    region: Region, circle: Circle
) -> None:
    team, chu, other = circle
    anonymous = TestClient(region.app)
    both = (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE)
    assert post(chu, "Appointment", appointment(region, team, "Visite", at(1), with_rpps=both))
    assert post(chu, "Appointment", appointment(region, team, "Passé", at(-1), with_rpps=both))
    page = other.get("/agenda")
    assert page.status_code == 200
    listed = page.text.split('id="rendez-vous"')[1].split("</ul>")[0]
    assert "Visite" in listed and "Passé" not in listed  # upcoming only
    assert f'href="/coordination/{team}#rendez-vous"' in listed
    assert "Aucun lien actif" in page.text
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]

    assert other.post("/agenda/lien", data={"csrf": "wrong"}).status_code == 403
    made = other.post("/agenda/lien", data={"csrf": csrf})
    assert made.status_code == 200
    url = made.text.split('id="lien-agenda">')[1].split("<")[0]
    path = url[url.index("/agenda/") :]
    assert len(_events(anonymous, path)) == 2  # the feed keeps the recent past too
    again = other.get("/agenda")
    assert "Un lien est actif depuis" in again.text and path not in again.text  # shown once
    revoked = other.post("/agenda/lien/revoquer", data={"csrf": csrf}, follow_redirects=False)
    assert revoked.status_code == 303
    assert anonymous.get(path).status_code == 404
    assert "Le lien d'abonnement est révoqué" in other.get("/agenda?message=revoque").text
