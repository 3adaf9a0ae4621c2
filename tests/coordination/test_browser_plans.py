"""A nurse on a phone (Playwright driving Debian's Chromium, ``enrs serve``) applies the
kidney-transplant pathway from the coordination file's picker and sees the plan: its goals,
its scheduled consultations and the blood tests given to her role."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from tests.support.live_server import live_server
from tests.support.portal import PASSWORD


@pytest.mark.browser
def test_a_nurse_applies_a_pathway_from_her_phone(
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
        expect(page.locator("#aucun-plan")).to_be_visible()

        page.select_option("#parcours", "suivi-greffe-renale")
        page.fill("#debut", "2027-03-01")
        page.click("#appliquer-parcours button[type=submit]")
        expect(page.locator("#message-plan")).to_have_text(
            "Parcours appliqué : plan de soins et tâches créés."
        )
        plan = page.locator("article.plan-soins")
        expect(plan).to_have_count(1)
        expect(plan.locator("h3")).to_contain_text("Suivi post-greffe rénale (première année)")
        expect(plan.locator("ul.objectifs li")).to_have_count(4)
        activities = plan.locator("ul.activites li")
        expect(activities).to_have_count(13)
        expect(activities.first).to_contain_text("Bilan biologique J+7")
        expect(activities.first).to_contain_text("le 08/03/2027 · demandée")
        expect(plan).to_contain_text("Consultation néphrologue de transplantation M3")
        expect(page.locator("#taches li")).to_have_count(7)  # the IDE's blood tests
        # Applied again: refused, the page says why, nothing doubled.
        page.click("summary:has-text('Appliquer un parcours')")
        page.select_option("#parcours", "suivi-greffe-renale")
        page.click("#appliquer-parcours button[type=submit]")
        expect(page.locator("p.error")).to_contain_text("already under way")
