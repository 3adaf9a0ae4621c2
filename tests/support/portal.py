"""Logging in to the portal from a TestClient (or any httpx client, to a live server), as a
browser does (the form's CSRF token)."""

from __future__ import annotations

import httpx

PASSWORD = "Correct-horse-42!"  # the test factory's default


def csrf_of(html: str) -> str:
    """The CSRF token of a portal page's form."""
    return html.split('name="csrf" value="')[1].split('"')[0]


def log_in(client: httpx.Client, username: str, password: str = PASSWORD) -> None:
    """Open a portal session for ``username`` (its cookie kept by ``client``)."""
    form = {"username": username, "password": password, "csrf": csrf_of(client.get("/login").text)}
    answer = client.post("/login", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
