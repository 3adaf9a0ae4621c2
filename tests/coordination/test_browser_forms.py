"""A nurse on a phone (Playwright driving Debian's Chromium) fills the EPICES grid in from a
care circle's coordination file, served by ``enrs serve``: a question forgotten is flagged
next to it, the answers given are kept, and once recorded the file lists the server's score."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from tests.support.live_server import live_server
from tests.support.portal import PASSWORD


@pytest.mark.browser
def test_a_member_fills_an_evaluation_in_on_a_phone(
    browser: Browser,
    circle: tuple[str, TestClient, TestClient],
    tmp_path: Path,
    database_url: str,
) -> None:
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as server:
        page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        page.goto(server.base_url + "/login")
        page.fill("#username", "dr.clinique")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(server.base_url + "/")
        page.goto(server.base_url + "/coordination")
        page.click("text=Suivi greffe rénale")
        expect(page.locator("#evaluations-liste li")).to_have_text("Aucune évaluation.")
        page.click("#evaluations a.remplir >> text=Score EPICES")

        yes = {1, 4, 6, 9, 11}
        for n in range(1, 12):
            if n != 7:  # forgotten
                page.check(f"#question-q{n} input[value={'Y' if n in yes else 'N'}]")
        page.click("#questionnaire button[type=submit]")
        expect(page.locator("#erreur-q7")).to_have_text("réponse obligatoire")
        expect(page.locator("#question-q1 input[value=Y]")).to_be_checked()  # kept
        assert page.locator("p.error[id^=erreur-]").count() == 1

        page.check("#question-q7 input[value=N]")
        page.click("#questionnaire button[type=submit]")
        expect(page.locator("#evaluations-liste li .score")).to_have_text("53,84")
        expect(page.locator("#evaluations-liste li .interpretation")).to_have_text(
            "Précarité (score ≥ 30)"
        )
