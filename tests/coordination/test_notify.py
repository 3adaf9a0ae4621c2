"""Notifications of the care circles' events to their members on the portal: an admission and
a discharge (the HL7 v2 feed's A01 / A03), a new document, a task assigned, a mention in the
chat; never to the one who caused it, never to someone out of the circle; the badge and the
page that lists them and marks them read."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from enrs.coordination import notify
from enrs.coordination.notify_models import Notification
from enrs.directory.identifiers import FINESS_SYSTEM
from enrs.identity import pam
from enrs.kit.db import Database
from enrs.kit.events import read_events
from enrs.kit.hl7v2 import parse_message
from enrs.kit.outbound.consumer import consume, is_behind
from tests.conftest import Factory
from tests.coordination.circles import doctor, operation
from tests.directory.test_import import rpps as rpps_number
from tests.documents.world import (
    CHU,
    CHU_OID,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    FHIR_JSON,
    IPP,
    Region,
    bundle,
    pdf,
)
from tests.identity.test_hl7 import msh, pid

Circle = tuple[str, TestClient, TestClient]


def drain(db: Database) -> None:
    """Run the portal's consumer until it has read every committed event."""
    while consume(db, notify.Inbox(), limit=3):  # small pages: the cursor moves page by page
        pass
    with db.transaction(write=False) as session:
        assert not is_behind(session, notify.Inbox())


def inbox(db: Database, rpps: str) -> list[tuple[str, str | None, str | None]]:
    """``(kind, focus, facility)`` of the professional's notifications, oldest first."""
    with db.transaction(write=False) as session:
        rows = session.scalars(
            select(Notification).where(Notification.rpps == rpps).order_by(Notification.id)
        )
        return [(n.kind, n.focus, n.facility) for n in rows]


def adt(region: Region, event: str, control: str) -> None:
    """An ADT message of the CHU's GAM for the region's patient, through the feed's handler
    (what the MLLP listener runs in the message's transaction)."""
    raw = msh(event, control, facility=f"CHU^{CHU_OID}^ISO") + pid(IPP, authority=CHU_OID)
    msg = parse_message(raw.encode())
    config = region.app.state.identity_config
    sender = pam.sender_of(msg, config)
    work = pam.feed(config, region.app.state.matcher, msg, sender)
    with region.db.transaction() as session:
        handled = work.apply(session)
    assert handled.ack == "AA"


def task(region: Region, team: str, owner: dict[str, Any], title: str = "Pansement") -> Any:
    body = {
        "resourceType": "Task",
        "extension": [
            {
                "url": "https://enrs.fr/fhir/StructureDefinition/task-care-team",
                "valueReference": {"reference": f"CareTeam/{team}"},
            }
        ],
        "status": "requested",
        "intent": "order",
        "code": {"text": title},
        "for": {"reference": f"Patient/{region.rri}"},
        **owner,
    }
    return body


