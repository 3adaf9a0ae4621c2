"""Social and medico-social workers in a care circle (issue 15; Code de la santé publique
L1110-4 / L1110-12): in the circles they are a current member of they read the circle, its plan
and the DAC pathway's tasks, change the tasks given to them, write in the chat, read the agenda
and fill in the EPICES grid; they are not health professionals, so the document repository
(DocumentReference, Binary, a chat's attachments included) and the identity registry (the INS)
refuse them, and what they do not manage (inviting, applying a pathway) too. Out of the circle,
nothing. Driven over HTTP as their browser does."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from enrs.coordination import notify_mail
from enrs.coordination.notify_models import Notification, NotificationMail
from enrs.coordination.task_fhir import TASK_CARE_TEAM
from enrs.identity import service as identity_service
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.coordination.circles import doctor, make_circle, operation
from tests.coordination.test_notify import drain
from tests.directory.test_import import line, rpps, run, write
from tests.documents.world import (
    CHU,
    CHU_OID,
    CLINIC,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    FHIR_JSON,
    IPP,
    Region,
    bundle,
    pdf,
)
from tests.support.identities import person
from tests.support.portal import csrf_of, log_in

SOCIAL_WORKER = rpps(3)
INS = "261049720912388"  # Marie-Line JOSEPH's NIR, born April 1961 in Fort-de-France
EPICES_URL = "https://enrs.fr/fhir/Questionnaire/epices"
YES_NO = "http://terminology.hl7.org/CodeSystem/v2-0136"


@pytest.fixture
def social(region: Region, factory: Factory, tmp_path: Path) -> TestClient:
    """A social worker (TRE_G15 41) of the clinic, listed in the directory, logged in with
    the ``social`` role their profession gives; the patient's identity is qualified (INS)."""
    worker = {"Code profession": "41", "Libellé profession": "Assistant de service social"}
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612020000.txt",
        line(1, site=CHU),
        line(2, site=CLINIC),
        line(3, site=CLINIC, **worker),
    )
    assert run(region.db, people).error is None
    config = region.app.state.identity_config
    qualified = person(CHU_OID, IPP, ins=INS, ins_system="1.2.250.1.213.1.4.8", status="QUAL")
    with region.db.transaction() as session:
        identity_service.feed(
            session, region.app.state.matcher, qualified, actor="test", config=config
        )
    factory.user("as.social", roles=("social",), rpps=SOCIAL_WORKER)
    return logged_in_as(region, "as.social")


@pytest.fixture
def dac(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient, social: TestClient
) -> str:
    """The DAC complex-case pathway applied to the patient's circle: the CHU's doctor made it,
    the clinic's doctor is its DAC coordinator, the social worker its social worker."""
    team = make_circle(region, chu_doctor, "Situation complexe").json()["id"]
    for browser, rpps_number, role in (
        (other_doctor, DOCTOR_ELSEWHERE, "coordinateur DAC"),
        (social, SOCIAL_WORKER, "assistant social"),
    ):
        invited = operation(chu_doctor, team, "invite", member=doctor(rpps_number), role=role)
        assert invited.status_code == 200, invited.text
        accepted = operation(browser, team, "accept")
        assert accepted.status_code == 200, accepted.text
    applied = chu_doctor.post(
        "/fhir/PlanDefinition/dac-situation-complexe/$apply",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "subject", "valueReference": {"reference": f"Patient/{region.rri}"}},
                {"name": "careTeam", "valueReference": {"reference": f"CareTeam/{team}"}},
            ],
        },
        headers={"Content-Type": FHIR_JSON},
    )
    assert applied.status_code == 201, applied.text
    return str(team)


def _refused(answer: Any) -> None:
    """403 with an OperationOutcome, as every refusal under /fhir."""
    assert answer.status_code == 403, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


def _message(team: str, *payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "about": [{"reference": f"CareTeam/{team}"}],
        "payload": list(payload),
    }


