"""FHIR R4 ``Subscription`` (rest-hook) to the care circles' events: a professional's or a
facility's software's hook, a real HTTP server, gets a notification Bundle per event of the
patients whose circle has the subscriber, from the durable queue (in order, retried while it is
down); who may subscribe; a subscriber removed from the circle stops receiving at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.communicationrequest import (
    CommunicationRequest as FhirCommunicationRequest,
)

from enrs.accounts import service as accounts_service
from enrs.coordination.notify import EVENT_SYSTEM, NDE_EVENT_SYSTEM
from enrs.directory.identifiers import RPPS_SYSTEM
from enrs.identity.subscriptions import platform_dispatcher
from enrs.kit.db import Database
from enrs.kit.outbound.dispatcher import Dispatcher, Pace
from enrs.kit.outbound.queue import Backoff, statuses
from enrs.kit.security.scopes import scopes_for_roles
from enrs.settings import Settings
from tests.coordination.circles import doctor, operation
from tests.coordination.test_notify import member_id, post_task, say, task
from tests.documents.world import (
    CHU,
    CLINIC,
    DOCTOR_AT_CHU,
    DOCTOR_ELSEWHERE,
    FHIR_JSON,
    Region,
    bundle,
    pdf,
)
from tests.support.receivers import HttpReceiver
from tests.support.waiting import wait_until

Circle = tuple[str, TestClient, TestClient]
NDE = NDE_EVENT_SYSTEM
FAST = Pace(poll=0.05, batch=20, backoff=Backoff(first=0.1, most=0.3))


@contextmanager
def dispatching(db: Database, settings: Settings) -> Iterator[Dispatcher]:
    """``enrs serve``'s notifications listener, in a thread."""
    dispatcher = platform_dispatcher(db, settings, FAST)
    thread = threading.Thread(target=dispatcher.run)
    thread.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        thread.join(30)


def subscription(criteria: str, endpoint: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "suivi de mes patients",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": FHIR_JSON, **channel},
    }


def subscribe(http: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return http.post(
        "/fhir/Subscription", json=body, headers={"Content-Type": FHIR_JSON, **(headers or {})}
    )


def software(region: Region, db: Database, finess: str, scope: str) -> dict[str, str]:
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name=f"DPI {finess}", scope=scope, finess=finess
        )
    token = region.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(made.client_id, secret)
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def event_of(post: dict[str, Any]) -> tuple[str, str, str | None]:
    """``(kind, patient, what it is about)`` of a notification Bundle."""
    body = post["body"]
    assert body["resourceType"] == "Bundle" and body["type"] == "history"
    status, request = (e["resource"] for e in body["entry"])
    assert status["resourceType"] == "Parameters"
    params = {p["name"]: p for p in status["parameter"]}
    assert params["type"]["valueCode"] == "event-notification"
    focus = {p["name"]: p for p in params["notification-event"]["part"]}["focus"]
    assert focus["valueReference"]["reference"] == body["entry"][1]["fullUrl"]
    assert request["resourceType"] == "CommunicationRequest"
    about = request.get("about", [{}])[0].get("reference")
    return request["category"][0]["coding"][0]["code"], request["subject"]["reference"], about


def test_the_professional_role_may_subscribe() -> None:
    """``user/Subscription.crds``: make, read, search and end their own; no update."""
    granted = scopes_for_roles(["professional"])
    assert all(granted.allows("Subscription", letter, ["user"]) for letter in "crds")
    assert not granted.allows("Subscription", "u", ["user"])
    assert not scopes_for_roles(["social"]).allows("Subscription", "c", ["user"])


def test_a_professionals_hook_gets_the_events_of_their_circles(
    region: Region, circle: Circle, settings: Settings
) -> None:
    team, chu, other = circle
    hook = HttpReceiver().start()
    try:
        url = f"http://127.0.0.1:{hook.port}/hook"
        made = subscribe(
            other,
            subscription(
                f"CommunicationRequest?category=task-assigned,new-document,mention"
                f"&patient=Patient/{region.rri}",
                url,
                header=["X-Secret: s3"],
            ),
        )
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["status"] == "active" and made.headers["Location"].endswith(sub["id"])
        assert not sub["id"].isdigit()
        with dispatching(region.db, settings):
            first = post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
            post_task(chu, task(region, team, {"owner": doctor(DOCTOR_AT_CHU)}))  # not theirs
            filed = region.provide(bundle((pdf(), "application/pdf", {})))
            assert filed.status_code == 200, filed.text
            say(chu, team, "À voir", DOCTOR_ELSEWHERE)
            assert wait_until(lambda: len(hook.posts()) == 3)
        posts = hook.posts()
        assert {p["path"] for p in posts} == {"/hook"}
        assert posts[0]["headers"]["X-Secret"] == "s3"
        kinds = [event_of(p) for p in posts]
        patient = f"Patient/{region.rri}"
        assert kinds[0] == ("task-assigned", patient, f"Task/{first['id']}")
        assert [k[0] for k in kinds] == ["task-assigned", "new-document", "mention"]
        assert all(k[1] == patient for k in kinds)
        assert "Pansement" not in str(posts) and "À voir" not in str(posts)  # no content
        read = other.get(f"/fhir/Subscription/{sub['id']}")
        assert read.status_code == 200
        assert read.json()["criteria"] == (
            "CommunicationRequest?category=task-assigned,new-document,mention"
            f"&patient=Patient/{region.rri}"
        )
        assert chu.get(f"/fhir/Subscription/{sub['id']}").status_code == 404  # not theirs
        listed = other.get("/fhir/Subscription").json()
        assert [e["resource"]["id"] for e in listed["entry"]] == [sub["id"]]
        assert chu.delete(f"/fhir/Subscription/{sub['id']}").status_code == 404
        assert other.delete(f"/fhir/Subscription/{sub['id']}").status_code == 204
        assert other.get(f"/fhir/Subscription/{sub['id']}").json()["status"] == "off"
    finally:
        hook.stop()


