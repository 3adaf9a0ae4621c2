"""The care circle's secure chat (issue 15): members post and read, others are refused, read
receipts and unread counts; the live feed (Server-Sent Events) of ``enrs serve`` with two HTTP
workers delivers to every member's open stream, replays what a reconnecting client missed, in
order, also after a restart, and stops delivering to a member removed from the circle."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import BACKEND, Factory
from tests.coordination.circles import doctor
from tests.coordination.conftest import logged_in
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, FHIR_JSON, Region
from tests.support.live_server import LiveServer, live_server


def _message(team: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "about": [{"reference": f"CareTeam/{team}"}],
        "payload": [{"contentString": text}],
        **extra,
    }


def _post(http: TestClient | httpx.Client, team: str, text: str, **extra: Any) -> Any:
    return http.post(
        "/fhir/Communication",
        json=_message(team, text, **extra),
        headers={"Content-Type": FHIR_JSON},
    )


def test_members_talk_and_others_are_refused(
    region: Region, factory: Factory, circle: tuple[str, TestClient, TestClient]
) -> None:
    team, chu, other = circle
    hostile = "<script>alert('x')</script> & <b>gras</b>"
    posted = _post(chu, team, hostile, recipient=[doctor(DOCTOR_ELSEWHERE)])
    assert posted.status_code == 201, posted.text
    assert posted.json()["payload"] == [{"contentString": hostile}]  # kept as text, as written
    assert posted.json()["topic"] == {"text": "Général"}
    assert _post(other, team, "Pansement fait", topic={"text": "Soins"}).status_code == 201

    history = other.get(f"/fhir/Communication?about=CareTeam/{team}").json()
    assert [e["resource"]["payload"][0]["contentString"] for e in history["entry"]] == [
        hostile,
        "Pansement fait",
    ]
    soins = chu.get(f"/fhir/Communication?about=CareTeam/{team}&topic=Soins").json()
    assert soins["total"] == 1

    stranger = logged_in(region, factory, "dr.autre", DOCTOR_AT_CHU[:-1] + "9")
    assert _post(stranger, team, "Bonjour").status_code == 403
    assert stranger.get(f"/fhir/Communication?about=CareTeam/{team}").status_code == 403
    assert _post(chu, team, "x" * 5001).status_code == 422
    assert _post(chu, team, "  ").status_code == 422
    assert _post(chu, team, "Bonjour", recipient=[doctor("10000099999")]).status_code == 422
    assert chu.get("/fhir/Communication").status_code == 400

    # Unread counts and read receipts.
    counts = {u["topic"]: u["unread"] for u in other.get("/api/coordination/unread").json()}
    assert counts == {"Général": 1, "Soins": 0}
    first = history["entry"][0]["resource"]["id"]
    read = other.post("/api/coordination/read", json={"team": team, "message": first})
    assert read.status_code == 204
    counts = {u["topic"]: u["unread"] for u in other.get("/api/coordination/unread").json()}
    assert counts == {"Général": 0, "Soins": 0}
    assert (
        other.post("/api/coordination/read", json={"team": team, "message": "x"}).status_code == 404
    )


class Stream:
    """An open ``/api/coordination/stream``, read by a thread into a queue of events."""

    def __init__(self, base_url: str, cookie: str, last_event_id: str | None = None) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.client = httpx.Client(
            base_url=base_url, cookies={"enrs_session": cookie}, timeout=httpx.Timeout(30, read=60)
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last_id: str | None = last_event_id
        self._response = self.client.send(
            self.client.build_request("GET", "/api/coordination/stream", headers=headers),
            stream=True,
        )
        assert self._response.status_code == 200, self._response.read()
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self._response.iter_lines():
                if line.startswith("id: "):
                    event["id"] = line[4:]
                    self.last_id = line[4:]
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif line == "":
                    if "data" in event:
                        self.events.put(event)
                    event = {}
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.events.get(timeout=timeout)

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self._response.close()
        self.client.close()


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """``enrs serve`` with two HTTP workers on the tests' database, started on demand."""

    def start() -> Any:
        return live_server(data_dir=tmp_path / "var", database_url=database_url, workers=2)

    yield start


