"""Changing appointments from the portal (issue 15): on "Mon agenda" and in the coordination
file's "Rendez-vous", a member accepts a proposed appointment, moves it, cancels it, and once
it has begun says it was honoured or the patient absent — only the moves its state allows are
offered and accepted; a form made on a version the appointment has left is refused ("Le
rendez-vous a été modifié entre-temps") and changes nothing, even when two changes run at the
same time; non-members and forged forms are refused; every change is audited as the API's.
Driven as a browser posts the forms."""

from __future__ import annotations

import re
import threading
from datetime import date, datetime, timedelta
from html import unescape
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.coordination import agenda
from enrs.coordination.agenda_models import AppointmentParticipant, CoordinationAppointment
from enrs.documents.access import Reader
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.errors import PreconditionFailed
from tests.conftest import BACKEND, Factory
from tests.coordination.agenda_world import appointment, at, post
from tests.coordination.circles import make_circle
from tests.coordination.conftest import logged_in
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, Region
from tests.support.portal import csrf_of

Circle = tuple[str, TestClient, TestClient]
HTML = {"Accept": "text/html"}


def _zone(region: Region) -> ZoneInfo:
    return ZoneInfo(region.app.state.settings.timezone)


def _page(browser: TestClient, path: str) -> str:
    page = browser.get(path)
    assert page.status_code == 200, page.text
    return page.text


def _propose(browser: TestClient, team: str, title: str, day: date, hour: str) -> None:
    """Proposed from the file's form, with the other doctor of the circle (the IDE)."""
    html = _page(browser, f"/coordination/{team}")
    options = html.split('<select id="avec" name="avec" required>')[1].split("</select>")[0]
    ide = re.search(r'<option value="(\d+)">[^<]*— IDE</option>', options)
    assert ide is not None, options
    form = {"motif": title, "jour": day.isoformat(), "heure": hour, "duree": "45"}
    form |= {"avec": ide.group(1), "csrf": csrf_of(html)}
    sent = browser.post(f"/coordination/{team}/rendez-vous", data=form, follow_redirects=False)
    assert sent.status_code == 303, sent.text


def _row(db: Database, title: str) -> CoordinationAppointment:
    with db.transaction(write=False) as session:
        found = session.scalar(
            select(CoordinationAppointment).where(CoordinationAppointment.title == title)
        )
    assert found is not None
    return found


def _answers(db: Database, found: CoordinationAppointment) -> dict[str, str]:
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(AppointmentParticipant).where(AppointmentParticipant.appointment_id == found.id)
        )
        return {p.rpps or p.finess or "": p.status for p in rows}


def _item(html: str, found: CoordinationAppointment) -> str:
    """One appointment's item on a page."""
    return html.split(f'data-appointment="{found.resource_id}"')[1].split("</li>")[0]


def _offered(html: str, found: CoordinationAppointment) -> list[str]:
    """The labels of an appointment's buttons on a page, "Déplacer" for its move form."""
    item = _item(html, found)
    buttons = re.findall(r'name="action" value="[a-z]+"[^>]*>([^<]+)</button>', item)
    return buttons + (["Déplacer"] if 'name="action" value="move"' in item else [])


def _change(
    browser: TestClient,
    team: str,
    found: CoordinationAppointment,
    action: str,
    *,
    page: str = "/agenda",
    **extra: str,
) -> Any:
    """A change posted from ``page`` on the version ``found`` has."""
    form = {"action": action, "version": str(found.version), "csrf": csrf_of(_page(browser, page))}
    form.update(extra)
    return browser.post(
        f"/coordination/{team}/rendez-vous/{found.resource_id}",
        data=form,
        follow_redirects=False,
        headers=HTML,
    )