def post_task(browser: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    made = browser.post("/fhir/Task", json=body, headers={"Content-Type": FHIR_JSON})
    assert made.status_code == 201, made.text
    return dict(made.json())


def put_task(browser: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    changed = browser.put(
        f"/fhir/Task/{body['id']}", json=body, headers={"Content-Type": FHIR_JSON}
    )
    assert changed.status_code == 200, changed.text
    return dict(changed.json())


def say(browser: TestClient, team: str, text: str, *mentioned: str) -> None:
    body = {
        "resourceType": "Communication",
        "about": [{"reference": f"CareTeam/{team}"}],
        "payload": [{"contentString": text}],
        "recipient": [doctor(rpps) for rpps in mentioned],
    }
    sent = browser.post("/fhir/Communication", json=body, headers={"Content-Type": FHIR_JSON})
    assert sent.status_code == 201, sent.text


def member_id(browser: TestClient, team: str, rpps: str) -> int:
    read = browser.get(f"/fhir/CareTeam/{team}").json()
    for participant in read["participant"]:
        ident = participant["member"].get("identifier", {})
        if ident.get("value") == f"8{rpps}":
            return int(participant["id"])
    raise AssertionError(f"{rpps} not in CareTeam/{team}")


def test_a_task_notifies_its_owner_never_the_one_who_assigned_it(
    region: Region, circle: Circle
) -> None:
    team, chu, other = circle
    made = post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    drain(region.db)
    assert inbox(region.db, DOCTOR_ELSEWHERE) == [("task-assigned", f"Task/{made['id']}", None)]
    assert inbox(region.db, DOCTOR_AT_CHU) == []  # they assigned it
    # Another change than its owner: nobody is told again.
    made = put_task(chu, {**made, "priority": "urgent"})
    # The owner gives it to the CHU's doctor: told; who takes it back for themselves: not.
    made = put_task(other, {**made, "owner": doctor(DOCTOR_AT_CHU)})
    made = put_task(other, {**made, "owner": doctor(DOCTOR_ELSEWHERE)})
    drain(region.db)
    assert inbox(region.db, DOCTOR_AT_CHU) == [("task-assigned", f"Task/{made['id']}", None)]
    assert len(inbox(region.db, DOCTOR_ELSEWHERE)) == 1
    # A task for a role of the circle: whoever holds it (the clinic's doctor is the IDE).
    by_role = task(region, team, {"performerType": [{"text": "IDE"}]}, "Prise de sang")
    role_task = post_task(chu, by_role)
    drain(region.db)
    focuses = [focus for _, focus, _ in inbox(region.db, DOCTOR_ELSEWHERE)]
    assert focuses == [f"Task/{made['id']}", f"Task/{role_task['id']}"]
    assert len(inbox(region.db, DOCTOR_AT_CHU)) == 1


def test_a_task_given_to_a_structure_notifies_its_professionals(
    region: Region, circle: Circle, factory: Factory
) -> None:
    """The structure's professionals known to the platform (an account, an activity at its
    site in the directory) are told; not who gave the task, not someone practising elsewhere."""
    team, chu, other = circle
    structure = {"identifier": {"system": FINESS_SYSTEM, "value": CHU}}
    assert operation(chu, team, "invite", member=structure, role="Établissement").is_success
    assert operation(chu, team, "accept").is_success  # the CHU's doctor, for the CHU
    factory.user("dr.ailleurs", rpps=rpps_number(3))  # an account, no activity at the CHU
    made = post_task(other, task(region, team, {"owner": structure}))
    drain(region.db)
    assert inbox(region.db, DOCTOR_AT_CHU) == [("task-assigned", f"Task/{made['id']}", None)]
    assert inbox(region.db, DOCTOR_ELSEWHERE) == []  # they gave it
    assert inbox(region.db, rpps_number(3)) == []
    # Given by the CHU's own doctor: nobody else at the CHU has an account, nobody is told.
    post_task(chu, task(region, team, {"owner": structure}, "Ordonnance"))
    drain(region.db)
    assert len(inbox(region.db, DOCTOR_AT_CHU)) == 1


def test_a_mention_notifies_the_one_mentioned(region: Region, circle: Circle) -> None:
    team, chu, _other = circle
    say(chu, team, "Bonjour à tous")  # no mention: no notification
    say(chu, team, "Pouvez-vous passer demain ?", DOCTOR_ELSEWHERE, DOCTOR_AT_CHU)
    drain(region.db)
    [(kind, focus, _)] = inbox(region.db, DOCTOR_ELSEWHERE)
    assert kind == "mention" and focus is not None and focus.startswith("Communication/")
    assert inbox(region.db, DOCTOR_AT_CHU) == []  # mentioning oneself tells nobody


def test_a_new_document_shared_with_the_circle_notifies_its_members(
    region: Region, circle: Circle
) -> None:
    _team, _chu, _other = circle
    filed = region.provide(bundle((pdf(), "application/pdf", {"author_rpps": DOCTOR_AT_CHU})))
    assert filed.status_code == 200, filed.text
    masked = region.provide(
        bundle((pdf("Secret"), "application/pdf", {"visibility": ("MASQUE_PS",)}))
    )
    assert masked.status_code == 200, masked.text
    drain(region.db)
    # Filed by the CHU's software: both members told, of the shared document only.
    for rpps in (DOCTOR_AT_CHU, DOCTOR_ELSEWHERE):
        [(kind, focus, _)] = inbox(region.db, rpps)
        assert kind == "new-document" and focus is not None
        assert focus.startswith("DocumentReference/")
    with region.db.transaction(write=False) as session:
        filed_events = [e for e in read_events(session) if e.name == "documents.filed"]
    assert len(filed_events) == 2
    assert filed_events[0].payload["origin"] == f"finess:{CHU}"
    assert set(filed_events[0].payload) == {"patient_id", "document", "origin"}  # ids only


def test_admission_and_discharge_notify_the_current_members_only(
    region: Region, circle: Circle
) -> None:
    team, chu, _other = circle
    adt(region, "A01", "adm1")
    # The clinic's doctor leaves the circle: not told of the discharge.
    gone = str(member_id(chu, team, DOCTOR_ELSEWHERE))
    left = operation(chu, team, "remove", participant=gone)
    assert left.status_code == 200, left.text
    adt(region, "A03", "dis1")
    adt(region, "A08", "upd1")  # an update: no event of the care circles
    drain(region.db)
    assert inbox(region.db, DOCTOR_AT_CHU) == [("admission", None, CHU), ("discharge", None, CHU)]
    assert inbox(region.db, DOCTOR_ELSEWHERE) == []  # removed before the fan-out of both
    with region.db.transaction(write=False) as session:
        names = [e.name for e in read_events(session) if e.name.startswith("encounter.")]
    assert names == ["encounter.admitted", "encounter.discharged"]


def test_the_coordination_file_shows_the_readers_unread_alerts_of_its_patient(
    region: Region, circle: Circle
) -> None:
    team, chu, other = circle
    assert 'id="alertes"' not in other.get(f"/coordination/{team}").text
    adt(region, "A01", "adm2")
    post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    drain(region.db)
    page = other.get(f"/coordination/{team}").text
    alerts = page.split('id="alertes"')[1].split("</section>")[0]
    assert "(2 non lues)" in alerts
    assert alerts.index("Tâche qui vous est attribuée") < alerts.index("Admission en établissement")
    assert f"FINESS {CHU}" in alerts
    # The CHU's doctor gave the task: their only alert is the admission.
    mine = chu.get(f"/coordination/{team}").text.split('id="alertes"')[1].split("</section>")[0]
    assert "(1 non lue)" in mine and "Tâche" not in mine
    # Marked read on the notifications page: gone from the file.
    csrf = re.search(r'name="csrf" value="([^"]+)"', other.get("/notifications").text)
    assert csrf is not None
    other.post("/notifications/lu", data={"csrf": csrf[1]})
    assert 'id="alertes"' not in other.get(f"/coordination/{team}").text


def test_the_consumer_writes_each_notification_once(region: Region, circle: Circle) -> None:
    team, chu, _other = circle
    post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    drain(region.db)
    drain(region.db)  # nothing new: nothing written again
    with region.db.transaction() as session:
        count = session.scalar(select(func.count(Notification.id)))
        # The same events consumed again (a cursor put back, say): nothing doubled.
        notify.Inbox().consume(session, read_events(session))
        assert session.scalar(select(func.count(Notification.id))) == count
    assert count == 1


def test_the_portal_lists_them_with_a_badge_and_marks_them_read(
    region: Region, circle: Circle
) -> None:
    team, chu, other = circle
    post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
    say(chu, team, "Merci de confirmer", DOCTOR_ELSEWHERE)
    drain(region.db)
    page = other.get("/notifications")
    assert page.status_code == 200
    assert re.search(r'id="notifications-non-lues"[^>]*>2<', page.text)
    assert "Tâche qui vous est attribuée" in page.text
    assert "Vous êtes mentionné(e) dans la messagerie" in page.text
    assert f'href="/coordination/{team}"' in page.text
    assert "Pansement" not in page.text and "confirmer" not in page.text  # no content
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    ids = re.findall(r'name="id" value="(\d+)"', page.text)
    assert csrf is not None and len(ids) == 2
    refused = other.post("/notifications/lu", data={"id": ids[0], "csrf": "faux"})
    assert refused.status_code == 403
    one = other.post("/notifications/lu", data={"id": ids[0], "csrf": csrf[1]})
    assert one.status_code == 200  # followed the redirect to the list
    assert re.search(r'id="notifications-non-lues"[^>]*>1<', one.text)
    # Another's notification is not theirs to mark.
    chu_page = chu.get("/notifications")
    chu_csrf = re.search(r'name="csrf" value="([^"]+)"', chu_page.text)
    assert chu_csrf is not None
    chu.post("/notifications/lu", data={"id": ids[1], "csrf": chu_csrf[1]})
    assert re.search(r'id="notifications-non-lues"[^>]*>1<', other.get("/notifications").text)
    every = other.post("/notifications/lu", data={"csrf": csrf[1]})
    assert "notifications-non-lues" not in every.text
    assert "Aucune notification." in chu.get("/notifications").text