def _post(browser: TestClient, path: str, body: dict[str, Any]) -> Any:
    return browser.post(path, json=body, headers={"Content-Type": FHIR_JSON})


def _epices(region: Region) -> dict[str, Any]:
    answers = {f"q{n}": "Y" if n in {1, 5} else "N" for n in range(1, 12)}
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{EPICES_URL}|1",
        "status": "completed",
        "subject": {"reference": f"Patient/{region.rri}"},
        "item": [
            {"linkId": k, "answer": [{"valueCoding": {"system": YES_NO, "code": v}}]}
            for k, v in answers.items()
        ],
    }


def _document(region: Region) -> str:
    answer = region.provide(bundle((pdf(), "application/pdf", {"author_rpps": DOCTOR_AT_CHU})))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def _task(region: Region, team: str, title: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "extension": [{"url": TASK_CARE_TEAM, "valueReference": {"reference": f"CareTeam/{team}"}}],
        "status": "requested",
        "intent": "order",
        "code": {"text": title},
        "for": {"reference": f"Patient/{region.rri}"},
        **elements,
    }


def test_a_social_worker_coordinates_in_the_circle(
    region: Region, dac: str, social: TestClient, chu_doctor: TestClient
) -> None:
    team = dac
    assert social.get(f"/fhir/CareTeam/{team}").status_code == 200
    plans = social.get(f"/fhir/CarePlan?patient=Patient/{region.rri}")
    assert plans.status_code == 200, plans.text
    [plan] = [e["resource"] for e in plans.json()["entry"]]
    assert social.get(f"/fhir/CarePlan/{plan['id']}").status_code == 200
    assert social.get("/fhir/PlanDefinition/dac-situation-complexe").status_code == 200

    # The pathway's social evaluation is theirs: they see it and move it along.
    mine = social.get("/fhir/Task?owner=me")
    assert mine.status_code == 200, mine.text
    [task] = [e["resource"] for e in mine.json()["entry"]]
    assert task["code"]["text"].startswith("Évaluation sociale")
    moved = social.put(
        f"/fhir/Task/{task['id']}",
        json={**task, "status": "in-progress"},
        headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert moved.status_code == 200, moved.text
    # The circle's other tasks: seen, not theirs to change.
    every = social.get(f"/fhir/Task?patient=Patient/{region.rri}").json()["entry"]
    other = next(e["resource"] for e in every if e["resource"]["id"] != task["id"])
    _refused(
        social.put(
            f"/fhir/Task/{other['id']}",
            json={**other, "status": "completed"},
            headers={"Content-Type": FHIR_JSON},
        )
    )
    # They ask the circle for a task (to the DAC coordinator's role).
    asked = _post(
        social,
        "/fhir/Task",
        _task(region, team, "Certificat médical APA", performerType=[{"text": "coordinateur DAC"}]),
    )
    assert asked.status_code == 201, asked.text

    # The chat: they read and write; the agenda: the pathway's appointments.
    said = _post(social, "/fhir/Communication", _message(team, {"contentString": "Dossier APA"}))
    assert said.status_code == 201, said.text
    history = social.get(f"/fhir/Communication?about=CareTeam/{team}")
    assert history.status_code == 200
    assert [e["resource"]["payload"][0]["contentString"] for e in history.json()["entry"]] == [
        "Dossier APA"
    ]
    agenda = social.get(f"/fhir/Appointment?patient=Patient/{region.rri}")
    assert agenda.status_code == 200, agenda.text
    assert agenda.json()["total"] >= 1

    # The EPICES grid is theirs to fill in; the server scores it.
    filled = _post(social, "/fhir/QuestionnaireResponse", _epices(region))
    assert filled.status_code == 201, filled.text
    score = next(i for i in filled.json()["item"] if i["linkId"] == "score")
    assert score["answer"][0]["valueDecimal"] == 100.0
    assert social.get(f"/fhir/QuestionnaireResponse/{filled.json()['id']}").status_code == 200

    # What only a health professional of the circle does: invite, record a consent, apply a
    # pathway, make a plan; nor do they remove another member.
    _refused(operation(social, team, "invite", member=doctor(DOCTOR_AT_CHU), role="IDE"))
    _refused(operation(social, team, "consent", actor=doctor(DOCTOR_AT_CHU)))
    members = social.get(f"/fhir/CareTeam/{team}").json()["participant"]
    coordinator = next(
        p["id"]
        for p in members
        if p["member"].get("identifier", {}).get("value") == f"8{DOCTOR_AT_CHU}"
    )
    _refused(operation(social, team, "remove", participant=coordinator))
    _refused(_post(social, "/fhir/CarePlan", {**plan, "id": None}))


def test_a_social_worker_reads_no_clinical_document_nor_the_ins(
    region: Region, dac: str, social: TestClient, chu_doctor: TestClient, db: Database
) -> None:
    team = dac
    doc = _document(region)
    # The doctor's reads of the same patient are allowed (the circle is a care relationship).
    assert chu_doctor.get(f"/fhir/Binary/{doc}").status_code == 200
    _refused(social.get(f"/fhir/DocumentReference?patient=Patient/{region.rri}"))
    _refused(social.get(f"/fhir/DocumentReference/{doc}"))
    _refused(social.get(f"/fhir/Binary/{doc}"))
    _refused(social.get(f"/fhir/Patient/{region.rri}"))
    _refused(social.get(f"/fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{INS}"))
    assert social.get(f"/dossiers/{region.rri}").status_code == 403

    # A file the doctor sends in the chat is filed in the record: the social worker sees the
    # message, not the document; and files none themselves.
    data = base64.b64encode(pdf("Compte rendu de consultation")).decode()
    attachment = {"contentType": "application/pdf", "data": data, "title": "cr.pdf"}
    sent = _post(
        chu_doctor,
        "/fhir/Communication",
        _message(team, {"contentString": "CR joint"}, {"contentAttachment": attachment}),
    )
    assert sent.status_code == 201, sent.text
    attached = sent.json()["payload"][1]["contentReference"]["reference"]
    attached_id = attached.removeprefix("DocumentReference/")
    history = social.get(f"/fhir/Communication?about=CareTeam/{team}").json()
    assert [e["resource"]["payload"][0]["contentString"] for e in history["entry"]] == ["CR joint"]
    _refused(social.get(f"/fhir/Binary/{attached_id}"))
    _refused(social.get(f"/fhir/DocumentReference/{attached_id}"))
    assert social.get(f"/dossiers/{region.rri}/documents/{attached_id}/contenu").status_code == 403
    own = _post(
        social,
        "/fhir/Communication",
        _message(team, {"contentString": "Notification MDPH"}, {"contentAttachment": attachment}),
    )
    _refused(own)
    assert len(social.get(f"/fhir/Communication?about=CareTeam/{team}").json()["entry"]) == 1

    # Audited as a professional's calls: the refusals, and the chat read with the patient.
    with db.transaction(write=False) as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.agent_name == "As.Social")
        ).all()
    clinical = [r for r in records if r.resource_type in ("Binary", "DocumentReference")]
    assert len(clinical) == 5 and {r.outcome for r in clinical} == {"4"}
    chat = [r for r in records if r.resource_type == "Communication" and r.outcome == "0"]
    assert chat and {r.patient_ref for r in chat} == {f"Patient/{region.rri}"}


