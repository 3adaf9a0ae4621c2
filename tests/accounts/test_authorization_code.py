"""The platform as an OpenID Connect authorization server for applications acting for a person:
authorization code + PKCE driven by Authlib's OAuth 2 client (a client nobody here wrote)
against ``enrs serve``, the person logging in through the portal."""

from __future__ import annotations

import html
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from tests.support.live_server import LiveServer, enrs_command, live_server

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the test reads the redirect


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    data_dir = tmp_path / "var"
    env = {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url, "PATH": "/usr/bin"}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    made = subprocess.run(
        enrs_command(
            "clients",
            "create",
            "Appli mobile terrain",
            "--redirect-uri",
            REDIRECT,
            "--scope",
            "openid user/AuditEvent.rs user/Patient.rs",
        ),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running, json.loads(made.stdout)


def _portal_login(browser: httpx.Client, url: str, username: str, password: str) -> str:
    """Follow the authorization URL like a browser; return the final redirect to the app."""
    response = browser.get(url)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    page = browser.get(response.headers["location"])
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    next_url = re.search(r'name="next" value="([^"]+)"', page.text)
    assert csrf and next_url and next_url.group(1).startswith("/oauth/authorize?")
    logged = browser.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf": csrf.group(1),
            "next": html.unescape(next_url.group(1)),
        },
    )
    assert logged.status_code == 303, logged.text
    back = browser.get(logged.headers["location"])
    assert back.status_code == 303
    location: str = back.headers["location"]
    return location


def _oauth(server: LiveServer, app: dict[str, str], scope: str) -> OAuth2Client:
    return OAuth2Client(
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        scope=scope,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
    )


def test_code_flow_with_pkce_gives_user_tokens(server: tuple[LiveServer, dict[str, str]]) -> None:
    live, app = server
    client = _oauth(live, app, "openid user/AuditEvent.rs")
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    url, state = client.create_authorization_url(
        live.base_url + "/oauth/authorize", code_verifier=verifier, nonce=nonce
    )
    with httpx.Client(base_url=live.base_url) as browser:
        final = _portal_login(browser, url, "admin", "Admin-demo-2026!")
    assert final.startswith(REDIRECT) and parse_qs(urlsplit(final).query)["state"] == [state]
    token = client.fetch_token(
        live.base_url + "/oauth/token", authorization_response=final, code_verifier=verifier
    )
    assert token["scope"] == "openid user/AuditEvent.rs"
    jwks = httpx.get(live.base_url + "/.well-known/jwks.json").json()
    kid = jwt.get_unverified_header(token["id_token"])["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    id_claims = jwt.decode(
        token["id_token"],
        key.key,
        algorithms=["ES256"],
        audience=app["client_id"],
        issuer=live.base_url,
    )
    assert id_claims["nonce"] == nonce and id_claims["preferred_username"] == "admin"
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    audit = httpx.get(live.base_url + "/fhir/AuditEvent?subtype=authorize", headers=bearer)
    assert audit.status_code == 200 and audit.json()["total"] >= 1
    info = httpx.get(live.base_url + "/oauth/userinfo", headers=bearer).json()
    assert info["sub"] == id_claims["sub"] and info["name"] == "Administrateur ENRS"
    # The code is single use.
    replay = httpx.post(
        live.base_url + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": parse_qs(urlsplit(final).query)["code"][0],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
        },
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_roles_bound_the_scopes_and_pkce_is_checked(
    server: tuple[LiveServer, dict[str, str]],
) -> None:
    live, app = server
    client = _oauth(live, app, "openid user/AuditEvent.rs user/Patient.rs")
    verifier = secrets.token_urlsafe(48)
    url, _ = client.create_authorization_url(
        live.base_url + "/oauth/authorize", code_verifier=verifier
    )
    with httpx.Client(base_url=live.base_url) as browser:
        final = _portal_login(browser, url, "dr.martin", "Medecin-demo-2026!")
    code = parse_qs(urlsplit(final).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
    }
    wrong = httpx.post(
        live.base_url + "/oauth/token", data={**form, "code_verifier": secrets.token_urlsafe(48)}
    )
    assert wrong.json()["error"] == "invalid_grant"
    burnt = httpx.post(live.base_url + "/oauth/token", data={**form, "code_verifier": verifier})
    assert burnt.json()["error"] == "invalid_grant"  # a failed attempt burns the code
    url, _ = client.create_authorization_url(
        live.base_url + "/oauth/authorize", code_verifier=verifier
    )
    with httpx.Client(base_url=live.base_url) as browser:
        final = _portal_login(browser, url, "dr.martin", "Medecin-demo-2026!")
    token = client.fetch_token(
        live.base_url + "/oauth/token", authorization_response=final, code_verifier=verifier
    )
    assert token["scope"] == "openid user/Patient.rs"  # a professional has no audit access
    audit = httpx.get(
        live.base_url + "/fhir/AuditEvent",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert audit.status_code == 403


def test_unregistered_redirect_is_never_followed(server: tuple[LiveServer, dict[str, str]]) -> None:
    live, app = server
    response = httpx.get(
        live.base_url + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": "https://attacker.example/cb",
            "scope": "openid",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
        headers={"accept": "text/html"},
    )
    assert response.status_code == 400 and "attacker" not in response.headers.get("location", "")
    no_pkce = httpx.get(
        live.base_url + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s1",
        },
    )
    assert no_pkce.status_code == 303
    query = parse_qs(urlsplit(no_pkce.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == ["s1"]
