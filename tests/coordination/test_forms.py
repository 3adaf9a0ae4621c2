"""Evaluation forms (issue 15): the EPICES and Katz ADL grids shipped as Questionnaires, filled
in for a patient by the members of its care circle (QuestionnaireResponse), validated and
scored by the server, amended by their author (If-Match), listed and filled in on the
coordination file. Driven over HTTP as a professional's browser does; the scores checked
against examples computed by hand from the published coefficients."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.coordination import forms
from enrs.coordination.form_models import FormResponse
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.coordination.circles import doctor, make_circle, operation
from tests.documents.world import DOCTOR_ELSEWHERE, FHIR_JSON, Region
from tests.support.portal import csrf_of

EPICES_URL = "https://enrs.fr/fhir/Questionnaire/epices"
YES_NO = "http://terminology.hl7.org/CodeSystem/v2-0136"
EPICES_ITEMS = [f"q{n}" for n in range(1, 12)]


def _epices_answers(yes: set[int]) -> dict[str, str]:
    return {f"q{n}": "Y" if n in yes else "N" for n in range(1, 12)}


def _score(grid: str, answers: dict[str, str]) -> Decimal | None:
    definition = forms.definition(grid)
    given = [(link, [{"valueCoding": {"code": code}}]) for link, code in answers.items()]
    return forms.score(definition, forms.validate(definition, given))


def test_the_scores_are_the_published_ones() -> None:
    """EPICES: 75.14 plus the coefficient of each "yes" (Sass et al., BEH 2006); Katz ADL in
    its French scoring, 1 / 0.5 / 0 per activity."""
    assert set(forms.definitions()) == {"epices", "katz-adl"}
    # The least and the most precarious: 0 and 100 (75.14 - 75.14; 75.14 + 10.06 + 14.80).
    assert _score("epices", _epices_answers({2, 3, 4, 6, 7, 8, 9, 10, 11})) == Decimal("0.00")
    assert _score("epices", _epices_answers({1, 5})) == Decimal("100.00")
    assert _score("epices", _epices_answers(set())) == Decimal("75.14")
    # By hand: 75.14 + 10.06 - 8.28 - 6.51 - 9.47 - 7.10 = 53.84
    assert _score("epices", _epices_answers({1, 4, 6, 9, 11})) == Decimal("53.84")
    # By hand: 75.14 - 11.83 + 14.80 - 7.10 - 9.47 = 61.54
    assert _score("epices", _epices_answers({2, 5, 7, 9})) == Decimal("61.54")
    epices = forms.definition("epices")
    assert epices.meaning(Decimal("30.00")) == "Précarité (score ≥ 30)"
    assert epices.meaning(Decimal("29.99")).startswith("Pas de précarité")  # type: ignore[union-attr]

    activities = ["hygiene", "habillage", "toilettes", "locomotion", "continence", "repas"]
    autonomous = dict.fromkeys(activities, "autonome")
    assert _score("katz-adl", autonomous) == Decimal("6.00")
    # "hygiène corporelle 0.5, habillage 0.5, aller aux toilettes 1, locomotion 1,
    # continence 1, repas 1: 5/6"
    partial = {**autonomous, "hygiene": "aide-partielle", "habillage": "aide-partielle"}
    assert _score("katz-adl", partial) == Decimal("5.00")
    assert _score("katz-adl", dict.fromkeys(activities, "dependant")) == Decimal("0.00")
    assert _score("katz-adl", {**autonomous, "repas": "dependant"}) == Decimal("5.00")


def test_a_grid_that_cannot_be_scored_is_not_loaded() -> None:
    shipped = forms.definition("epices").resource
    twice = {**shipped, "item": [*shipped["item"], shipped["item"][0]]}
    with pytest.raises(ValueError, match="same linkId"):
        forms.definition_from(twice)
    writable = {
        **shipped,
        "item": [*shipped["item"][:-1], {**shipped["item"][-1], "readOnly": False}],
    }
    with pytest.raises(ValueError, match="read-only decimal"):
        forms.definition_from(writable)
    choice = {**shipped["item"][0], "answerOption": []}
    with pytest.raises(ValueError, match="answerOption"):
        forms.definition_from({**shipped, "item": [choice]})


def _response(region: Region, answers: dict[str, Any], **elements: Any) -> dict[str, Any]:
    items = [
        {"linkId": link, "answer": [{"valueCoding": {"system": YES_NO, "code": code}}]}
        for link, code in answers.items()
    ]
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{EPICES_URL}|1",
        "status": "completed",
        "subject": {"reference": f"Patient/{region.rri}"},
        "item": items,
        **elements,
    }


def _post(browser: TestClient, body: dict[str, Any]) -> Any:
    return browser.post(
        "/fhir/QuestionnaireResponse", json=body, headers={"Content-Type": FHIR_JSON}
    )


def _put(browser: TestClient, resource: dict[str, Any], if_match: str | None = None) -> Any:
    headers = {"Content-Type": FHIR_JSON, **({"If-Match": if_match} if if_match else {})}
    return browser.put(
        f"/fhir/QuestionnaireResponse/{resource['id']}", json=resource, headers=headers
    )


def _score_of(resource: dict[str, Any]) -> Any:
    return next(i for i in resource["item"] if i["linkId"] == "score")["answer"][0]


def _stored(db: Database) -> int:
    with db.transaction() as session:
        return len(session.scalars(select(FormResponse)).all())


def test_a_member_records_an_evaluation_the_server_scores(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    _, chu, other = circle
    sent = _response(region, _epices_answers({1, 4, 6, 9, 11}))
    sent["item"].append({"linkId": "score", "answer": [{"valueDecimal": 0}]})  # not trusted
    made = _post(chu, sent)
    assert made.status_code == 201, made.text
    resource = made.json()
    assert made.headers["ETag"] == 'W/"1"'
    assert made.headers["Location"].endswith(f"/QuestionnaireResponse/{resource['id']}")
    assert resource["status"] == "completed" and resource["questionnaire"] == f"{EPICES_URL}|1"
    assert resource["author"]["display"] == "Dr.Chu"
    assert resource["author"]["type"] == "Practitioner"
    score = _score_of(resource)
    assert score["valueDecimal"] == 53.84
    assert score["extension"][0]["valueString"] == "Précarité (score ≥ 30)"
    first = resource["item"][0]
    assert first["text"] == "Rencontrez-vous parfois un travailleur social ?"
    assert first["answer"][0]["valueCoding"] == {"system": YES_NO, "code": "Y", "display": "Oui"}

    # The other member reads it and finds it, by patient and by grid.
    read = other.get(f"/fhir/QuestionnaireResponse/{resource['id']}")
    assert read.status_code == 200 and _score_of(read.json())["valueDecimal"] == 53.84
    adl = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "Questionnaire/katz-adl",
        "subject": {"reference": f"Patient/{region.rri}"},
        "status": "completed",
        "item": [
            {"linkId": link, "answer": [{"valueCoding": {"code": "aide-partielle"}}]}
            for link in ("hygiene", "habillage", "toilettes", "locomotion", "continence", "repas")
        ],
    }
    katz = _post(other, adl)
    assert katz.status_code == 201, katz.text
    assert _score_of(katz.json())["valueDecimal"] == 3
    assert katz.json()["author"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    found = chu.get(f"/fhir/QuestionnaireResponse?patient=Patient/{region.rri}")
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [
        katz.json()["id"],
        resource["id"],
    ]  # newest first
    only = chu.get(
        "/fhir/QuestionnaireResponse",
        params={"patient": f"Patient/{region.rri}", "questionnaire": EPICES_URL},
    )
    assert [e["resource"]["id"] for e in only.json()["entry"]] == [resource["id"]]
    assert chu.get("/fhir/QuestionnaireResponse?questionnaire=epices").status_code == 400
    assert chu.get("/fhir/QuestionnaireResponse/0123456789abcdef").status_code == 404

    with db.transaction() as session:
        records = session.scalars(
            select(AuditRecord).where(
                AuditRecord.entity_ref == f"QuestionnaireResponse/{resource['id']}"
            )
        ).all()
    assert len(records) == 2  # created, read
    assert {r.patient_ref for r in records} == {f"Patient/{region.rri}"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda b: b["item"].append({"linkId": "q99", "answer": [{"valueString": "x"}]}), "q99"),
        (lambda b: b["item"].pop(4), "q5"),  # a required item unanswered
        (lambda b: b["item"][2].update(answer=[]), "q3"),  # answered with nothing
        (lambda b: b["item"][0].update(answer=[{"valueString": "Y"}]), "q1"),  # a string
        (lambda b: b["item"][0].update(answer=[{"valueBoolean": True}]), "q1"),
        (lambda b: b["item"][1].update(answer=[{"valueCoding": {"code": "peut-être"}}]), "q2"),
        (
            lambda b: b["item"][1].update(
                answer=[{"valueCoding": {"system": "http://other", "code": "Y"}}]
            ),
            "q2",
        ),
        (lambda b: b["item"].append(dict(b["item"][6])), "q7"),  # the item twice
        (lambda b: b["item"][7]["answer"].append({"valueCoding": {"code": "N"}}), "q8"),
    ],
    ids=["unknown", "required", "empty", "type", "boolean", "option", "system", "twice", "two"],
)
def test_an_invalid_response_is_refused_naming_the_item(
    region: Region,
    circle: tuple[str, TestClient, TestClient],
    db: Database,
    change: Any,
    named: str,
) -> None:
    _, chu, _ = circle
    body = _response(region, _epices_answers({1}))
    change(body)
    refused = _post(chu, body)
    assert refused.status_code == 422, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"item {named}:" in outcome["issue"][0]["diagnostics"]
    assert _stored(db) == 0


def test_a_malformed_or_misdirected_response_is_refused(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    _, chu, _ = circle
    valid = _response(region, _epices_answers(set()))
    several = _response(region, {})  # every required item named, not only the first
    said = _post(chu, several).json()["issue"][0]["diagnostics"]
    assert all(f"item {link}: is required" in said for link in EPICES_ITEMS)
    assert (
        _post(chu, {**valid, "questionnaire": "https://example.org/Questionnaire/phq9"}).status_code
        == 422
    )
    assert _post(chu, {**valid, "questionnaire": f"{EPICES_URL}|2"}).status_code == 422
    assert _post(chu, {**valid, "status": "in-progress"}).status_code == 422
    assert _post(chu, {**valid, "item": "q1=Y"}).status_code == 422
    unknown = {**valid, "subject": {"reference": "Patient/unknown"}}
    assert _post(chu, unknown).status_code == 422  # as for tasks: no such regional patient
    not_json = chu.post(
        "/fhir/QuestionnaireResponse", content=b"{", headers={"Content-Type": FHIR_JSON}
    )
    assert not_json.status_code == 400
    assert _stored(db) == 0


def test_only_current_members_of_the_patients_circle_reach_its_evaluations(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient, db: Database
) -> None:
    team = make_circle(region, chu_doctor).json()["id"]
    made = _post(chu_doctor, _response(region, _epices_answers({5}))).json()
    search = f"/fhir/QuestionnaireResponse?patient=Patient/{region.rri}"
    # Not in the circle: nothing recorded, read or found.
    assert _post(other_doctor, _response(region, _epices_answers({5}))).status_code == 403
    assert other_doctor.get(f"/fhir/QuestionnaireResponse/{made['id']}").status_code == 403
    assert other_doctor.get(search).status_code == 403
    assert other_doctor.get(f"/coordination/{team}/evaluations/epices").status_code == 403
    invited = operation(chu_doctor, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert invited.status_code == 200
    assert other_doctor.get(f"/fhir/QuestionnaireResponse/{made['id']}").status_code == 403

    accepted = operation(other_doctor, team, "accept").json()
    assert other_doctor.get(f"/fhir/QuestionnaireResponse/{made['id']}").status_code == 200
    assert other_doctor.get(search).json()["total"] == 1

    # Removed: out at once.
    member = next(
        p["id"]
        for p in accepted["participant"]
        if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
    )
    assert operation(chu_doctor, team, "remove", participant=member).status_code == 200
    assert other_doctor.get(f"/fhir/QuestionnaireResponse/{made['id']}").status_code == 403
    assert other_doctor.get(search).status_code == 403
    assert _post(other_doctor, _response(region, _epices_answers({5}))).status_code == 403
    assert _stored(db) == 1
    with db.transaction() as session:
        refusals = session.scalars(
            select(AuditRecord).where(
                AuditRecord.entity_ref == f"QuestionnaireResponse/{made['id']}",
                AuditRecord.outcome != "0",
            )
        ).all()
    assert refusals and all(r.patient_ref == f"Patient/{region.rri}" for r in refusals)


def test_its_author_amends_an_evaluation_and_a_stale_change_is_refused(
    region: Region, circle: tuple[str, TestClient, TestClient]
) -> None:
    _, chu, other = circle
    made = _post(chu, _response(region, _epices_answers(set()))).json()
    assert _score_of(made)["valueDecimal"] == 75.14

    changed = _response(region, _epices_answers({2}), id=made["id"], status="amended")
    amended = _put(chu, changed, 'W/"1"')
    assert amended.status_code == 200, amended.text
    assert amended.headers["ETag"] == 'W/"2"' and amended.json()["status"] == "amended"
    assert _score_of(amended.json())["valueDecimal"] == 63.31  # 75.14 - 11.83
    racing = _put(
        chu, {**changed, "item": _response(region, _epices_answers({3}))["item"]}, 'W/"1"'
    )
    assert racing.status_code == 412
    assert racing.json()["resourceType"] == "OperationOutcome"
    now = chu.get(f"/fhir/QuestionnaireResponse/{made['id']}")
    assert now.headers["ETag"] == 'W/"2"' and _score_of(now.json())["valueDecimal"] == 63.31

    assert _put(other, changed, 'W/"2"').status_code == 403  # another member: not the author
    assert _put(chu, {**changed, "status": "completed"}, 'W/"2"').status_code == 422
    katz = {**changed, "questionnaire": "https://enrs.fr/fhir/Questionnaire/katz-adl"}
    assert _put(chu, katz, 'W/"2"').status_code == 422
    elsewhere = {**changed, "subject": {"reference": "Patient/x"}}
    assert _put(chu, elsewhere, 'W/"2"').status_code == 422
    invalid = {**changed, "item": changed["item"][1:]}
    assert _put(chu, invalid, 'W/"2"').status_code == 422
    assert _put(chu, changed, "2").status_code == 400
    same = _put(chu, changed, 'W/"2"')  # nothing changed: no new version
    assert same.status_code == 200 and same.headers["ETag"] == 'W/"2"'


def test_the_grids_are_served_read_only(client: TestClient, chu_doctor: TestClient) -> None:
    listed = chu_doctor.get("/fhir/Questionnaire")
    assert listed.status_code == 200
    assert sorted(e["resource"]["id"] for e in listed.json()["entry"]) == ["epices", "katz-adl"]
    epices = chu_doctor.get("/fhir/Questionnaire/epices")
    assert epices.status_code == 200 and epices.json()["url"] == EPICES_URL
    weights = [
        o["extension"][0]["valueDecimal"]
        for i in epices.json()["item"]
        for o in i.get("answerOption", [])
        if o["valueCoding"]["code"] == "Y"
    ]
    assert weights == [10.06, -11.83, -8.28, -8.28, 14.8, -6.51, -7.1, -7.1, -9.47, -9.47, -7.1]
    by_name = chu_doctor.get("/fhir/Questionnaire?name=katz").json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == ["katz-adl"]
    assert chu_doctor.get("/fhir/Questionnaire/phq9").status_code == 404
    assert chu_doctor.get("/fhir/Questionnaire?title=x").status_code == 400
    written = chu_doctor.put("/fhir/Questionnaire/epices", json=epices.json())
    assert written.status_code == 405
    assert client.get("/fhir/Questionnaire/epices").status_code == 401


def test_the_coordination_file_lists_the_evaluations_and_fills_one_in(
    region: Region, circle: tuple[str, TestClient, TestClient], db: Database
) -> None:
    team, chu, other = circle
    page = chu.get(f"/coordination/{team}")
    assert page.status_code == 200
    section = page.text.split('id="evaluations"')[1].split("</section>")[0]
    assert "Aucune évaluation." in section
    assert f'href="/coordination/{team}/evaluations/epices"' in section

    form = chu.get(f"/coordination/{team}/evaluations/epices")
    assert form.status_code == 200
    assert form.text.count('type="radio"') == 22  # 11 questions, oui / non
    assert "Vivez-vous en couple ?" in form.text and 'name="score"' not in form.text
    fields = {"csrf": csrf_of(form.text), **_epices_answers({1, 4, 6, 9, 11})}
    url = f"/coordination/{team}/evaluations/epices"

    # One question left out, one answer made up: shown again, the errors next to them.
    partial = {**fields, "q2": "", "q3": "peut-être"}
    partial.pop("q2")
    refused = chu.post(url, data=partial, follow_redirects=False)
    assert refused.status_code == 422
    q2 = refused.text.split('id="question-q2"')[1].split("</fieldset>")[0]
    assert "réponse obligatoire" in q2
    q3 = refused.text.split('id="question-q3"')[1].split("</fieldset>")[0]
    assert "l&#39;une des réponses proposées" in q3
    q1 = refused.text.split('id="question-q1"')[1].split("</fieldset>")[0]
    assert 'class="error"' not in q1 and 'value="Y" checked' in q1  # the answers kept
    assert _stored(db) == 0
    forged = chu.post(url, data={**fields, "csrf": "x"}, follow_redirects=False)
    assert forged.status_code == 403 and _stored(db) == 0

    recorded = chu.post(url, data=fields, follow_redirects=False)
    assert recorded.status_code == 303, recorded.text
    assert recorded.headers["location"] == f"/coordination/{team}#evaluations"
    listed = other.get(f"/coordination/{team}").text.split('id="evaluations"')[1]
    listed = listed.split("</section>")[0]
    assert "Score EPICES" in listed and '<span class="score">53,84</span>' in listed
    assert "Précarité (score ≥ 30)" in listed and "Dr.Chu" in listed
    # The same rule as the API: what the portal recorded is found there.
    found = other.get(f"/fhir/QuestionnaireResponse?patient=Patient/{region.rri}").json()
    assert _score_of(found["entry"][0]["resource"])["valueDecimal"] == 53.84
