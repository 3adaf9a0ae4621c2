"""Two browsers (Playwright driving Debian's Chromium) chat live in a care circle's
coordination file, served by ``enrs serve`` with two HTTP workers; one of them loses its
connection (a proxy cut) while the other writes, and gets the missed messages, in order, when
it comes back. What a member writes is shown as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect

from tests.conftest import Factory
from tests.support.live_server import live_server
from tests.support.portal import PASSWORD
from tests.support.tcp_proxy import TcpProxy


def _open_file(browser: Browser, base_url: str, username: str, name: str) -> Page:
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()  # a phone
    page.goto(base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
    page.goto(base_url + "/coordination")
    page.click(f"text={name}")
    expect(page.locator("#etat")).to_have_text("En direct")
    return page


def _texts(page: Page) -> list[str]:
    return page.locator("#messages li .texte").all_inner_texts()


def _send(page: Page, text: str) -> None:
    page.fill("#texte", text)
    page.click("#ecrire button[type=submit]")
    expect(page.locator("#texte")).to_have_value("")


@pytest.mark.browser
def test_two_browsers_chat_live_and_a_reconnect_gets_what_it_missed(
    browser: Browser,
    circle: tuple[str, TestClient, TestClient],
    factory: Factory,
    tmp_path: Path,
    database_url: str,
) -> None:
    with live_server(data_dir=tmp_path / "var", database_url=database_url, workers=2) as server:
        proxy = TcpProxy("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
        try:
            chu = _open_file(browser, server.base_url, "dr.chu", "Suivi greffe rénale")
            other = _open_file(
                browser, f"http://127.0.0.1:{proxy.port}", "dr.clinique", "Suivi greffe rénale"
            )
            hostile = "<b>gras</b> <script>window.pwned = 1</script>"
            _send(chu, hostile)
            expect(other.locator("#messages li")).to_have_count(1)
            assert _texts(other) == [hostile]  # as text: no element made of it
            assert other.locator("#messages li b, #messages li script").count() == 0
            assert other.evaluate("window.pwned === undefined")
            _send(other, "Vu, je passe ce soir.")
            expect(chu.locator("#messages li")).to_have_count(2)
            assert _texts(chu)[1] == "Vu, je passe ce soir."
            expect(other.locator("#messages li")).to_have_count(2)  # its own, by its stream

            proxy.cut()  # the nurse's phone loses the network
            expect(other.locator("#etat")).to_have_text("Reconnexion…")
            _send(chu, "Tension 14/9 ce matin.")
            _send(chu, "Rappeler le néphrologue.")
            expect(chu.locator("#messages li")).to_have_count(4)
            assert len(_texts(other)) == 2
            proxy.restore()
            expect(other.locator("#messages li")).to_have_count(4, timeout=15000)
            assert _texts(other)[2:] == ["Tension 14/9 ce matin.", "Rappeler le néphrologue."]
            expect(other.locator("#etat")).to_have_text("En direct")
            # The list of circles shows what is unread.
            other.goto(f"http://127.0.0.1:{proxy.port}/coordination")
            assert other.locator("#cercles li").count() == 1
        finally:
            proxy.close()
