"""The coordination tasks in the portal (issue 15): "Mes tâches" across the circles (overdue
ones flagged, by due date, linked to their file), a task made from the coordination file and
moved along its transitions by its buttons, on the version the page showed — a stale page is
told "La tâche a été modifiée entre-temps" and changes nothing; non-members, removed members
and forged forms (no CSRF token) are refused. Driven as a browser posts the forms."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.coordination.task_models import CoordinationTask
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.coordination.circles import make_circle, operation
from tests.coordination.conftest import logged_in
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, Region
from tests.support.portal import csrf_of

HTML = {"Accept": "text/html"}


def _file(browser: TestClient, team: str) -> str:
    page = browser.get(f"/coordination/{team}")
    assert page.status_code == 200, page.text
    return page.text


def _create(browser: TestClient, team: str, title: str, owner: str, due: str = "") -> Any:
    form = {"titre": title, "responsable": owner, "echeance": due}
    form["csrf"] = csrf_of(_file(browser, team))
    return browser.post(f"/coordination/{team}/taches", data=form, follow_redirects=False)


def _task(db: Database, title: str) -> CoordinationTask:
    with db.transaction(write=False) as session:
        found = session.scalar(select(CoordinationTask).where(CoordinationTask.title == title))
    assert found is not None
    return found


def _move(browser: TestClient, team: str, task: CoordinationTask, action: str, **extra: str) -> Any:
    form = {"action": action, "version": str(task.version), "csrf": csrf_of(_file(browser, team))}
    form.update(extra)
    return browser.post(
        f"/coordination/{team}/taches/{task.resource_id}",
        data=form,
        follow_redirects=False,
        headers=HTML,
    )


def _day(days: int) -> str:
    return (date.today() + timedelta(days=days)).isoformat()


def _buttons(html: str, task: CoordinationTask) -> list[str]:
    """The labels of the move buttons of one task on a page."""
    item = html.split(f'data-task="{task.resource_id}"')[1].split("</li>")[0]
    return re.findall(r'name="action" value="[a-z]+"[^>]*>([^<]+)</button>', item)


def test_my_tasks_lists_mine_across_circles_overdue_first(
    region: Region, db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    for title, owner, due in [
        ("Sans date", f"rpps:{DOCTOR_ELSEWHERE}", ""),
        ("Dans trois jours", "role:IDE", _day(3)),
        ("Hier", f"rpps:{DOCTOR_ELSEWHERE}", _day(-1)),
        ("Demain", "role:IDE", _day(1)),
        ("Pour le CHU", f"rpps:{DOCTOR_AT_CHU}", _day(1)),
    ]:
        made = _create(chu, team, title, owner, due)
        assert made.status_code == 303, made.text
        assert made.headers["location"] == f"/coordination/{team}#taches"
    second = make_circle(region, other, "Plaie chronique").json()["id"]
    assert _create(other, second, "Photo de la plaie", f"rpps:{DOCTOR_ELSEWHERE}").is_redirect

    page = other.get("/taches")
    assert page.status_code == 200
    html = page.text
    titles = re.findall(r'<strong class="titre">([^<]+)</strong>', html)
    assert titles == ["Hier", "Demain", "Dans trois jours", "Sans date", "Photo de la plaie"]
    overdue = html.split("<h2>En retard</h2>")[1].split("</section>")[0]
    assert "Hier" in overdue and "en retard" in overdue and "Demain" not in overdue
    tomorrow = (date.today() + timedelta(days=1)).strftime("%d/%m/%Y")
    assert f"<h2>Pour le {tomorrow}</h2>" in html and "<h2>Sans échéance</h2>" in html
    assert f'href="/coordination/{team}"' in html and f'href="/coordination/{second}"' in html
    assert "Pour le CHU" not in html
    chu_page = chu.get("/taches").text
    assert re.findall(r'<strong class="titre">([^<]+)</strong>', chu_page) == ["Pour le CHU"]
    assert 'href="/taches"' in other.get("/coordination").text  # linked from the circles

    # The list is audited with each patient whose tasks it shows.
    with db.transaction(write=False) as session:
        records = session.scalars(
            select(AuditRecord).where(
                AuditRecord.resource_type == "Task", AuditRecord.query == "owner=me"
            )
        ).all()
    assert {r.patient_ref for r in records} >= {f"Patient/{region.rri}"}


def test_buttons_move_a_task_along_its_transitions(
    region: Region, db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    assert _create(chu, team, "Pansement", "role:IDE", _day(2)).is_redirect
    task = _task(db, "Pansement")
    assert task.status == "requested" and task.version == 1
    assert _buttons(_file(other, team), task) == ["Accepter", "Commencer", "Terminer", "Annuler"]

    accepted = _move(other, team, task, "accept")
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("#taches")
    task = _task(db, "Pansement")
    assert (task.status, task.version) == ("accepted", 2)
    assert _buttons(_file(other, team), task) == ["Commencer", "Terminer", "Annuler"]
    started = _move(other, team, task, "start", retour="taches")
    assert started.headers["location"] == "/taches"
    task = _task(db, "Pansement")
    assert task.status == "in-progress"
    assert _buttons(other.get("/taches").text, task) == ["Terminer", "Annuler"]
    assert _move(other, team, task, "complete").status_code == 303
    task = _task(db, "Pansement")
    assert (task.status, task.version) == ("completed", 4)
    assert f'data-task="{task.resource_id}"' not in _file(other, team)  # no longer open
    assert "Pansement" not in other.get("/taches").text

    # A final state moves no more: 409, in French.
    refused = _move(other, team, task, "cancel")
    assert refused.status_code == 409
    assert "cette tâche est terminée" in refused.text
    assert _task(db, "Pansement").status == "completed"
    assert _move(other, team, task, "teleport").status_code == 422

    with db.transaction(write=False) as session:
        moves = session.scalars(
            select(AuditRecord).where(
                AuditRecord.entity_ref == f"Task/{task.resource_id}",
                AuditRecord.interaction == "update",
            )
        ).all()
    assert len(moves) == 5
    assert {r.patient_ref for r in moves} == {f"Patient/{region.rri}"}


def test_a_stale_page_is_told_and_changes_nothing(
    db: Database, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    assert _create(chu, team, "Prise de sang", "role:IDE").is_redirect
    seen = _task(db, "Prise de sang")  # both pages show version 1
    assert _move(chu, team, seen, "cancel").status_code == 303
    stale = _move(other, team, seen, "accept")
    assert stale.status_code == 412
    assert "La tâche a été modifiée entre-temps" in stale.text
    now = _task(db, "Prise de sang")
    assert (now.status, now.version) == ("cancelled", 2)
    as_json = other.post(
        f"/coordination/{team}/taches/{seen.resource_id}",
        data={"action": "start", "version": "1", "csrf": csrf_of(_file(other, team))},
        follow_redirects=False,
    )
    assert as_json.status_code == 412
    assert "modifiée entre-temps" in as_json.json()["detail"]
    missing = _move(other, team, now, "accept", version="")
    assert missing.status_code == 422
    assert _task(db, "Prise de sang").version == 2


def test_non_members_removed_members_and_forged_forms_are_refused(
    region: Region,
    factory: Factory,
    db: Database,
    circle: tuple[str, TestClient, TestClient],
) -> None:
    team, chu, other = circle
    assert _create(chu, team, "Kiné", f"rpps:{DOCTOR_ELSEWHERE}").is_redirect
    task = _task(db, "Kiné")
    token = csrf_of(_file(other, team))

    # No CSRF token, or another session's: refused, nothing changed.
    forged = other.post(
        f"/coordination/{team}/taches/{task.resource_id}",
        data={"action": "accept", "version": "1", "csrf": "x"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    foreign = chu.post(
        f"/coordination/{team}/taches/{task.resource_id}",
        data={"action": "accept", "version": "1", "csrf": token},
        follow_redirects=False,
    )
    assert foreign.status_code == 403
    assert _task(db, "Kiné").status == "requested"

    # A professional outside the circle: neither the page, nor a move, nor a new task.
    stranger = logged_in(region, factory, "dr.autre", DOCTOR_AT_CHU[:-1] + "9")
    stranger_token = csrf_of(stranger.get("/taches").text)
    assert stranger.get(f"/coordination/{team}").status_code == 403
    moved = stranger.post(
        f"/coordination/{team}/taches/{task.resource_id}",
        data={"action": "accept", "version": "1", "csrf": stranger_token},
        follow_redirects=False,
    )
    assert moved.status_code == 403
    made = stranger.post(
        f"/coordination/{team}/taches",
        data={"titre": "Intrus", "responsable": "role:IDE", "csrf": stranger_token},
        follow_redirects=False,
        headers=HTML,
    )
    assert made.status_code == 403 and "réservé à ses membres" in made.text
    assert "Kiné" not in stranger.get("/taches").text

    # Bad fields: an owner outside the circle, no title; French answers, nothing made.
    outsider = _create(chu, team, "Bilan", "rpps:10000099999")
    assert outsider.status_code == 422
    assert _create(chu, team, "  ", "role:IDE").status_code == 422
    assert _create(chu, team, "Bilan", "").status_code == 422
    assert _create(chu, team, "Bilan", "role:IDE", "demain").status_code == 422

    # A task of another circle is not reached through this one.
    second = make_circle(region, chu, "Autre cercle").json()["id"]
    assert _create(chu, second, "Ailleurs", f"rpps:{DOCTOR_AT_CHU}").is_redirect
    elsewhere = _task(db, "Ailleurs")
    assert _move(chu, team, elsewhere, "accept").status_code == 404

    # Removed from the circle: their buttons no longer work.
    member = next(
        p["id"]
        for p in chu.get(f"/fhir/CareTeam/{team}").json()["participant"]
        if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    )
    assert operation(chu, team, "remove", participant=member).status_code == 200
    late = other.post(
        f"/coordination/{team}/taches/{task.resource_id}",
        data={"action": "accept", "version": "1", "csrf": token},
        follow_redirects=False,
    )
    assert late.status_code == 403
    assert _task(db, "Kiné").status == "requested"
    with db.transaction(write=False) as session:
        titles = session.scalars(select(CoordinationTask.title)).all()
    assert sorted(titles) == ["Ailleurs", "Kiné"]
