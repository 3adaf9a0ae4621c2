"""Login through an external OpenID Connect provider (a real ``oidc-provider`` server, standing
in for Pro Santé Connect), in a real browser against ``enrs serve``: the person is mapped to a
local account by the RPPS claim, or gets one when the national directory lists them."""

from __future__ import annotations

import html
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import select
from tests.directory.test_import import line, rpps, write
from tests.support.live_server import LiveServer, enrs_command, free_port, live_server
from tests.support.oidc_provider import ProviderAccount, run_oidc_provider

from enrs.accounts.models import User
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database

KNOWN = ProviderAccount(
    id="claire",
    password="psc-pass-1",
    rpps="10001234565",  # the demo doctor's
    given_name="Claire",
    family_name="Martin",
)
UNKNOWN = ProviderAccount(id="intrus", password="psc-pass-2", rpps="19999999999")
# No account here, but the national directory lists her (imported before the server starts).
NEWCOMER = ProviderAccount(id="nouvelle", password="psc-pass-3", rpps=rpps(5))


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/auth/oidc/callback"
    with run_oidc_provider(
        client_id="enrs-test",
        client_secret="provider-secret-123",
        redirect_uris=[callback],
        accounts=[KNOWN, UNKNOWN, NEWCOMER],
    ) as provider:
        data_dir = tmp_path / "var"
        env = {
            "ENRS_DATA_DIR": str(data_dir),
            "ENRS_DATABASE_URL": database_url,
            "PATH": "/usr/bin",
        }
        subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
        listed = write(tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt", line(5))
        directory = enrs_command("directory", "import", "--quiet", str(listed))
        subprocess.run(directory, env=env, check=True, capture_output=True)
        oidc = {
            "ENRS_OIDC_ISSUER": provider.issuer,
            "ENRS_OIDC_CLIENT_ID": "enrs-test",
            "ENRS_OIDC_CLIENT_SECRET": "provider-secret-123",
        }
        with live_server(
            data_dir=data_dir, database_url=database_url, port=port, extra_env=oidc
        ) as running:
            yield running


def _login_at_provider(page: Page, server: LiveServer, account: ProviderAccount) -> None:
    page.goto(server.base_url + "/login")
    page.click("#oidc-login")
    page.wait_for_selector("#login-form")
    page.fill("#login", account.id)
    page.fill("#password", account.password)
    page.click("#login-submit")


@pytest.mark.browser
def test_professional_logs_in_with_the_external_provider(
    browser: Browser, server: LiveServer, database_url: str
) -> None:
    page = browser.new_page()
    _login_at_provider(page, server, KNOWN)
    page.wait_for_url(server.base_url + "/")
    assert "Dr Claire Martin" in page.content()
    assert page.locator("h1").inner_text() == "Services de la plateforme"
    db = Database(database_url)
    with db.sessionmaker() as session:
        logins = list(session.scalars(select(AuditRecord).where(AuditRecord.category == "login")))
    db.dispose()
    assert [(r.outcome, r.agent_name) for r in logins] == [("0", "Dr Claire Martin")]


@pytest.mark.browser
def test_unknown_rpps_is_refused(browser: Browser, server: LiveServer, database_url: str) -> None:
    page = browser.new_page()
    _login_at_provider(page, server, UNKNOWN)
    page.wait_for_selector(".error")
    assert "19999999999" in html.unescape(page.locator(".error").inner_text())
    assert page.context.cookies(server.base_url) == [] or all(
        c["name"] != "enrs_session" for c in page.context.cookies(server.base_url)
    )
    assert page.goto(server.base_url + "/").url.endswith("/login")  # type: ignore[union-attr]
    db = Database(database_url)
    with db.sessionmaker() as session:
        login = session.scalars(select(AuditRecord).where(AuditRecord.category == "login")).one()
    db.dispose()
    assert login.outcome == "4" and "19999999999" in (login.outcome_desc or "")


@pytest.mark.browser
def test_a_professional_the_directory_lists_gets_an_account(
    browser: Browser, server: LiveServer, database_url: str
) -> None:
    page = browser.new_page()
    _login_at_provider(page, server, NEWCOMER)
    page.wait_for_url(server.base_url + "/")
    assert "Dr Marie NOM5" in page.content()
    assert "Annuaire" in page.locator(".services").inner_text()
    db = Database(database_url)
    with db.sessionmaker() as session:
        made = session.scalars(select(User).where(User.rpps == NEWCOMER.rpps)).one()
    db.dispose()
    assert (made.username, made.roles, made.password_hash) == (
        f"rpps-{NEWCOMER.rpps}",
        "professional",
        None,
    )


@pytest.mark.browser
def test_cancel_at_the_provider(browser: Browser, server: LiveServer) -> None:
    page = browser.new_page()
    page.goto(server.base_url + "/login")
    page.click("#oidc-login")
    page.wait_for_selector("#login-form")
    page.click("#cancel")
    page.wait_for_selector(".error")
    assert "access_denied" in page.locator(".error").inner_text()
