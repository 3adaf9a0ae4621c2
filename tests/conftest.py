"""Test fixtures: a fresh database per test, built by the Alembic migrations, on SQLite or on a
real PostgreSQL server (``ENRS_TEST_BACKEND=postgresql``; the server is the local one, or
``ENRS_TEST_DATABASE_URL``). Each test gets a copy of a migrated template database.

The suite does not read the developer's configuration: the ``ENRS_*`` variables (but the two
above) are removed and the tests run in an empty folder, so no ``.env`` is read, by the tests
or by the ``enrs`` commands they start."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from enrs.accounts import service as accounts_service
from enrs.app import create_app
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.settings import Settings

if TYPE_CHECKING:  # Playwright is imported only when a browser test runs
    from playwright.sync_api import Browser

BACKEND = os.environ.get("ENRS_TEST_BACKEND", "sqlite")
PG_ADMIN_URL = os.environ.get(
    "ENRS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEST_CONTROL = frozenset({"ENRS_TEST_BACKEND", "ENRS_TEST_DATABASE_URL"})


@pytest.fixture(scope="session", autouse=True)
def isolated_from_the_developer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No ``ENRS_*`` variable but the test controls, and an empty working folder (no ``.env``)
    for the whole session; subprocesses inherit both."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ENRS_") and n not in TEST_CONTROL]:
            patch.delenv(name)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


def _pg_admin() -> object:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated template: a SQLite file path, or a PostgreSQL database name."""
    if BACKEND == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade_head(f"sqlite:///{path}")
        yield str(path)
        return
    name = f"enrs_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade_head(_pg_url(name))
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(template_db: str, tmp_path: Path) -> Iterator[str]:
    if BACKEND == "sqlite":
        path = tmp_path / "enrs.db"
        shutil.copyfile(template_db, path)
        yield f"sqlite:///{path}"
        return
    name = f"enrs_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # no .env, whatever the working folder
        data_dir=tmp_path / "var",
        database_url=database_url,
        base_url="http://testserver",
        oidc_issuer="",
        storage_backend="fs",
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


class Factory:
    """Creates accounts through the accounts service, committed."""

    def __init__(self, db: Database, client: TestClient) -> None:
        self.db = db
        self.client = client

    def user(
        self,
        username: str = "alice",
        *,
        roles: tuple[str, ...] = ("professional",),
        password: str = "Correct-horse-42!",
        rpps: str | None = None,
        totp: bool = False,
    ) -> str:
        with self.db.transaction() as session:
            user = accounts_service.create_user(
                session,
                username=username,
                display_name=username.title(),
                password=password,
                roles=list(roles),
                rpps=rpps,
                with_totp=totp,
            )
            return user.totp_secret or user.id

    def system_client(self, scope: str = "system/AuditEvent.rs") -> tuple[str, str]:
        with self.db.transaction() as session:
            created, secret = accounts_service.create_client(session, name="Test DPI", scope=scope)
            assert secret is not None
            return created.client_id, secret

    def token(self, scope: str = "system/AuditEvent.rs", ask: str | None = None) -> str:
        client_id, secret = self.system_client(scope)
        data = {"grant_type": "client_credentials"}
        if ask:
            data["scope"] = ask
        response = self.client.post("/oauth/token", data=data, auth=(client_id, secret))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


@pytest.fixture
def factory(db: Database, client: TestClient) -> Factory:
    return Factory(db, client)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Playwright driving Debian's Chromium (installed by `make test`)."""
    from playwright.sync_api import expect, sync_playwright

    from tests.support.browser import CHROMIUM_ARGS, chromium_path

    # Playwright's assertions wait 5 s by default: too short when the suite runs in parallel
    # on two cores (`make test`); a wrong page still fails, only later.
    expect.set_options(timeout=20_000)
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()
