"""``enrs serve`` as a user runs it: real process tree, several HTTP workers on one database."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tests.support.live_server import enrs_command, live_server

from enrs.kit.audit import verify_chain
from enrs.kit.db import Database


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        for kid in map(int, kids):
            out |= {kid} | _children(kid)
    return out


def test_two_workers_share_the_database_and_keys(tmp_path: Path, database_url: str) -> None:
    env = {"ENRS_DATA_DIR": str(tmp_path / "var"), "ENRS_DATABASE_URL": database_url}
    created = subprocess.run(
        enrs_command("clients", "create", "Load DPI", "--scope", "system/AuditEvent.rs"),
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    creds = json.loads(created.stdout)
    with live_server(data_dir=tmp_path / "var", database_url=database_url, workers=2) as server:
        # supervisor -> http listener -> uvicorn supervisor -> 2 workers
        assert len(_children(server.process.pid)) >= 3

        def one(_: int) -> tuple[int, int]:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                token = http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=(creds["client_id"], creds["client_secret"]),
                )
                bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
                search = http.get("/fhir/AuditEvent?_count=1", headers=bearer)
                return token.status_code, search.status_code

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(40)))
        assert results == [(200, 200)] * 40
        assert len(list((tmp_path / "var" / "keys" / "signing").glob("*.pem"))) == 1
    db = Database(database_url)
    report = verify_chain(db)
    db.dispose()
    assert report.ok and report.checked == 80
