"""A professional's notifications on a phone (Playwright driving Debian's Chromium, ``enrs
serve`` with its notifications listener off, the portal's consumer run by the test): the
CHU's doctor gives the clinic's doctor a task from the coordination file and mentions her in
the chat; once the consumer has run, her header's badge counts them, the page lists them in
French, and "Marquer comme lu" brings the badge down, then away."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from tests.coordination.phone import phone
from tests.coordination.test_notify import drain, say
from tests.documents.world import DOCTOR_ELSEWHERE, Region
from tests.support.live_server import live_server


@pytest.mark.browser
def test_a_task_and_a_mention_make_the_badge_and_are_marked_read(
    browser: Browser,
    region: Region,
    circle: tuple[str, TestClient, TestClient],
    tmp_path: Path,
    database_url: str,
) -> None:
    team, chu_client, _ = circle
    quiet = {"ENRS_NOTIFICATIONS": "false"}  # the events wait for the test's consumer
    with live_server(data_dir=tmp_path / "var", database_url=database_url, extra_env=quiet) as s:
        chu = phone(browser, s.base_url, "dr.chu")
        chu.goto(f"{s.base_url}/coordination/{team}")
        chu.click("summary:has-text('Nouvelle tâche')")
        chu.fill("#titre-tache", "Pansement du soir")
        chu.select_option("#responsable", f"rpps:{DOCTOR_ELSEWHERE}")
        chu.get_by_role("button", name="Créer la tâche").click()
        expect(chu.locator("#taches li", has_text="Pansement du soir")).to_have_count(1)
        say(chu_client, team, "Pouvez-vous confirmer ?", DOCTOR_ELSEWHERE)

        nurse = phone(browser, s.base_url, "dr.clinique")
        badge = nurse.locator("#notifications-non-lues")
        expect(badge).to_have_count(0)  # written by the consumer, which has not run yet
        drain(region.db)
        nurse.reload()
        expect(badge).to_have_text("2")

        nurse.click("header a[href='/notifications']")
        nurse.wait_for_url(s.base_url + "/notifications")
        unread = nurse.locator("#notifications li.non-lu")
        expect(unread).to_have_count(2)
        expect(unread.first).to_contain_text("Vous êtes mentionné(e) dans la messagerie")
        expect(unread.nth(1)).to_contain_text("Tâche qui vous est attribuée")
        expect(nurse.locator("#notifications")).not_to_contain_text("Pansement du soir")
        assert nurse.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        unread.first.get_by_role("button", name="Marquer comme lu", exact=True).click()
        expect(badge).to_have_text("1")
        expect(unread).to_have_count(1)
        expect(unread.first).to_contain_text("Tâche qui vous est attribuée")
        unread.first.get_by_role("button", name="Marquer comme lu", exact=True).click()
        expect(badge).to_have_count(0)
        expect(unread).to_have_count(0)
        expect(nurse.locator("#notifications li")).to_have_count(2)  # kept, read
        nurse.locator("#notifications li").first.get_by_role("link").click()
        nurse.wait_for_url(f"{s.base_url}/coordination/{team}")
        expect(nurse.locator("#taches li", has_text="Pansement du soir")).to_have_count(1)