def test_a_hook_subscribed_by_the_nde_event_type_gets_the_guides_notification(
    region: Region, circle: Circle, settings: Settings
) -> None:
    """The ANS *Notification d'événements* guide's criteria (``event-type``, a
    TRE_R254-TypeEvenement code or ours) and its notification: the event type (``DOC``
    national; a task given has no national code: ours), the event's and the emission's times,
    the subscription as ``basedOn``, the subscriber as ``recipient``."""
    team, chu, other = circle
    hook = HttpReceiver().start()
    try:
        url = f"http://127.0.0.1:{hook.port}/hook"
        criteria = f"CommunicationRequest?event-type={NDE_EVENT_SYSTEM}|DOC,task-assigned"
        made = subscribe(other, subscription(criteria, url))
        assert made.status_code == 201, made.text
        sub = made.json()
        assert sub["criteria"] == "CommunicationRequest?category=new-document,task-assigned"
        with dispatching(region.db, settings):
            filed = region.provide(bundle((pdf(), "application/pdf", {})))
            assert filed.status_code == 200, filed.text
            post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))
            say(chu, team, "À voir", DOCTOR_ELSEWHERE)  # a mention: not asked for
            assert wait_until(lambda: len(hook.posts()) == 2)
            assert not wait_until(lambda: len(hook.posts()) > 2, timeout=1)
        requests = [p["body"]["entry"][1]["resource"] for p in hook.posts()]
        assert [event_of(p)[0] for p in hook.posts()] == ["new-document", "task-assigned"]

        def extension(request: dict[str, Any], name: str) -> Any:
            found = {e["url"]: e for e in request["extension"]}
            return found[f"https://interop.esante.gouv.fr/ig/fhir/nde/StructureDefinition/{name}"]

        document, given = requests
        assert extension(document, "event-type")["valueCodeableConcept"]["coding"] == [
            {
                "system": NDE_EVENT_SYSTEM,
                "code": "DOC",
                "display": "Dépôt de document pour un patient",
            }
        ]
        [ours] = extension(given, "event-type")["valueCodeableConcept"]["coding"]
        assert (ours["system"], ours["code"]) == (EVENT_SYSTEM, "task-assigned")
        for request in requests:
            FhirCommunicationRequest.model_validate(request)
            assert request["basedOn"][0]["reference"].endswith(f"/Subscription/{sub['id']}")
            assert request["recipient"] == [
                {"identifier": {"system": RPPS_SYSTEM, "value": f"8{DOCTOR_ELSEWHERE}"}}
            ]
            happened = extension(request, "event-time")["valueDateTime"]
            sent = extension(request, "event-emission-time")["valueDateTime"]
            assert happened.endswith("Z") and happened <= sent
    finally:
        hook.stop()


def test_a_hook_that_is_down_gets_them_later_in_order(
    region: Region, circle: Circle, settings: Settings
) -> None:
    team, chu, other = circle
    hook = HttpReceiver()  # not started: down
    url = f"http://localhost:{hook.port}/hook"
    assert subscribe(other, subscription("CommunicationRequest", url)).status_code == 201
    with dispatching(region.db, settings):
        made = [
            post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}, f"T{n}"))
            for n in range(3)
        ]

        def failing() -> bool:
            with region.db.transaction(write=False) as session:
                [queue] = [s for s in statuses(session) if s.name.startswith("coordination:")]
            return queue.pending == 3 and queue.head_attempts >= 2 and bool(queue.head_error)

        assert wait_until(failing)
        state = other.get("/fhir/Subscription").json()["entry"][0]["resource"]
        assert state["status"] == "error" and "error" in state
        hook.start()
        try:
            assert wait_until(lambda: len(hook.posts()) == 3)
        finally:
            hook.stop()
    assert [event_of(p)[2] for p in hook.posts()] == [f"Task/{t['id']}" for t in made]