def _text(event: dict[str, Any]) -> str:
    assert event["event"] == "message", event
    return str(event["data"]["text"])


def _drop_the_brokers_connections(database_url: str) -> int:
    """Cut every connection ``LISTEN``-ing on the test's database (the HTTP workers' wakers):
    how many. What a PostgreSQL restart or a network cut does to them."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND query LIKE 'LISTEN %'"
                    )
                ).all()
            )
    finally:
        engine.dispose()


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL is the broker (SQLite: polled)")
def test_the_brokers_connection_lost_loses_no_message(
    circle: tuple[str, TestClient, TestClient], serve: Any, database_url: str
) -> None:
    """The workers' ``LISTEN`` connections are cut while a member's stream is open: the
    messages sent meanwhile still reach it, in order (read from the outbox, woken when the
    waker listens again)."""
    team, chu, other = circle
    with serve() as server:
        stream = Stream(server.base_url, other.cookies["enrs_session"])
        cookies = {"enrs_session": chu.cookies["enrs_session"]}
        with httpx.Client(base_url=server.base_url, cookies=cookies) as http:
            assert _post(http, team, "Avant la coupure").status_code == 201
            assert _text(stream.next()) == "Avant la coupure"
            assert _drop_the_brokers_connections(database_url) >= 1
            for text_ in ("Pendant", "Juste après"):
                assert _post(http, team, text_).status_code == 201
            assert [_text(stream.next()), _text(stream.next())] == ["Pendant", "Juste après"]
            assert _post(http, team, "Plus tard").status_code == 201
            assert _text(stream.next()) == "Plus tard"
        stream.close()


def test_the_live_feed_reaches_every_member_and_replays_what_was_missed(
    circle: tuple[str, TestClient, TestClient], serve: Any
) -> None:
    team, chu, other = circle
    chu_cookie, other_cookie = chu.cookies["enrs_session"], other.cookies["enrs_session"]
    with serve() as server:
        server: LiveServer
        streams = [Stream(server.base_url, c) for c in (chu_cookie, other_cookie) for _ in (1, 2)]
        with httpx.Client(base_url=server.base_url, cookies={"enrs_session": chu_cookie}) as http:
            started = time.monotonic()
            assert _post(http, team, "Sortie prévue demain").status_code == 201
            for stream in streams:  # two browsers each, whatever worker serves them
                assert _text(stream.next()) == "Sortie prévue demain"
            assert time.monotonic() - started < 5
            missed_from = streams[3].last_id
            streams[3].close()
            for text in ("Premier", "Second"):
                assert _post(http, team, text).status_code == 201
        for stream in streams[:3]:
            assert [_text(stream.next()), _text(stream.next())] == ["Premier", "Second"]
            stream.close()
    # After a restart, a client reconnecting with its last event id gets what it missed.
    with serve() as server:
        again = Stream(server.base_url, other_cookie, missed_from)
        assert [_text(again.next()), _text(again.next())] == ["Premier", "Second"]
        with httpx.Client(base_url=server.base_url, cookies={"enrs_session": chu_cookie}) as http:
            assert _post(http, team, "Après redémarrage").status_code == 201
            assert _text(again.next()) == "Après redémarrage"
            # Removed from the circle: the open stream gets nothing more.
            circle_now = http.get(f"/fhir/CareTeam/{team}").json()
            member = next(
                p["id"]
                for p in circle_now["participant"]
                if p["member"]["identifier"]["value"] == f"8{DOCTOR_ELSEWHERE}"
            )
            removed = http.post(
                f"/fhir/CareTeam/{team}/$remove",
                json={
                    "resourceType": "Parameters",
                    "parameter": [{"name": "participant", "valueString": member}],
                },
                headers={"Content-Type": FHIR_JSON},
            )
            assert removed.status_code == 200, removed.text
            mine = Stream(server.base_url, chu_cookie)
            assert _post(http, team, "Hors du cercle").status_code == 201
            assert _text(mine.next()) == "Hors du cercle"
            assert again.nothing_within(1.5)
            mine.close()
        again.close()