def test_accept_move_and_cancel_from_my_agenda_and_the_file(
    region: Region, db: Database, circle: Circle
) -> None:
    team, chu, other = circle
    day = date.today() + timedelta(days=10)
    _propose(chu, team, "Bilan de plaie", day, "10:30")
    made = _row(db, "Bilan de plaie")
    assert (made.status, made.version) == ("proposed", 1)

    # The one asked may accept; the one who proposed it may not (it is not their answer).
    mine = _page(other, "/agenda")
    assert _offered(mine, made) == ["Accepter", "Annuler", "Déplacer"]
    assert "proposé" in _item(mine, made)
    assert _offered(_page(chu, f"/coordination/{team}"), made) == ["Annuler", "Déplacer"]
    refused = _change(chu, team, made, "accept", page=f"/coordination/{team}")
    assert refused.status_code == 409
    assert "c'est aux autres participants de l'accepter" in unescape(refused.text)

    accepted = _change(other, team, made, "accept", retour="agenda")
    assert accepted.status_code == 303, accepted.text
    assert accepted.headers["location"] == "/agenda#rendez-vous"
    booked = _row(db, "Bilan de plaie")
    assert (booked.status, booked.version) == ("booked", 2)
    assert _answers(db, booked) == {DOCTOR_AT_CHU: "needs-action", DOCTOR_ELSEWHERE: "accepted"}
    in_file = _page(chu, f"/coordination/{team}")
    assert "confirmé" in _item(in_file, booked)
    assert _offered(in_file, booked) == ["Annuler", "Déplacer"]  # not honoured before it began

    # Moved to another day and hour: as long as before, still booked.
    later = day + timedelta(days=2)
    moved = _change(other, team, booked, "move", jour=later.isoformat(), heure="16:15")
    assert moved.status_code == 303, moved.text
    assert moved.headers["location"] == f"/coordination/{team}#rendez-vous"
    now = _row(db, "Bilan de plaie")
    start = datetime(later.year, later.month, later.day, 16, 15, tzinfo=_zone(region))
    assert (now.status, now.version, now.start_at) == ("booked", 3, start)
    assert now.end_at - now.start_at == timedelta(minutes=45)
    shown = _item(_page(other, "/agenda"), now)
    assert f"{later.strftime('%d/%m/%Y')} 16:15 – 17:00" in shown
    api = other.get(f"/fhir/Appointment/{now.resource_id}")
    assert api.headers["ETag"] == 'W/"3"'
    assert datetime.fromisoformat(api.json()["start"]) == start
    bad_day = _change(other, team, now, "move", jour="", heure="16:15")
    assert bad_day.status_code == 400 and "indiquez le jour et l'heure" in unescape(bad_day.text)

    cancelled = _change(chu, team, now, "cancel", page=f"/coordination/{team}")
    assert cancelled.status_code == 303
    gone = _row(db, "Bilan de plaie")
    assert (gone.status, gone.version) == ("cancelled", 4)
    assert _offered(_page(chu, f"/coordination/{team}"), gone) == []
    again = _change(chu, team, gone, "move", jour=later.isoformat(), heure="9:00")
    assert again.status_code == 409 and "ce rendez-vous est annulé" in unescape(again.text)
    assert _row(db, "Bilan de plaie").version == 4

    # Every change audited as the API's: an update of the appointment, with its patient.
    with db.transaction(write=False) as session:
        records = session.scalars(
            select(AuditRecord)
            .where(
                AuditRecord.entity_ref == f"Appointment/{made.resource_id}",
                AuditRecord.interaction == "update",
            )
            .order_by(AuditRecord.seq)
        ).all()
    assert {r.action for r in records} == {"U"}
    done = [r.outcome == "0" for r in records]
    # the proposer's "accept", accepted, moved, no day, cancelled, no more moves
    assert done == [False, True, True, False, True, False]
    assert {r.patient_ref for r in records} == {f"Patient/{region.rri}"}
    assert {r.resource_type for r in records} == {"Appointment"}


def test_after_its_start_a_booked_appointment_is_honoured_or_missed(
    region: Region, db: Database, circle: Circle
) -> None:
    team, chu, other = circle
    both = (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE)
    for title, when in [("Visite passée", at(-2)), ("Pansement passé", at(-1)), ("Visite", at(2))]:
        made = post(chu, "Appointment", appointment(region, team, title, when, with_rpps=both))
        assert made.status_code == 201, made.text
    soon, past, missed = _row(db, "Visite"), _row(db, "Visite passée"), _row(db, "Pansement passé")
    page = _page(other, "/agenda")
    upcoming = page.split('id="rendez-vous"')[1].split("</ul>")[0]
    to_close = page.split('id="rendez-vous-passes"')[1].split("</ul>")[0]
    assert "Visite" in upcoming and "passé" not in upcoming
    assert "Visite passée" in to_close and "Pansement passé" in to_close
    assert _offered(page, past) == ["Honoré", "Patient absent", "Annuler", "Déplacer"]
    assert _offered(page, soon) == ["Annuler", "Déplacer"]

    early = _change(other, team, soon, "fulfilled")
    assert early.status_code == 409 and "une fois son heure passée" in unescape(early.text)
    assert _row(db, "Visite").status == "booked"
    assert _change(other, team, past, "fulfilled", retour="agenda").status_code == 303
    assert _change(other, team, missed, "noshow", retour="agenda").status_code == 303
    assert (_row(db, "Visite passée").status, _row(db, "Pansement passé").status) == (
        "fulfilled",
        "noshow",
    )
    after = _page(other, "/agenda")
    assert 'id="rendez-vous-passes"' not in after  # nothing left to close
    file = _page(chu, f"/coordination/{team}")
    assert "honoré" in _item(file, past) and _offered(file, past) == []
    assert "patient absent" in _item(file, missed) and _offered(file, missed) == []
    final = _change(other, team, _row(db, "Visite passée"), "noshow")
    assert final.status_code == 409 and "ce rendez-vous est honoré" in unescape(final.text)
    assert _change(other, team, soon, "teleport").status_code == 422


