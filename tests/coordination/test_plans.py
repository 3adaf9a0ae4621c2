"""Care plans and pathway templates (issue 15): the region's pathways served as PlanDefinition,
applied to a care circle with $apply (the plan, its goals, its activities and the tasks of
its roles, in one transaction: a refusal leaves nothing), care plans made, read, found and
changed by the circle's current members only, versioned with If-Match; the coordination
file's plan and pathway picker. Driven over HTTP as a professional's browser does."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.plandefinition import PlanDefinition as FhirPlanDefinition
from sqlalchemy import func, select

from enrs.coordination import plan_fhir, plans
from enrs.coordination.agenda_models import CoordinationAppointment
from enrs.coordination.plan_models import CarePlan, PlanActivity, PlanGoal
from enrs.coordination.task_models import CoordinationTask
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.coordination.circles import doctor, make_circle, operation
from tests.documents.world import CHU_OID, DOCTOR_ELSEWHERE, FHIR_JSON, Region
from tests.support.identities import person
from tests.support.portal import csrf_of

PATHWAYS = {
    "suivi-greffe-renale",
    "dac-situation-complexe",
    "suivi-perinatal",
    "geriatrie-domicile",
    "education-therapeutique",
}
ROLE = plan_fhir.PERFORMER_ROLE


def _apply(
    browser: TestClient, pathway: str, headers: dict[str, str] | None = None, **values: Any
) -> Any:
    parameter = []
    for name, value in values.items():
        key = "valueReference" if isinstance(value, dict) else "valueString"
        key = "valueDate" if name == "start" else key
        parameter.append({"name": name, key: value})
    return browser.post(
        f"/fhir/PlanDefinition/{pathway}/$apply",
        json={"resourceType": "Parameters", "parameter": parameter},
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )


def _counts(db: Database) -> tuple[int, ...]:
    with db.transaction() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (
                CarePlan,
                PlanGoal,
                PlanActivity,
                CoordinationTask,
                CoordinationAppointment,
            )
        )


def _plan(region: Region, team: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Retour à domicile",
        "subject": {"reference": f"Patient/{region.rri}"},
        "careTeam": [{"reference": f"CareTeam/{team}"}],
        "period": {"start": "2027-01-04"},
        "contained": [
            {
                "resourceType": "Goal",
                "id": "poids",
                "lifecycleStatus": "active",
                "achievementStatus": {
                    "coding": [{"system": plan_fhir.GOAL_ACHIEVEMENT, "code": "in-progress"}]
                },
                "description": {"text": "Poids stable"},
                "target": [{"dueDate": "2027-03-01"}],
            }
        ],
        "goal": [{"reference": "#poids"}],
        "activity": [
            {
                "id": "pesee",
                "detail": {
                    "kind": "Task",
                    "status": "not-started",
                    "description": "Pesée hebdomadaire",
                    "scheduledPeriod": {"start": "2027-01-11", "end": "2027-01-11"},
                    "goal": [{"reference": "#poids"}],
                    "extension": [{"url": ROLE, "valueCodeableConcept": {"text": "IDE"}}],
                },
            }
        ],
        **elements,
    }


def _post(browser: TestClient, body: dict[str, Any]) -> Any:
    return browser.post("/fhir/CarePlan", json=body, headers={"Content-Type": FHIR_JSON})


def _put(browser: TestClient, resource: dict[str, Any], if_match: str | None = None) -> Any:
    headers = {"Content-Type": FHIR_JSON, **({"If-Match": if_match} if if_match else {})}
    return browser.put(f"/fhir/CarePlan/{resource['id']}", json=resource, headers=headers)


def _another_patient(region: Region) -> str:
    from enrs.identity import service as identity_service

    with region.db.transaction() as session:
        other = identity_service.feed(
            session,
            region.app.state.matcher,
            person(CHU_OID, "800002", birth_name="MARTIN", given_names=["Paul"], sex="M"),
            actor="test",
            config=region.app.state.identity_config,
        )
    return other.rri


def test_the_pathways_are_served_read_only_and_hold(
    region: Region, chu_doctor: TestClient, tmp_path: Path
) -> None:
    listed = chu_doctor.get("/fhir/PlanDefinition")
    assert listed.status_code == 200, listed.text
    found = {e["resource"]["id"]: e["resource"] for e in listed.json()["entry"]}
    assert set(found) == PATHWAYS
    for resource in found.values():
        FhirPlanDefinition.model_validate(resource)  # a FHIR R4(B) PlanDefinition
        assert "pas une recommandation clinique" in resource["usage"]
        kinds = {
            c["code"] for a in resource["action"] for code in a["code"] for c in code["coding"]
        }
        assert kinds <= {"task", "appointment", "session"} and resource["goal"]
    etp = found["education-therapeutique"]
    sessions = [a for a in etp["action"] if a["code"][0]["coding"][0]["code"] == "session"]
    assert len(sessions) >= 3 and any(
        p["type"] == "patient" for a in sessions for p in a["participant"]
    )
    one = chu_doctor.get("/fhir/PlanDefinition/suivi-greffe-renale")
    assert one.status_code == 200 and one.json()["title"].startswith("Suivi post-greffe rénale")
    assert chu_doctor.get("/fhir/PlanDefinition/nope").status_code == 404
    assert chu_doctor.get("/fhir/PlanDefinition?title=x").status_code == 400
    assert region.client.get("/fhir/PlanDefinition").status_code == 401
    put = chu_doctor.put("/fhir/PlanDefinition/suivi-perinatal", json=one.json())
    assert put.status_code == 405

    # The loader refuses what it could not apply: an action without a role, a foreign unit.
    greffe = json.loads(json.dumps(one.json()))
    greffe["action"][0]["participant"] = [{"type": "patient"}]
    (tmp_path / "suivi-greffe-renale.json").write_text(json.dumps(greffe))
    with pytest.raises(plan_fhir.PathwayError, match=r"action\[0\].participant"):
        plan_fhir.load_pathways(tmp_path)
    greffe = one.json()
    greffe["goal"][0]["target"][0]["due"]["code"] = "h"
    (tmp_path / "suivi-greffe-renale.json").write_text(json.dumps(greffe))
    with pytest.raises(plan_fhir.PathwayError, match="UCUM"):
        plan_fhir.load_pathways(tmp_path)
    (tmp_path / "suivi-greffe-renale.json").write_text(json.dumps(one.json()))
    assert set(plan_fhir.load_pathways(tmp_path)) == {"suivi-greffe-renale"}


def test_offsets_count_days_weeks_and_calendar_months() -> None:
    start = date(2027, 1, 31)
    assert plans.Offset(7, "d").after(start) == date(2027, 2, 7)
    assert plans.Offset(2, "wk").after(start) == date(2027, 2, 14)
    assert plans.Offset(1, "mo").after(start) == date(2027, 2, 28)  # the month's last day
    assert plans.Offset(12, "mo").after(start) == date(2028, 1, 31)


def test_applying_a_pathway_makes_the_plan_its_goals_activities_and_tasks(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    team, chu, nurse = circle  # the clinic's doctor holds the role IDE
    start = date.today() + timedelta(days=3)
    made = _apply(
        chu,
        "suivi-greffe-renale",
        subject={"reference": f"Patient/{region.rri}"},
        careTeam={"reference": f"CareTeam/{team}"},
        start=start.isoformat(),
    )
    assert made.status_code == 201, made.text
    plan = made.json()
    FhirCarePlan.model_validate(plan)  # a FHIR R4(B) CarePlan, its Goals contained
    assert made.headers["ETag"] == 'W/"1"'
    assert made.headers["Location"].endswith(f"/CarePlan/{plan['id']}")
    assert plan["status"] == "active" and plan["intent"] == "plan"
    assert plan["instantiatesCanonical"] == [
        "https://enrs.fr/fhir/PlanDefinition/suivi-greffe-renale|0.1.0"
    ]
    assert plan["careTeam"] == [{"reference": f"CareTeam/{team}"}]
    assert plan["period"]["start"] == start.isoformat()
    goals = {g["id"]: g for g in plan["contained"]}
    assert len(goals) == 4 and [g["reference"][1:] for g in plan["goal"]] == list(goals)
    graft = goals["fonction-greffon"]
    assert graft["target"][0]["dueDate"] == plans.Offset(12, "mo").after(start).isoformat()
    assert graft["achievementStatus"]["coding"][0]["code"] == "in-progress"

    by_id = {a["id"]: a for a in plan["activity"]}
    bilan = by_id["bilan-j7"]
    assert set(bilan) == {"id", "reference"}  # a task: its state is the task's (cpl-3)
    task = chu.get(f"/fhir/{bilan['reference']['reference']}").json()
    assert task["performerType"] == [{"text": "IDE"}] and task["status"] == "requested"
    due = task["restriction"]["period"]["end"]
    assert due.startswith(f"{(start + timedelta(days=8)).isoformat()}T00:00:00")
    nephro = by_id["consultation-nephro-m3"]["detail"]
    assert nephro["kind"] == "Appointment" and nephro["status"] == "scheduled"
    assert nephro["code"]["coding"][0]["code"] == "appointment"
    assert nephro["extension"] == [{"url": ROLE, "valueCodeableConcept": {"text": "néphrologue"}}]
    m3 = plans.Offset(3, "mo").after(start).isoformat()
    assert nephro["scheduledPeriod"] == {"start": m3, "end": m3}
    assert {"reference": "#fonction-greffon"} in nephro["goal"]
    education = by_id["etp-traitement"]["detail"]
    assert (
        education["kind"] == "Appointment" and education["code"]["coding"][0]["code"] == "session"
    )

    # The education session, done by the circle's IDE, is a proposed appointment with them
    # on its day (09:00 in the region's zone, its window in the comment); the nephrologist's
    # consultations are plan activities only: nobody holds that role in the circle yet.
    booked = nurse.get("/fhir/Appointment?actor=me").json()["entry"]
    assert [e["resource"]["description"] for e in booked] == [
        "Séance d'éducation : le traitement immunosuppresseur"
    ]
    session_day = (start + timedelta(days=14)).strftime("%d/%m/%Y")
    etp = booked[0]["resource"]
    assert etp["status"] == "proposed" and session_day in etp["comment"]
    assert etp["start"].startswith((start + timedelta(days=14)).isoformat())
    actors = [p["actor"] for p in etp["participant"]]
    assert {"reference": f"Patient/{region.rri}"} in actors
    assert any(a.get("identifier", {}).get("value") == f"8{DOCTOR_ELSEWHERE}" for a in actors)
    assert len(chu.get("/fhir/Appointment?actor=me").json().get("entry", [])) == 0
    # The session's activity names its appointment, which points back to the plan.
    assert by_id["etp-traitement"]["outcomeReference"] == [
        {"reference": f"Appointment/{etp['id']}", "display": etp["description"]}
    ]
    assert etp["supportingInformation"] == [
        {"reference": f"CarePlan/{plan['id']}", "display": plan["title"]}
    ]
    assert "outcomeReference" not in by_id["consultation-nephro-m3"]  # nobody holds the role

    # The IDE of the circle has the seven blood tests among their tasks, with their due dates.
    mine = nurse.get("/fhir/Task?owner=me").json()["entry"]
    titles = [e["resource"]["code"]["text"] for e in mine]
    assert len(titles) == 7 and titles[0] == "Bilan biologique J+7"
    assert titles[-1] == "Bilan biologique M6"
    found = nurse.get(f"/fhir/CarePlan?patient=Patient/{region.rri}")
    assert found.status_code == 200 and found.json()["total"] == 1
    assert found.json()["entry"][0]["resource"] == plan
    assert (
        nurse.get(f"/fhir/CarePlan?patient=Patient/{region.rri}&status=draft").json()["total"] == 0
    )

    # Applied twice: refused while the first is under way.
    again = _apply(
        chu,
        "suivi-greffe-renale",
        subject=f"Patient/{region.rri}",
        careTeam=f"CareTeam/{team}",
    )
    assert again.status_code == 409 and again.json()["resourceType"] == "OperationOutcome"
    with db.transaction() as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.entity_ref == f"CarePlan/{plan['id']}")
        ).all()
    assert [r.action for r in records] == ["C"] and records[0].patient_ref == (
        f"Patient/{region.rri}"
    )

    # A change of the plan that keeps the activity keeps its appointment; one that drops it
    # drops the link, not the appointment.
    held = _put(chu, {**plan, "status": "on-hold"}, 'W/"1"')
    assert held.status_code == 200, held.text
    kept = {a["id"]: a for a in held.json()["activity"]}["etp-traitement"]
    assert kept["outcomeReference"] == by_id["etp-traitement"]["outcomeReference"]
    others = [a for a in held.json()["activity"] if a["id"] != "etp-traitement"]
    dropped = _put(chu, {**held.json(), "activity": others}, 'W/"2"')
    assert dropped.status_code == 200, dropped.text
    appointment = nurse.get(f"/fhir/Appointment/{etp['id']}").json()
    assert appointment["status"] == "proposed" and "supportingInformation" not in appointment


def test_a_refused_apply_creates_nothing(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    team, chu, nurse = circle
    other_team = make_circle(region, chu, name="Autre cercle").json()["id"]
    patient = {"reference": f"Patient/{region.rri}"}
    ours = {"reference": f"CareTeam/{team}"}
    before = _counts(db)
    stranger_rri = _another_patient(region)

    def refused(status: int, pathway: str = "suivi-greffe-renale", by: Any = chu, **v: Any) -> None:
        answer = _apply(by, pathway, **{"subject": patient, "careTeam": ours, **v})
        assert answer.status_code == status, answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert _counts(db) == before

    refused(404, "greffe-hepatique")
    refused(422, subject={"reference": f"Patient/{stranger_rri}"})  # not the circle's patient
    refused(400, start="2027-02-30")
    refused(400, start="demain")
    refused(422, start=(date.today() + timedelta(days=800)).isoformat())
    refused(422, "dac-situation-complexe")  # nobody is "coordinateur DAC" in the circle
    refused(400, careTeam="Team/x")
    refused(404, careTeam={"reference": "CareTeam/0000"})
    refused(400, extra="x")
    # The other circle has no IDE; a member who is not in our circle is refused too.
    refused(422, careTeam={"reference": f"CareTeam/{other_team}"})
    refused(403, by=nurse, careTeam={"reference": f"CareTeam/{other_team}"})
    assert _apply(chu, "suivi-greffe-renale", subject=patient, careTeam=ours).status_code == 201
    assert _counts(db) != before


def test_an_apply_failing_half_way_leaves_nothing(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    """A pathway whose third action cannot become a task (a blank title, which the loader
    would refuse) fails after the plan, an activity and a task were written: all undone."""
    team, chu, _nurse = circle
    day = plans.Offset(1, "d")
    broken = plans.Pathway(
        id="casse",
        url="https://enrs.fr/fhir/PlanDefinition/casse",
        version="0",
        title="Parcours cassé",
        status="draft",
        goals=(plans.PathwayGoal("g", "Objectif", day),),
        actions=(
            plans.PathwayAction("a", "Prise de sang", "task", "IDE", day, day, ("g",)),
            plans.PathwayAction("b", "Consultation", "appointment", "IDE", day, day),
            plans.PathwayAction("c", " ", "task", "IDE", day, day),
        ),
        resource={},
    )
    region.app.state.pathways = {**region.app.state.pathways, "casse": broken}
    before = _counts(db)
    answer = _apply(chu, "casse", subject=f"Patient/{region.rri}", careTeam=f"CareTeam/{team}")
    assert answer.status_code == 422, answer.text
    assert "title" in answer.json()["issue"][0]["diagnostics"]
    assert _counts(db) == before


def test_care_plans_are_versioned_and_move_along_their_states(
    region: Region, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, nurse = circle
    made = _post(chu, _plan(region, team))
    assert made.status_code == 201, made.text
    plan = made.json()
    assert plan["activity"][0]["detail"]["extension"][0]["valueCodeableConcept"]["text"] == "IDE"
    assert plan["contained"][0]["target"] == [{"dueDate": "2027-03-01"}]

    # The nurse records progress; the coordinator's change, made on the old version, is refused.
    progressed = json.loads(json.dumps(plan))
    progressed["activity"][0]["detail"]["status"] = "in-progress"
    progressed["contained"][0]["achievementStatus"]["coding"][0]["code"] = "improving"
    changed = _put(nurse, progressed, 'W/"1"')
    assert changed.status_code == 200, changed.text
    assert changed.headers["ETag"] == 'W/"2"'
    stale = _put(chu, {**plan, "title": "Autre titre"}, 'W/"1"')
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    now = chu.get(f"/fhir/CarePlan/{plan['id']}")
    assert now.headers["ETag"] == 'W/"2"' and now.json()["title"] == "Retour à domicile"
    assert now.json()["activity"][0]["detail"]["status"] == "in-progress"
    assert _put(chu, now.json(), 'W/"2"').headers["ETag"] == 'W/"2"'  # no change, no version

    # A task of the circle may be an activity; a task of another circle may not.
    task = chu.post(
        "/fhir/Task",
        json={
            "resourceType": "Task",
            "extension": [
                {
                    "url": "https://enrs.fr/fhir/StructureDefinition/task-care-team",
                    "valueReference": {"reference": f"CareTeam/{team}"},
                }
            ],
            "status": "requested",
            "intent": "order",
            "code": {"text": "Ordonnance de sortie"},
            "for": {"reference": f"Patient/{region.rri}"},
            "performerType": [{"text": "IDE"}],
        },
        headers={"Content-Type": FHIR_JSON},
    ).json()
    with_task = {
        **now.json(),
        "activity": [*now.json()["activity"], {"reference": {"reference": f"Task/{task['id']}"}}],
    }
    linked = _put(chu, with_task, 'W/"2"')
    assert linked.status_code == 200, linked.text
    FhirCarePlan.model_validate(linked.json())
    assert linked.json()["activity"][1]["reference"]["display"] == "Ordonnance de sortie"
    foreign = {**linked.json(), "activity": [{"reference": {"reference": "Task/abc"}}]}
    assert _put(chu, foreign).status_code == 422

    # States: active → on-hold → completed, final; a draft is not completed.
    held = _put(chu, {**linked.json(), "status": "on-hold"}, 'W/"3"')
    assert held.status_code == 200, held.text
    done = _put(chu, {**held.json(), "status": "completed"})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert _put(chu, {**done.json(), "status": "active"}).status_code == 409
    assert _put(chu, {**done.json(), "title": "Changé"}).status_code == 409
    draft = _post(chu, _plan(region, team, status="draft")).json()
    assert _put(chu, {**draft, "status": "completed"}).status_code == 409
    assert _post(chu, _plan(region, team, status="completed")).status_code == 422


def test_malformed_care_plans_are_refused(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    team, chu, _nurse = circle
    plan = _plan(region, team)
    before = _counts(db)
    detail = plan["activity"][0]["detail"]
    for body in (
        {**plan, "title": ""},
        {**plan, "status": "finished"},
        {**plan, "intent": "order"},
        {**plan, "goal": []},  # a contained Goal that the plan does not name
        {**plan, "careTeam": []},
        {**plan, "period": {"start": "2027-02-01", "end": "2027-01-01"}},
        {**plan, "subject": {"reference": f"Patient/{_another_patient(region)}"}},
        {**plan, "activity": [{"detail": {**detail, "status": "done"}}]},
        {**plan, "activity": [{"detail": {**detail, "goal": [{"reference": "#autre"}]}}]},
        {**plan, "activity": [{"detail": detail, "reference": {"reference": "Task/x"}}]},
        {**plan, "contained": [{**plan["contained"][0], "lifecycleStatus": "done"}]},
    ):
        answer = _post(chu, body)
        assert answer.status_code == 422, (body, answer.text)
    assert _counts(db) == before
    made = _post(chu, plan).json()
    elsewhere = chu.put(
        f"/fhir/CarePlan/{made['id']}",
        json={**made, "id": "other"},
        headers={"Content-Type": FHIR_JSON},
    )
    assert elsewhere.status_code == 400
    assert _put(chu, made, "2").status_code == 400  # not an ETag
    moved = {**made, "subject": {"reference": "Patient/x"}}
    assert _put(chu, moved).status_code == 422


def test_only_current_members_see_and_change_plans(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    plan = _post(chu_doctor, _plan(region, team))
    assert plan.status_code == 201, plan.text
    made = plan.json()
    assert _post(other_doctor, _plan(region, team)).status_code == 403
    assert other_doctor.get(f"/fhir/CarePlan/{made['id']}").status_code == 403
    assert _put(other_doctor, {**made, "title": "x"}).status_code == 403
    search = other_doctor.get(f"/fhir/CarePlan?patient=Patient/{region.rri}")
    assert search.json()["total"] == 0
    assert other_doctor.get("/fhir/CarePlan").status_code == 400  # a patient is needed

    invited = operation(chu_doctor, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert other_doctor.get(f"/fhir/CarePlan/{made['id']}").status_code == 403  # invited only
    accepted = operation(other_doctor, team, "accept").json()
    assert invited.status_code == 200
    assert other_doctor.get(f"/fhir/CarePlan/{made['id']}").status_code == 200
    member = next(
        p["id"]
        for p in accepted["participant"]
        if p["member"].get("identifier", {}).get("value") == f"8{DOCTOR_ELSEWHERE}"
    )
    operation(chu_doctor, team, "remove", participant=member)
    assert other_doctor.get(f"/fhir/CarePlan/{made['id']}").status_code == 403
    assert other_doctor.get(f"/fhir/CarePlan?patient=Patient/{region.rri}").json()["total"] == 0
    assert chu_doctor.get("/fhir/CarePlan/0123456789abcdef").status_code == 404
    assert region.client.get(f"/fhir/CarePlan/{made['id']}").status_code == 401


def test_the_coordination_file_shows_the_plan_and_applies_a_pathway(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    team, chu, nurse = circle
    page = nurse.get(f"/coordination/{team}")
    assert page.status_code == 200
    assert "Plan de soins" in page.text and 'id="aucun-plan"' in page.text
    picker = page.text.split('<select id="parcours"')[1].split("</select>")[0]
    assert picker.count("<option") == 5
    assert "Suivi post-greffe rénale (première année)</option>" in picker  # its roles are here
    assert "rôles à inviter : assistant social, coordinateur DAC" in picker
    before = _counts(db)
    form = {"parcours": "geriatrie-domicile", "debut": "2027-01-04", "csrf": "faux"}
    refused = nurse.post(f"/coordination/{team}/parcours", data=form, follow_redirects=False)
    assert refused.status_code == 403 and _counts(db) == before
    form = {**form, "csrf": csrf_of(page.text), "parcours": "suivi-perinatal"}
    wrong = nurse.post(f"/coordination/{team}/parcours", data=form, headers={"Accept": "text/html"})
    assert wrong.status_code == 422 and "sage-femme" in wrong.text  # nobody holds it
    assert _counts(db) == before

    form["parcours"] = "suivi-greffe-renale"
    applied = nurse.post(f"/coordination/{team}/parcours", data=form, follow_redirects=False)
    assert applied.status_code == 303, applied.text
    assert applied.headers["location"] == f"/coordination/{team}?message=parcours#plan"
    shown = chu.get(applied.headers["location"]).text
    section = shown.split('<section id="plan"')[1].split("</section>")[0]
    assert "Parcours appliqué" in section
    assert "Suivi post-greffe rénale (première année)" in section and "(actif)" in section
    assert "Du 04/01/2027" in section
    assert "Fonction du greffon stable" in section and "pour le 04/01/2028" in section
    activities = section.split('<ul class="activites">')[1].split("</ul>")[0]
    assert "Bilan biologique J+7</span> — IDE" in activities
    assert "le 11/01/2027 · demandée" in activities
    assert "Consultation néphrologue de transplantation M3</span> — néphrologue" in activities
    assert "le 04/04/2027 · planifié" in activities
    # The education session was proposed to the circle's IDE: its appointment's state.
    session_line = activities.split("traitement immunosuppresseur")[1].split("</li>")[0]
    assert '<a href="#rendez-vous">rendez-vous proposé</a>' in session_line
    assert (
        "rendez-vous"
        not in activities.split("néphrologue de transplantation M3")[1].split("</li>")[0]
    )
    # The tasks made are the coordination file's open tasks too.
    assert "Bilan biologique J+7 — IDE" in shown.split('<ul id="taches">')[1].split("</ul>")[0]
