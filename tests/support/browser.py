"""Debian's Chromium for browser tests (Playwright drives it; no browser download)."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is required: `make test` installs it")
    return path


def wait_for_js(page: Page, expression: str, timeout: float = 60.0) -> None:
    """Wait until ``expression`` (a JavaScript function) returns true in ``page``.

    Playwright's ``page.wait_for_function`` compiles its predicate in the page with ``eval``,
    which the platform's Content-Security-Policy forbids (no 'unsafe-eval'): it fails as soon
    as its first check is false. ``page.evaluate`` goes through the DevTools protocol, which
    the policy does not restrict, so it is polled from here instead."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        page.wait_for_timeout(200)


def wait_for_query(page: Page, **fields: str) -> None:
    """Wait for the page a GET form returns, sent with ``fields`` (as in its URL).

    A click on a form's button returns before the next page is there: a count or a text read
    at once can still be the previous page's."""

    def sent(url: str) -> bool:
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        return all(query.get(name) == [value] for name, value in fields.items())

    page.wait_for_url(sent)
