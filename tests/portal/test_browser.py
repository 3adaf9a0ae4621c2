"""A real browser (Playwright driving Debian's Chromium) against ``enrs serve``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from tests.support.live_server import LiveServer, enrs_command, live_server


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url, "PATH": "/usr/bin"}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running


@pytest.mark.browser
def test_login_reaches_services_page(browser: Browser, server: LiveServer, tmp_path: Path) -> None:
    page = browser.new_page()
    page.goto(server.base_url + "/")
    assert page.url.endswith("/login")
    page.fill("#username", "admin")
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    assert "incorrect" in page.locator(".error").inner_text()
    page.fill("#username", "admin")
    page.fill("#password", "Admin-demo-2026!")
    page.click("button[type=submit]")
    page.wait_for_url(server.base_url + "/")
    assert page.locator("h1").inner_text() == "Services de la plateforme"
    # The demo admin sees the services an admin may open, each card a link.
    assert page.locator(".services li h2").all_inner_texts() == [
        "Traçabilité",
        "Notifications",
        "Accès en urgence",
        "Dossier patient",
        "Annuaire",
        "Lits disponibles",
        "Mon compte",
    ]
    page.screenshot(path=str(tmp_path / "services.png"), full_page=True)
    page.click("text=Traçabilité")
    page.wait_for_url("**/admin/audit")
    rows = page.locator("table.audit tbody tr")
    assert rows.count() >= 2
    assert "login" in rows.first.inner_text() or "login" in page.content()
    page.click("text=Se déconnecter")
    page.wait_for_url("**/login")
