"""Two professionals on their phones (Playwright driving Debian's Chromium, ``enrs serve``)
share an appointment: the CHU's doctor proposes it from the coordination file, the clinic's
doctor finds it in "Mon agenda" and accepts it, the CHU's file shows it confirmed; the clinic's
doctor moves it and the new time shows; the CHU's page, opened before the move, tries to
cancel it and is told the appointment changed in between — nothing is overwritten."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Locator, Page, expect

from tests.coordination.phone import phone
from tests.support.live_server import live_server


def _fits(page: Page) -> None:
    """Nothing wider than the phone: no sideways scrolling."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def _in_file(page: Page, title: str) -> Locator:
    return page.locator("#liste-rendez-vous li", has_text=title)


@pytest.mark.browser
def test_an_appointment_proposed_accepted_and_moved_between_two_phones(
    browser: Browser,
    circle: tuple[str, TestClient, TestClient],
    tmp_path: Path,
    database_url: str,
) -> None:
    day = date.today() + timedelta(days=10)
    later = day + timedelta(days=2)
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as server:
        chu = phone(browser, server.base_url, "dr.chu")
        chu.goto(server.base_url + "/coordination")
        chu.click("text=Suivi greffe rénale")
        chu.click("summary:has-text('Proposer un rendez-vous')")
        chu.fill("#motif", "Bilan de plaie")
        chu.fill("#jour", day.isoformat())
        chu.fill("#heure", "10:30")
        ide = chu.locator("#avec option", has_text="— IDE").get_attribute("value")
        assert ide is not None
        chu.select_option("#avec", ide)
        chu.get_by_role("button", name="Proposer", exact=True).click()
        proposed = _in_file(chu, "Bilan de plaie")
        expect(proposed.locator(".etat")).to_have_text("proposé")
        expect(proposed.get_by_role("button", name="Accepter")).to_have_count(0)  # hers

        other = phone(browser, server.base_url, "dr.clinique")
        other.goto(server.base_url + "/agenda")
        mine = other.locator("#rendez-vous li", has_text="Bilan de plaie")
        expect(mine.locator(".when")).to_contain_text(f"{day.strftime('%d/%m/%Y')} 10:30 – 11:00")
        expect(mine.locator(".etat")).to_have_text("proposé")
        _fits(other)
        mine.get_by_role("button", name="Accepter").click()
        other.wait_for_url(server.base_url + "/agenda#rendez-vous")
        expect(mine.locator(".etat")).to_have_text("confirmé")
        expect(mine.get_by_role("button", name="Accepter")).to_have_count(0)

        chu.reload()  # the page the CHU's doctor keeps open from now on
        confirmed = _in_file(chu, "Bilan de plaie")
        expect(confirmed.locator(".etat")).to_have_text("confirmé")
        expect(confirmed.get_by_role("button", name="Accepter")).to_have_count(0)
        _fits(chu)

        mine.locator("summary", has_text="Déplacer").click()
        mine.locator("input[name=jour]").fill(later.isoformat())
        mine.locator("input[name=heure]").fill("16:15")
        mine.get_by_role("button", name="Déplacer le rendez-vous").click()
        other.wait_for_url(server.base_url + "/agenda#rendez-vous")
        expect(mine.locator(".when")).to_contain_text(f"{later.strftime('%d/%m/%Y')} 16:15 – 16:45")
        expect(mine.locator(".etat")).to_have_text("confirmé")

        # The CHU's page still shows the appointment before its move: refused, in French.
        confirmed.get_by_role("button", name="Annuler").click()
        expect(chu.locator("h1")).to_have_text("Erreur 412")
        expect(chu.locator("p.error")).to_contain_text("Le rendez-vous a été modifié entre-temps")
        chu.go_back()
        chu.reload()
        now = _in_file(chu, "Bilan de plaie")
        expect(now.locator(".quand")).to_have_text(f"{later.strftime('%d/%m/%Y')} 16:15")
        expect(now.locator(".etat")).to_have_text("confirmé")
        now.get_by_role("button", name="Annuler").click()  # on the page as it is now
        expect(_in_file(chu, "Bilan de plaie").locator(".etat")).to_have_text("annulé")
        other.reload()
        expect(mine.locator(".etat")).to_have_text("annulé")
        expect(mine.locator(".rdv-actions")).to_have_count(0)
