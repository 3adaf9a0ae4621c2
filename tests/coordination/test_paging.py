"""The coordination searches page as every FHIR search of the platform does (issue 15):
``_count`` (capped at the search's maximum), ``next`` links followed to the end seeing each
resource once, in a stable order, with ``total``; a bad ``_count`` is a 400 OperationOutcome.
And the coordination file lists bounded lists: its first open tasks, soonest due first, with a
link to all of them, and the last messages."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from enrs.coordination.task_endpoints import task_spec
from enrs.portal.coordination import FIRST_TASKS, LAST_MESSAGES
from tests.coordination.agenda_world import appointment, at, post
from tests.coordination.circles import make_circle
from tests.coordination.test_chat import _post as _message
from tests.coordination.test_forms import EPICES_URL, _epices_answers, _response
from tests.coordination.test_forms import _post as _form_post
from tests.coordination.test_plans import _plan
from tests.coordination.test_plans import _post as _plan_post
from tests.coordination.test_tasks import _due, _post, _put, _task
from tests.documents.world import DOCTOR_ELSEWHERE, Region


def _pages(browser: TestClient, url: str) -> list[dict[str, Any]]:
    """Every page of a search, following its ``next`` links (at most 20)."""
    pages = []
    while url and len(pages) < 20:
        answer = browser.get(url)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        after = [link["url"] for link in pages[-1]["link"] if link["relation"] == "next"]
        url = "{0.path}?{0.query}".format(urlsplit(after[0])) if after else ""
    return pages


def _ids(pages: list[dict[str, Any]]) -> list[str]:
    return [e["resource"]["id"] for page in pages for e in page.get("entry", [])]


def _self_count(bundle: dict[str, Any]) -> str:
    url = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    return parse_qs(urlsplit(url).query)["_count"][0]


def test_tasks_page_by_due_date_each_once(
    region: Region, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    made = []
    for n in range(25):  # due dates in another order than the tasks were made
        due = {"restriction": {"period": {"end": _due((n * 7) % 25 * 2 - 5)}}}
        answer = _post(chu, _task(region, team, f"T{n}", performerType=[{"text": "IDE"}], **due))
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    by_due = [t["id"] for t in sorted(made, key=lambda t: t["restriction"]["period"]["end"])]

    pages = _pages(other, f"/fhir/Task?patient=Patient/{region.rri}&_count=10")
    assert [len(p["entry"]) for p in pages] == [10, 10, 5]
    assert {p["total"] for p in pages} == {25}
    assert _ids(pages) == by_due  # each once, soonest due first
    assert "next" not in [link["relation"] for link in pages[-1]["link"]]
    mine = _pages(other, "/fhir/Task?owner=me&_count=7")
    assert sorted(_ids(mine)) == sorted(by_due)

    # Filters are applied before paging: overdue ones (the same rule as the flag), then
    # with one closed.
    late = _pages(other, "/fhir/Task?owner=me&overdue=true&_count=2")
    flagged = [t["id"] for t in made if "businessStatus" in t]
    assert sorted(_ids(late)) == sorted(flagged) and late[0]["total"] == len(flagged) == 3
    assert _put(other, {**made[0], "status": "completed"}).status_code == 200
    still = _pages(other, "/fhir/Task?owner=me&status=requested&_count=10")
    assert len(_ids(still)) == still[0]["total"] == 24

    # _count over the maximum is capped; a bad _count changes nothing and says why.
    capped = other.get("/fhir/Task?owner=me&_count=100000").json()
    assert _self_count(capped) == str(task_spec().max_count) and len(capped["entry"]) == 25
    for bad in ("abc", "-1", "1.5"):
        refused = other.get(f"/fhir/Task?owner=me&_count={bad}")
        assert refused.status_code == 400, bad
        assert refused.json()["resourceType"] == "OperationOutcome"
        assert "_count" in refused.json()["issue"][0]["diagnostics"]
    assert other.get("/fhir/Task?owner=me&_sort=title").status_code == 400
    assert other.get("/fhir/Task?owner=me&code=x").status_code == 400  # unknown: refused
    assert other.get("/fhir/Task?owner=you").status_code == 400


def test_messages_page_oldest_first_and_newest_on_demand(
    circle: tuple[str, TestClient, TestClient],
) -> None:
    team, chu, other = circle
    for n in range(25):
        topic = {"topic": {"text": "Soins"}} if n % 5 == 0 else {}
        assert _message(chu if n % 2 else other, team, f"m{n}", **topic).status_code == 201

    def texts(pages: list[dict[str, Any]]) -> list[str]:
        return [e["resource"]["payload"][0]["contentString"] for p in pages for e in p["entry"]]

    pages = _pages(other, f"/fhir/Communication?about=CareTeam/{team}&_count=10")
    assert texts(pages) == [f"m{n}" for n in range(25)] and pages[0]["total"] == 25
    assert len(set(_ids(pages))) == 25
    last = other.get(f"/fhir/Communication?about=CareTeam/{team}&_sort=-sent&_count=3").json()
    assert texts([last]) == ["m24", "m23", "m22"]
    soins = _pages(chu, f"/fhir/Communication?about=CareTeam/{team}&topic=Soins&_count=2")
    assert texts(soins) == [f"m{n}" for n in range(0, 25, 5)]
    refused = chu.get(f"/fhir/Communication?about=CareTeam/{team}&_count=x")
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"


def test_care_teams_page(region: Region, circle: tuple[str, TestClient, TestClient]) -> None:
    team, chu, other = circle
    more = [make_circle(region, chu, name=f"Cercle {n}").json()["id"] for n in range(4)]
    pages = _pages(chu, "/fhir/CareTeam?_count=2")
    assert _ids(pages) == [team, *more] and [p["total"] for p in pages] == [5, 5, 5]
    assert _ids(_pages(other, "/fhir/CareTeam?_count=2")) == [team]  # not in the others
    by_patient = _pages(chu, f"/fhir/CareTeam?patient=Patient/{region.rri}&_count=3")
    assert _ids(by_patient) == [team, *more]
    assert _ids(_pages(other, f"/fhir/CareTeam?patient=Patient/{region.rri}")) == [team]
    assert chu.get("/fhir/CareTeam?_count=").status_code == 200  # empty: ignored
    assert chu.get("/fhir/CareTeam?_count=two").status_code == 400


@pytest.mark.parametrize("extra", [5, 0])
def test_the_file_lists_the_first_open_tasks_and_links_to_all(
    region: Region, circle: tuple[str, TestClient, TestClient], extra: int
) -> None:
    team, chu, other = circle
    for n in range(FIRST_TASKS + extra):
        due = {"restriction": {"period": {"end": _due(n * 2 - 3)}}}
        body = _task(region, team, f"Tâche {n:02d}", performerType=[{"text": "IDE"}], **due)
        assert _post(chu, body).status_code == 201
    page = other.get(f"/coordination/{team}").text
    listed = page.split('<ul id="taches">')[1].split("</ul>")[0].split("<li")[1:]
    assert [i.split(">", 1)[1].split(" —")[0].strip() for i in listed] == [
        f"Tâche {n:02d}" for n in range(FIRST_TASKS)
    ]
    assert ["en retard" in i for i in listed[:3]] == [True, True, False]
    everything = f"/coordination/{team}?taches=toutes#taches"
    assert (everything in page) == bool(extra)
    if extra:
        assert f"Voir les {FIRST_TASKS + extra} tâches en cours" in page
        full = other.get(f"/coordination/{team}?taches=toutes").text
        assert full.split('<ul id="taches">')[1].split("</ul>")[0].count("<li") == 25


def test_the_file_shows_the_last_messages(circle: tuple[str, TestClient, TestClient]) -> None:
    team, chu, other = circle
    for n in range(LAST_MESSAGES + 3):
        assert _message(chu, team, f"message {n}").status_code == 201
    page = other.get(f"/coordination/{team}").text
    shown = page.count('<li data-id="')
    assert shown == LAST_MESSAGES and "message 3</p>" in page and "message 2</p>" not in page
    assert f"Les {LAST_MESSAGES} derniers messages." in page


def test_appointments_plans_and_evaluations_page(
    region: Region, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    # Appointments made in another order than their start: paged by start, each once.
    starts = [(n * 5) % 12 + 1 for n in range(12)]
    for n, days in enumerate(starts):
        body = appointment(region, team, f"RDV {n}", at(days), with_rpps=(DOCTOR_ELSEWHERE,))
        assert post(chu, "Appointment", body).status_code == 201
    pages = _pages(other, f"/fhir/Appointment?patient=Patient/{region.rri}&_count=5")
    assert [len(p["entry"]) for p in pages] == [5, 5, 2] and pages[0]["total"] == 12
    seen = [e["resource"]["start"] for p in pages for e in p["entry"]]
    assert seen == sorted(seen) and len(set(_ids(pages))) == 12
    mine = _pages(other, "/fhir/Appointment?actor=me&date=ge2000-01-01&_count=4")
    assert len(mine) == 3 and len(set(_ids(mine))) == 12
    assert other.get("/fhir/Appointment?actor=me&color=blue").status_code == 400

    # Care plans, newest first; evaluations, newest first.
    for n in range(3):
        assert _plan_post(chu, _plan(region, team, title=f"Plan {n}")).status_code == 201
    plans = _pages(other, f"/fhir/CarePlan?patient=Patient/{region.rri}&_count=2")
    assert [len(p["entry"]) for p in plans] == [2, 1] and plans[0]["total"] == 3
    assert [e["resource"]["title"] for p in plans for e in p["entry"]] == [
        "Plan 2",
        "Plan 1",
        "Plan 0",
    ]
    made = []
    for n in range(5):
        answer = _form_post(other, _response(region, _epices_answers(set(range(1, n + 2)))))
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    url = f"/fhir/QuestionnaireResponse?patient=Patient/{region.rri}&questionnaire={EPICES_URL}"
    forms = _pages(chu, f"{url}&_count=2")
    assert [len(p["entry"]) for p in forms] == [2, 2, 1] and forms[0]["total"] == 5
    assert _ids(forms) == made[::-1]
