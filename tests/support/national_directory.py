"""A stand-in for the national health directory's write API (outside the platform: the
fake the tests may use): FHIR resources keyed by identifier, a conditional ``PATCH
[type]?identifier=system|value`` applying the FHIR Patch operations operators send for
mailboxes (``delete`` of a ``telecom.where(value = '…')``, ``add`` of a ``telecom``), 404 when
no resource matches, 412 when several do, 401 without the API key."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "cle-de-test"
_WHERE = re.compile(r"^(\w+)\.telecom\.where\(value = '((?:[^'\\]|\\.)*)'\)$")


@dataclass
class NationalDirectory:
    url: str = ""
    resources: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, identifier: str, *telecom: dict[str, Any]) -> None:
        resource = {"resourceType": kind, "telecom": list(telecom)}
        self.resources.setdefault((kind, identifier), []).append(resource)

    def telecom(self, kind: str, identifier: str) -> list[dict[str, Any]]:
        [resource] = self.resources[(kind, identifier)]
        return list(resource["telecom"])


def _apply(resource: dict[str, Any], body: dict[str, Any]) -> str | None:
    """Apply the patch; an error message when it is not one this fake understands."""
    if body.get("resourceType") != "Parameters":
        return "not a Parameters resource"
    for operation in body.get("parameter", []):
        parts = {p["name"]: p for p in operation.get("part", [])}
        kind = parts.get("type", {}).get("valueCode")
        path = parts.get("path", {}).get("valueString", "")
        if kind == "delete" and (match := _WHERE.match(path)):
            value = re.sub(r"\\(.)", r"\1", match.group(2))
            resource["telecom"] = [t for t in resource["telecom"] if t.get("value") != value]
        elif kind == "add" and path == resource["resourceType"]:
            if parts.get("name", {}).get("valueString") != "telecom":
                return "only telecom is added"
            resource["telecom"].append(parts["value"]["valueContactPoint"])
        else:
            return f"unsupported operation {kind} {path}"
    return None


@contextmanager
def national_directory() -> Iterator[NationalDirectory]:
    state = NationalDirectory()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PATCH(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.headers.get("ESANTE-API-KEY") != API_KEY:
                return self._answer(401, {"resourceType": "OperationOutcome"})
            if self.headers.get("Content-Type") != "application/fhir+json":
                return self._answer(415, {"resourceType": "OperationOutcome"})
            parts = urlsplit(self.path)
            kind = parts.path.strip("/").rsplit("/", 1)[-1]
            [identifier] = parse_qs(parts.query).get("identifier", [""])
            body = json.loads(raw)
            with lock:
                state.patches.append({"kind": kind, "identifier": identifier, "body": body})
                found = state.resources.get((kind, identifier), [])
                if not found:
                    return self._answer(404, {"resourceType": "OperationOutcome"})
                if len(found) > 1:
                    return self._answer(412, {"resourceType": "OperationOutcome"})
                changed = copy.deepcopy(found[0])  # a patch applies whole or not at all
                if error := _apply(changed, body):
                    return self._answer(400, {"resourceType": "OperationOutcome", "text": error})
                found[0].update(changed)
                return self._answer(200, found[0])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
