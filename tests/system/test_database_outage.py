"""When PostgreSQL goes away: /readyz says so, requests fail cleanly (503, nothing half
written), and the platform recovers by itself when the database comes back.

This runs on PostgreSQL whatever ENRS_TEST_BACKEND says: the outage is a network fault,
made real by a TCP proxy between the platform and the server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from tests.conftest import PG_ADMIN_URL
from tests.support.tcp_proxy import TcpProxy

from enrs.accounts.models import Client
from enrs.app import create_app
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.settings import Settings


@pytest.fixture
def proxied_pg() -> Iterator[tuple[TcpProxy, str]]:
    name = f"enrs_outage_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name)
    upgrade_head(url.render_as_string(hide_password=False))
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield proxy, proxied
    proxy.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_outage_then_recovery(proxied_pg: tuple[TcpProxy, str], tmp_path: object) -> None:
    proxy, url = proxied_pg
    settings = Settings(data_dir=f"{tmp_path}/var", database_url=url, base_url="http://testserver")
    app = create_app(settings)
    db: Database = app.state.db
    with TestClient(app) as client:
        created = client.post("/login", data={})  # warm the pool
        assert created.status_code in (400, 401)
        assert client.get("/readyz").status_code == 200
        proxy.cut()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "unavailable" in ready.json()["checks"]["database"]
        down = client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("x", "y")
        )
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        fhir = client.get("/fhir/AuditEvent", headers={"Authorization": "Bearer x.y.z"})
        assert fhir.status_code in (401, 503)
        assert client.get("/healthz").status_code == 200  # the process itself is alive
        proxy.restore()
        assert client.get("/readyz").status_code == 200
        with db.transaction() as session:
            assert session.scalar(select(func.count()).select_from(Client)) == 0
        token = client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=("x", "y")
        )
        assert token.status_code == 401  # back to normal answers