def test_a_facilitys_software_subscribes_for_its_structure(
    region: Region, circle: Circle, settings: Settings, db: Database
) -> None:
    team, chu, _other = circle
    scope = "system/Subscription.crds system/DocumentReference.crus system/Binary.r"
    chu_software = software(region, db, CHU, scope)
    clinic_software = software(region, db, CLINIC, scope)
    hook = HttpReceiver().start()
    url = f"http://127.0.0.1:{hook.port}/dpi"
    try:
        body = subscription("CommunicationRequest?category=task-assigned,new-document", url)
        # The CHU is not a member of the circle yet (its doctor is): refused.
        assert subscribe(region.client, body, chu_software).status_code == 403
        structure = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": CHU}}
        assert operation(chu, team, "invite", member=structure, role="Établissement").is_success
        assert operation(chu, team, "accept").is_success  # the CHU's doctor, for the CHU
        made = subscribe(region.client, body, chu_software)
        assert made.status_code == 201, made.text
        # The clinic is in no circle: refused, whatever its criteria.
        assert subscribe(region.client, body, clinic_software).status_code == 403
        with dispatching(region.db, settings):
            # Filed by the CHU's software: not told back; assigned to the CHU: told.
            filed = region.provide(bundle((pdf(), "application/pdf", {})), chu_software)
            assert filed.status_code == 200, filed.text
            given = post_task(chu, task(region, team, {"owner": structure}))
            assert wait_until(lambda: len(hook.posts()) == 1)
            say(chu, team, "Encore une", DOCTOR_ELSEWHERE)
            assert not wait_until(lambda: len(hook.posts()) > 1, timeout=1)  # not subscribed
        [post] = hook.posts()
        assert event_of(post) == ("task-assigned", f"Patient/{region.rri}", f"Task/{given['id']}")
        # The client reads its own subscriptions, the identity feed's too (none here).
        listed = region.client.get("/fhir/Subscription", headers=chu_software).json()
        assert listed["total"] == 1
        assert region.client.get("/fhir/Subscription/1", headers=chu_software).status_code == 404
    finally:
        hook.stop()


def test_a_removed_member_stops_receiving_at_once(
    region: Region, circle: Circle, settings: Settings
) -> None:
    team, chu, other = circle
    hook = HttpReceiver()  # down while the first event waits
    url = f"http://127.0.0.1:{hook.port}/hook"
    assert subscribe(other, subscription("CommunicationRequest", url)).status_code == 201
    with dispatching(region.db, settings):
        post_task(chu, task(region, team, {"owner": doctor(DOCTOR_ELSEWHERE)}))

        def queued() -> bool:
            with region.db.transaction(write=False) as session:
                [queue] = [s for s in statuses(session) if s.name.startswith("coordination:")]
            return queue.pending == 1 and queue.head_attempts >= 1

        assert wait_until(queued)
        gone = str(member_id(chu, team, DOCTOR_ELSEWHERE))
        assert operation(chu, team, "remove", participant=gone).status_code == 200
        hook.start()
        try:
            filed = region.provide(bundle((pdf(), "application/pdf", {})))
            assert filed.status_code == 200
            assert not wait_until(lambda: hook.posts(), timeout=1.5)
        finally:
            hook.stop()
    with region.db.transaction(write=False) as session:
        [queue] = [s for s in statuses(session) if s.name.startswith("coordination:")]
    assert (queue.pending, queue.sent, queue.rejected) == (0, 0, 1)
    assert queue.last_rejection == "the subscriber is no longer in the patient's care circle"


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"criteria": "CommunicationRequest?category=birthday"}, 422, "category"),
        ({"criteria": "CommunicationRequest?colour=red"}, 422, "unknown parameter"),
        (
            {"criteria": f"CommunicationRequest?event-type={NDE_EVENT_SYSTEM}|ESD"},
            422,
            "event-type",
        ),
        ({"criteria": "Observation"}, 422, "criteria"),
        ({"criteria": "CommunicationRequest?patient=Patient/NOBODY"}, 403, "no care circle"),
        ({"endpoint": "http://hooks.example.org/x"}, 422, "https"),
        ({"endpoint": "ftp://127.0.0.1/x"}, 422, "https"),
        ({"type": "websocket"}, 422, "rest-hook"),
        ({"criteria": "Patient"}, 403, "system client"),  # the identity feed's: software only
    ],
)
def test_bad_subscriptions_are_refused_and_change_nothing(
    region: Region, circle: Circle, change: dict[str, Any], status: int, says: str
) -> None:
    _team, _chu, other = circle
    body = subscription("CommunicationRequest", "https://dpi.example.org/hook")
    if "criteria" in change:
        body["criteria"] = change["criteria"]
    for key in ("endpoint", "type"):
        if key in change:
            body["channel"][key] = change[key]
    refused = subscribe(other, body)
    assert refused.status_code == status, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert says in refused.json()["issue"][0]["diagnostics"]
    assert other.get("/fhir/Subscription").json()["total"] == 0


def test_a_professional_in_no_circle_cannot_subscribe(
    region: Region, chu_doctor: TestClient
) -> None:
    body = subscription("CommunicationRequest", "https://dpi.example.org/hook")
    refused = subscribe(chu_doctor, body)
    assert refused.status_code == 403, refused.text
    anonymous = region.client.post(
        "/fhir/Subscription", json=body, headers={"Content-Type": FHIR_JSON}
    )
    assert anonymous.status_code == 401