def test_a_stale_form_is_told_and_changes_nothing(
    region: Region, db: Database, circle: Circle
) -> None:
    team, chu, other = circle
    _propose(chu, team, "Kiné", date.today() + timedelta(days=5), "11:00")
    seen = _row(db, "Kiné")  # both pages show version 1
    day = (date.today() + timedelta(days=6)).isoformat()
    assert _change(chu, team, seen, "move", jour=day, heure="14:00").status_code == 303
    stale = _change(other, team, seen, "accept")
    assert stale.status_code == 412
    assert "Le rendez-vous a été modifié entre-temps" in unescape(stale.text)
    now = _row(db, "Kiné")
    assert (now.status, now.version) == ("proposed", 2)
    # A move that would be refused anyway is told it is stale first.
    assert _change(chu, team, now, "cancel", page=f"/coordination/{team}").is_redirect
    late = _change(other, team, now, "move", jour=day, heure="15:00")
    assert late.status_code == 412 and "modifié entre-temps" in unescape(late.text)
    as_json = other.post(
        f"/coordination/{team}/rendez-vous/{seen.resource_id}",
        data={"action": "accept", "version": "1", "csrf": csrf_of(_page(other, "/agenda"))},
        follow_redirects=False,
    )
    assert as_json.status_code == 412
    assert "modifié entre-temps" in as_json.json()["detail"]
    missing = _change(other, team, _row(db, "Kiné"), "cancel", version="")
    assert missing.status_code == 422
    assert _row(db, "Kiné").version == 3


def test_a_move_off_its_slot_gives_the_slot_back(region: Region, circle: Circle) -> None:
    team, chu, other = circle
    schedule = post(other, "Schedule", {"resourceType": "Schedule"}).json()["id"]
    start = at(4, hour=14)
    slot_body = {
        "resourceType": "Slot",
        "schedule": {"reference": f"Schedule/{schedule}"},
        "status": "free",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
    }
    slot = post(other, "Slot", slot_body).json()["id"]
    on_slot = appointment(
        region,
        team,
        "Consultation",
        start,
        with_rpps=(DOCTOR_ELSEWHERE,),
        status="proposed",
        slot=[{"reference": f"Slot/{slot}"}],
    )
    made = post(chu, "Appointment", on_slot)
    assert made.status_code == 201, made.text
    found = _row(region.db, "Consultation")
    assert _change(other, team, found, "accept").is_redirect
    assert chu.get(f"/fhir/Slot/{slot}").json()["status"] == "busy"

    local = (start + timedelta(minutes=60)).astimezone(_zone(region))
    within = {"jour": local.date().isoformat(), "heure": local.strftime("%H:%M")}
    found = _row(region.db, "Consultation")
    assert _change(other, team, found, "move", **within).is_redirect
    kept = other.get(f"/fhir/Appointment/{found.resource_id}").json()
    assert kept["slot"] == [{"reference": f"Slot/{slot}"}]
    assert chu.get(f"/fhir/Slot/{slot}").json()["status"] == "busy"

    elsewhere = {"jour": (local.date() + timedelta(days=1)).isoformat(), "heure": "09:00"}
    assert _change(other, team, _row(region.db, "Consultation"), "move", **elsewhere).is_redirect
    off = other.get(f"/fhir/Appointment/{found.resource_id}").json()
    assert "slot" not in off and off["status"] == "booked"
    assert chu.get(f"/fhir/Slot/{slot}").json()["status"] == "free"


