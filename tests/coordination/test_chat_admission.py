"""The chat's live feed holds no database turn while it is open (``kit/admission.py``): with a
worker admitting a single request at a time, a member's open stream leaves the turn to the
other member, whose message it then delivers. Were the stream counted, a worker's open streams
would take every turn and refuse every other request.

The stream is driven over ASGI in the test's event loop (its response start and first frame
read as they are sent, then a disconnect), the message sent through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import httpx
from fastapi.testclient import TestClient

from enrs.kit.admission import Admission
from tests.documents.world import FHIR_JSON

COOKIE = "enrs_session"


class OpenStream:
    """``GET /api/coordination/stream`` in flight on ``app``: what it sent, and its hang-up."""

    def __init__(self, app: Any, cookie: str) -> None:
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self._asked = False
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "root_path": "", "query_string": b"",
            "path": "/api/coordination/stream", "raw_path": b"/api/coordination/stream",
            "headers": [(b"host", b"testserver"), (b"cookie", f"{COOKIE}={cookie}".encode()),
                        (b"accept", b"text/event-stream")],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self.sent.put))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), 15)

    async def message(self) -> dict[str, Any]:
        """The next ``message`` event's data."""
        while True:
            chunk = (await self.next()).get("body", b"").decode()
            for block in chunk.split("\n\n"):
                lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if lines.get("event") == "message":
                    data: dict[str, Any] = json.loads(lines["data"])
                    return data

    async def close(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 15)


def test_an_open_stream_holds_no_turn(circle: tuple[str, TestClient, TestClient]) -> None:
    team, chu, other = circle
    app = chu.app
    app.state.admission = admission = Admission(1, timeout=5)
    chu_cookie, other_cookie = chu.cookies[COOKIE], other.cookies[COOKIE]

    async def scenario() -> None:
        stream = OpenStream(app, chu_cookie)
        start = await stream.next()
        assert (start["type"], start["status"]) == ("http.response.start", 200)
        assert (await stream.next())["body"].startswith(b"retry: ")
        assert (admission.admitted, admission.waiting) == (0, 0)  # open, and holding nothing
        message = {
            "resourceType": "Communication",
            "about": [{"reference": f"CareTeam/{team}"}],
            "payload": [{"contentString": "Passage infirmier à 18 h"}],
        }
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            cookies={COOKIE: other_cookie},
            timeout=15,
        ) as http:
            posted = await http.post(
                "/fhir/Communication", json=message, headers={"Content-Type": FHIR_JSON}
            )
            assert posted.status_code == 201, posted.text
        assert (await stream.message())["text"] == "Passage infirmier à 18 h"
        assert admission.admitted == 0
        await stream.close()

    anyio.run(scenario)
