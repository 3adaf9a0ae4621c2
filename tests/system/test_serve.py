"""``enrs serve`` as a user runs it: real process tree, several HTTP workers on one database."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url
from tests.support.live_server import enrs_command, free_port, live_server

from enrs.kit.audit import verify_chain
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT

SECRET = "pw-never-logged-42"


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
        cwd=tmp_path,
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


def _production_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "ENRS_DATA_DIR": str(tmp_path / "var"),
        "ENRS_DATABASE_URL": database_url,
        "ENRS_HTTP_PORT": str(free_port()),
        "ENRS_MLLP_PORT": "0",
        "ENRS_DICOM_PORT": "0",
        "PATH": "/usr/bin:/bin",
    }


def test_production_start_refuses_the_placeholder_oid_root(
    tmp_path: Path, database_url: str
) -> None:
    refused = subprocess.run(
        enrs_command("serve"),
        env=_production_env(tmp_path, database_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert f"ENRS_OID_ROOT is the placeholder {PLACEHOLDER_OID_ROOT}" in refused.stderr
    assert "--dev" in refused.stderr
    assert not (tmp_path / "var" / "keys").exists()  # refused before preparing anything


def test_production_and_development_starts(tmp_path: Path, database_url: str) -> None:
    """With the region's root, production: /docs behind a login, secrets kept out of the log
    (at debug level). With --dev: the placeholder accepted with a warning, /docs open."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=SECRET)  # the test server trusts local connections
    secrets = {"ENRS_OIDC_CLIENT_SECRET": SECRET + "-oidc", "ENRS_S3_SECRET_ACCESS_KEY": SECRET}
    with live_server(
        data_dir=tmp_path / "prod",
        database_url=url.render_as_string(hide_password=False),
        dev=False,
        extra_env={"ENRS_OID_ROOT": "1.2.250.1.71.9", "ENRS_LOG_LEVEL": "debug", **secrets},
    ) as server:
        assert httpx.get(f"{server.base_url}/docs").status_code == 401
        assert httpx.get(f"{server.base_url}/openapi.json").status_code == 401
        assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    assert "placeholder" not in server.log() and SECRET not in server.log()
    with live_server(data_dir=tmp_path / "dev", database_url=database_url) as server:
        assert httpx.get(f"{server.base_url}/docs").status_code == 200
        assert httpx.get(f"{server.base_url}/openapi.json").json()["info"]["title"] == "ENRS"
    assert f"ENRS_OID_ROOT is the placeholder {PLACEHOLDER_OID_ROOT}" in server.log()


def test_a_port_in_use_is_said_before_anything_starts(tmp_path: Path, database_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_production_env(tmp_path, database_url), "ENRS_HTTP_PORT": str(port)}
        refused = subprocess.run(
            enrs_command("serve", "--dev"),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: port {port} on 127.0.0.1 is already in use (ENRS_HTTP_PORT): stop what "
        "listens there or choose another port"
    )
    assert not (tmp_path / "var" / "keys").exists()  # refused before preparing anything
