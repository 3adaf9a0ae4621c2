"""In Chromium (Playwright), on a phone-sized screen, through ``enrs serve``: a radiologist of
the night rota takes a reading from "Vacations de lecture", writes and signs the report; the
request is done, its turnaround shown, and the report opens from the patient's record."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from enrs.kit.db import Database
from tests.conftest import Factory
from tests.imaging.conftest import Archived
from tests.imaging.reading_world import make_radiology
from tests.imaging.test_reading import _ask
from tests.support.live_server import live_server
from tests.support.portal import PASSWORD


def _log_in(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    page.goto(base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
    return page


@pytest.mark.browser
def test_claim_report_and_sign_in_the_browser(
    browser: Browser, app: FastAPI, client: TestClient, db: Database, factory: Factory,
    archive: Archived, tmp_path: Path, database_url: str,
) -> None:  # fmt: skip
    radiology = make_radiology(app, db, factory, archive, tmp_path)
    request_id = _ask(radiology.portal("dr.chu"), radiology.study("TDM CEREBRALE"))
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as server:
        page = _log_in(browser, server.base_url, "dr.a")
        page.click("nav >> text=Lectures")
        item = page.locator("ul.lectures li", has_text="TDM CEREBRALE")
        expect(item).to_contain_text("urgente")
        item.locator("button", has_text="Prendre").click()
        expect(page).to_have_url(f"{server.base_url}/lectures/{request_id}")
        expect(page.locator(".lecture-report .etat")).to_have_text("prise")

        page.fill("#conclusion-report", "Pas d'hémorragie intracrânienne.")
        page.click("button.signer")
        expect(page.locator("#etat-demande")).to_have_text("signé")
        expect(page.locator(".lecture-report .conclusion")).to_have_text(
            "Pas d'hémorragie intracrânienne."
        )
        expect(page.locator(".lecture-report .signature")).to_contain_text("Signé par Dr.A")
        expect(page.locator("#delai")).to_contain_text("h")
        page.click("#compte-rendu")  # the report, filed in the patient's record
        expect(page.locator("#titre-document")).to_have_text("CR de lecture — TDM CEREBRALE")

        chu = _log_in(browser, server.base_url, "dr.chu")
        chu.goto(server.base_url + "/lectures")
        mine = chu.locator("ul.demandes li", has_text="TDM CEREBRALE")
        expect(mine.locator(".etat")).to_have_text("signé")
        expect(mine.locator(".delai")).not_to_have_text("—")