def test_out_of_the_circle_nothing_and_removed_means_out_at_once(
    region: Region, chu_doctor: TestClient, social: TestClient
) -> None:
    team = make_circle(region, chu_doctor, "Situation complexe").json()["id"]
    made = _post(
        chu_doctor, "/fhir/Task", _task(region, team, "Visite", owner=doctor(DOCTOR_AT_CHU))
    )
    assert made.status_code == 201, made.text
    task = made.json()["id"]

    def everything_refused(invited: bool = False) -> None:
        if not invited:  # the invited sees the circle, to accept it; nothing else
            _refused(social.get(f"/fhir/CareTeam/{team}"))
        _refused(social.get(f"/fhir/Task/{task}"))
        assert social.get(f"/fhir/Task?patient=Patient/{region.rri}").json()["total"] == 0
        assert social.get(f"/fhir/CarePlan?patient=Patient/{region.rri}").json()["total"] == 0
        _refused(social.get(f"/fhir/Communication?about=CareTeam/{team}"))
        _refused(_post(social, "/fhir/Communication", _message(team, {"contentString": "?"})))
        _refused(_post(social, "/fhir/QuestionnaireResponse", _epices(region)))
        _refused(_post(social, "/fhir/Task", _task(region, team, "x", owner=doctor(DOCTOR_AT_CHU))))
        assert social.get(f"/coordination/{team}").status_code == 403

    everything_refused()
    invited = operation(chu_doctor, team, "invite", member=doctor(SOCIAL_WORKER), role="ASS")
    assert invited.status_code == 200, invited.text
    everything_refused(invited=True)  # invited is not in
    accepted = operation(social, team, "accept")
    assert accepted.status_code == 200, accepted.text
    assert social.get(f"/fhir/Task/{task}").status_code == 200
    assert social.get(f"/coordination/{team}").status_code == 200

    member = next(
        p["id"]
        for p in accepted.json()["participant"]
        if p["member"]["identifier"]["value"] == f"8{SOCIAL_WORKER}"
    )
    removed = operation(chu_doctor, team, "remove", participant=member)
    assert removed.status_code == 200, removed.text
    everything_refused()