def test_non_members_and_forged_forms_are_refused(
    region: Region, factory: Factory, db: Database, circle: Circle
) -> None:
    team, chu, other = circle
    _propose(chu, team, "Ergothérapie", date.today() + timedelta(days=3), "09:00")
    found = _row(db, "Ergothérapie")
    path = f"/coordination/{team}/rendez-vous/{found.resource_id}"
    token = csrf_of(_page(other, "/agenda"))

    forged = other.post(path, data={"action": "accept", "version": "1", "csrf": "x"})
    assert forged.status_code == 403
    foreign = chu.post(path, data={"action": "cancel", "version": "1", "csrf": token})
    assert foreign.status_code == 403  # another session's token

    stranger = logged_in(region, factory, "dr.autre", DOCTOR_AT_CHU[:-1] + "9")
    stranger_token = csrf_of(_page(stranger, "/agenda"))
    moved = stranger.post(
        path,
        data={"action": "cancel", "version": "1", "csrf": stranger_token},
        headers=HTML,
    )
    assert moved.status_code == 403 and "réservé à ses membres" in unescape(moved.text)
    assert "Ergothérapie" not in _page(stranger, "/agenda")

    # Unknown, or of another circle: not found through this one.
    second = make_circle(region, chu, "Autre cercle").json()["id"]
    elsewhere = _change(chu, second, found, "cancel", page=f"/coordination/{second}")
    assert elsewhere.status_code == 404
    unknown = chu.post(
        f"/coordination/{team}/rendez-vous/inconnu",
        data={"action": "cancel", "version": "1", "csrf": csrf_of(_page(chu, "/agenda"))},
    )
    assert unknown.status_code == 404
    assert _row(db, "Ergothérapie").version == 1

    with db.transaction(write=False) as session:
        refused = session.scalars(
            select(AuditRecord).where(
                AuditRecord.entity_ref == f"Appointment/{found.resource_id}",
                AuditRecord.interaction == "update",
            )
        ).all()
    assert len(refused) == 4 and all(r.outcome != "0" for r in refused)


def _as_it_is(session: Any, found: CoordinationAppointment, status: str) -> Any:
    people = tuple(
        agenda.Participant(p.kind, rpps=p.rpps, finess=p.finess, status=p.status)
        for p in agenda.participants_of(session, found)
    )
    return agenda.AppointmentFields(
        title=found.title,
        start=found.start_at,
        end=found.end_at,
        participants=people,
        status=status,
    )


def test_two_changes_on_one_version_at_once_only_one_wins(db: Database, circle: Circle) -> None:
    """The second of two changes made on version 1 at the same time waits for the first
    (the appointment's row locked) and is refused: never a lost update. On PostgreSQL the
    second reads version 1 while the first is under way; SQLite runs one writer at a time."""
    team, chu, _ = circle
    _propose(chu, team, "Course", date.today() + timedelta(days=4), "08:00")
    row = _row(db, "Course")
    reader = Reader(row.created_by_key, "Dr CHU", "user", DOCTOR_AT_CHU, frozenset())
    has_read = threading.Event()
    outcome: dict[str, Any] = {}

    def second() -> None:
        try:
            with db.transaction() as session:
                found = agenda.appointment_by_id(session, row.resource_id)
                outcome["read"] = found.version
                has_read.set()
                cancel = _as_it_is(session, found, "cancelled")
                agenda.update_appointment(session, reader, found, cancel, 1)
            outcome["second"] = "changed"
        except PreconditionFailed as exc:
            outcome["second"] = str(exc)
        finally:
            has_read.set()

    thread = threading.Thread(target=second)
    with db.transaction() as session:
        found = agenda.appointment_by_id(session, row.resource_id)
        agenda.update_appointment(session, reader, found, _as_it_is(session, found, "booked"), 1)
        session.flush()
        thread.start()
        has_read.wait(3 if BACKEND == "postgresql" else 0.5)
        thread.join(0.5)
        assert thread.is_alive()  # it waits for this transaction
    thread.join(20)
    assert outcome["read"] == (1 if BACKEND == "postgresql" else 2)
    assert "version 2, not 1" in outcome["second"], outcome
    final = _row(db, "Course")
    assert (final.status, final.version) == ("booked", 2)
