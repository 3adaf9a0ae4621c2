"""The coordination browser tests' phone: a Chromium page at a phone's size, logged in to the
portal through its form."""

from __future__ import annotations

from playwright.sync_api import Browser, Page

from tests.support.portal import PASSWORD

PHONE = {"width": 390, "height": 844}


def phone(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context(viewport=PHONE).new_page()
    page.goto(base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
    return page