def test_the_portal_coordination_file_of_a_social_worker(
    region: Region, dac: str, social: TestClient, chu_doctor: TestClient
) -> None:
    team = dac
    _document(region)
    data = base64.b64encode(pdf("Compte rendu")).decode()
    attachment = {"contentType": "application/pdf", "data": data, "title": "cr-secret.pdf"}
    sent = _post(
        chu_doctor,
        "/fhir/Communication",
        _message(team, {"contentString": "CR joint"}, {"contentAttachment": attachment}),
    )
    assert sent.status_code == 201, sent.text
    doc_link = (
        "/documents/" + sent.json()["payload"][1]["contentReference"]["reference"].split("/")[1]
    )

    doctors = chu_doctor.get(f"/coordination/{team}")
    assert doctors.status_code == 200
    assert "Derniers documents" in doctors.text and f"INS {INS}" in doctors.text
    assert doc_link in doctors.text and 'id="fichier"' in doctors.text
    assert "Appliquer un parcours" in doctors.text

    page = social.get(f"/coordination/{team}")
    assert page.status_code == 200, page.text
    text = page.text
    # The circle, the plan, the tasks, the agenda, the chat, the forms: all there.
    assert "JOSEPH Marie-Line Rose" in text and "09/04/1961" in text
    for section in ("Cercle de soins", "Tâches en cours", "Plan de soins", "Rendez-vous"):
        assert section in text
    assert 'id="discussion"' in text and "CR joint" in text and "EPICES" in text
    # No documents, no INS, no link into the record, no file picker.
    assert "Derniers documents" not in text and 'class="documents"' not in text
    assert INS not in text and "/dossiers/" not in text
    assert doc_link not in text and "réservé aux professionnels de santé" in text
    assert 'id="fichier"' not in text and "Appliquer un parcours" not in text
    # The tasks: all listed, buttons on theirs only; another's move is refused.
    [mine] = [e["resource"]["id"] for e in social.get("/fhir/Task?owner=me").json()["entry"]]
    every = {
        e["resource"]["id"]
        for e in social.get("/fhir/Task?status=requested&patient=Patient/" + region.rri).json()[
            "entry"
        ]
    }
    assert len(every) == 5 and all(f'data-task="{t}"' in text for t in every)
    assert set(re.findall(rf"/coordination/{team}/taches/(\w+)", text)) == {mine}
    other = next(iter(every - {mine}))
    form = {"action": "accept", "version": "1", "csrf": csrf_of(text)}
    refused = social.post(f"/coordination/{team}/taches/{other}", data=form)
    assert refused.status_code == 403
    done = social.post(f"/coordination/{team}/taches/{mine}", data=form, follow_redirects=False)
    assert done.status_code == 303, done.text
    their_tasks = social.get("/taches")
    assert their_tasks.status_code == 200 and "Évaluation sociale" in their_tasks.text
    assert "Rédaction du PPCS" not in their_tasks.text  # the DAC coordinator's
    listed = social.get("/coordination")
    assert listed.status_code == 200 and "Situation complexe" in listed.text
    assert 'href="/coordination"' in social.get("/").text
    assert 'href="/dossiers"' not in social.get("/").text


