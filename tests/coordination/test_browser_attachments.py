"""In Chromium (Playwright), on a phone-sized screen, through ``enrs serve``: a photo sent
with a chat message reaches the other member live as a link (its name and type, never an
image inlined) that opens the document filed in the patient's record; a PNG is refused with
the reason; a task made from the coordination file is moved by its buttons and listed in
"Mes tâches"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect

from tests.coordination.test_browser_chat import _open_file
from tests.coordination.test_chat_attachments import png
from tests.support.live_server import live_server

PHOTO = Path(__file__).parent / "data" / "plaie.jpg"
NAME = "Suivi greffe rénale"


@pytest.mark.browser
def test_a_photo_in_the_chat_and_tasks_moved_by_their_buttons(
    browser: Browser,
    circle: tuple[str, TestClient, TestClient],
    tmp_path: Path,
    database_url: str,
) -> None:
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as server:
        chu = _open_file(browser, server.base_url, "dr.chu", NAME)
        other = _open_file(browser, server.base_url, "dr.clinique", NAME)

        chu.fill("#texte", "Photo de la plaie ce matin")
        chu.set_input_files("#fichier", str(PHOTO))
        chu.click("#ecrire button[type=submit]")
        expect(chu.locator("#texte")).to_have_value("")
        link = other.locator("#messages li .piece-jointe a")
        expect(link).to_have_text("plaie.jpg")
        expect(other.locator("#messages li .piece-jointe .small")).to_have_text("(JPEG)")
        assert other.locator("#messages li img").count() == 0  # a link, never inline
        href = link.get_attribute("href") or ""
        assert re.fullmatch(r"/dossiers/[0-9A-F]+/documents/[0-9a-f-]+", href), href

        # A PNG is refused, with the reason, and nothing is shown.
        capture = tmp_path / "capture.png"
        capture.write_bytes(png())
        chu.set_input_files("#fichier", str(capture))
        chu.click("#ecrire button[type=submit]")
        expect(chu.locator("#erreur")).to_contain_text("PNG")
        expect(chu.locator("#messages li")).to_have_count(1)

        link.click()  # the member opens the document filed in the record
        expect(other.locator("#titre-document")).to_have_text("plaie.jpg")
        answer = other.request.get(server.base_url + href + "/contenu")
        assert answer.status == 200 and answer.body() == PHOTO.read_bytes()

        # A task for the IDE role, made from the file, accepted by the nurse's button.
        chu.click("text=Nouvelle tâche")
        chu.fill("#titre-tache", "Refaire le pansement")
        chu.select_option("#responsable", "role:IDE")
        chu.fill("#echeance", "2020-01-02")
        chu.click(".nouvelle-tache button[type=submit]")
        task = chu.locator("#taches li", has_text="Refaire le pansement")
        expect(task).to_contain_text("en retard")
        other.goto(server.base_url + "/taches")
        mine = other.locator("ul.mes-taches li", has_text="Refaire le pansement")
        expect(mine).to_contain_text("en retard")
        mine.locator("button", has_text="Accepter").click()
        expect(other).to_have_url(server.base_url + "/taches")
        expect(mine).to_contain_text("acceptée")
        expect(mine.locator("button", has_text="Accepter")).to_have_count(0)

        # The CHU's page still shows version 1: its "Commencer" is refused, in French.
        task.locator("button", has_text="Commencer").click()
        expect(chu.locator(".error")).to_contain_text("La tâche a été modifiée entre-temps")