def test_a_social_worker_account_and_circle_role_come_from_the_directory(
    region: Region, social: TestClient, chu_doctor: TestClient, factory: Factory
) -> None:
    """A social worker is invited by RPPS like any professional (the directory lists them);
    a person without a coordinating role (an auditor) is refused the coordination."""
    team = make_circle(region, chu_doctor).json()["id"]
    invited = operation(chu_doctor, team, "invite", member=doctor(SOCIAL_WORKER), role="ASS")
    assert invited.status_code == 200, invited.text
    names = {
        p["member"]["identifier"]["value"]: p["member"]["display"]
        for p in invited.json()["participant"]
        if "identifier" in p["member"]
    }
    assert f"8{SOCIAL_WORKER}" in names
    factory.user("auditeur", roles=("auditor",), rpps=None)
    auditor = logged_in_as(region, "auditeur")
    _refused(auditor.get(f"/fhir/CareTeam/{team}"))
    assert auditor.get("/coordination").status_code == 403


def logged_in_as(region: Region, username: str) -> TestClient:
    browser = TestClient(region.app)
    log_in(browser, username)
    return browser


def test_a_social_worker_is_notified_of_the_coordination_not_of_the_record(
    region: Region, dac: str, social: TestClient, chu_doctor: TestClient
) -> None:
    """The DAC pathway's task given to their role, a mention: on their notifications page;
    a new document of the circle's patient (told to the health professionals): not."""
    _document(region)
    mention = _message(dac, {"contentString": "Point APA ?"})
    mention["recipient"] = [doctor(SOCIAL_WORKER)]
    assert _post(chu_doctor, "/fhir/Communication", mention).status_code == 201
    drain(region.db)
    with region.db.transaction(write=False) as session:
        stored = {
            n.kind
            for n in session.scalars(select(Notification).where(Notification.rpps == SOCIAL_WORKER))
        }
    assert stored == {"task-assigned", "mention", "new-document"}  # the fan-out's, unchanged
    page = social.get("/notifications")
    assert page.status_code == 200, page.text
    assert "Tâche qui vous est attribuée" in page.text
    assert "Vous êtes mentionné(e) dans la messagerie" in page.text
    assert "Nouveau document" not in page.text
    assert re.search(r'id="notifications-non-lues"[^>]*>2<', page.text)
    assert "Nouveau document dans le dossier" in chu_doctor.get("/notifications").text

    # Mailed as shown: a social worker who chose mail is mailed their task and the mention,
    # not the new document (the doctor, who chose it too, is mailed everything of theirs).
    with region.db.transaction() as session:
        for who in (SOCIAL_WORKER, DOCTOR_ELSEWHERE):
            session.add(
                NotificationMail(
                    rpps=who, address=f"{who}@x.fr", since=datetime(2000, 1, 1, tzinfo=UTC)
                )
            )
    with region.db.transaction(write=False) as session:
        batches = {b.rpps: sorted(i.kind for i in b.items) for b in notify_mail.pending(session)}
        kinds = {
            n.kind
            for n in session.scalars(
                select(Notification).where(Notification.rpps == DOCTOR_ELSEWHERE)
            )
        }
    assert batches[SOCIAL_WORKER] == ["mention", "task-assigned"]
    assert "new-document" in kinds and sorted(kinds) == sorted(set(batches[DOCTOR_ELSEWHERE]))
