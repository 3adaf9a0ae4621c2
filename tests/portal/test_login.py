"""Portal login with local accounts: CSRF, lock-out, TOTP, sessions, admin audit page."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import Factory

from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from enrs.kit.security import totp

PASSWORD = "Correct-horse-42!"


def _csrf(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _login(client: TestClient, username: str, password: str, code: str = "") -> int:
    data = {"username": username, "password": password, "csrf": _csrf(client), "totp_code": code}
    return client.post("/login", data=data, follow_redirects=False).status_code


def test_services_page_requires_login_then_shows_services(
    client: TestClient, factory: Factory
) -> None:
    first = client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    factory.user("alice")
    assert _login(client, "alice", PASSWORD) == 303
    page = client.get("/")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "Services de la plateforme" in text
    # A professional is shown only what they may open: their account, not the cell's
    # workbench nor the audit trail (each card a link to its page).
    assert '<a href="/account">Mon compte</a>' in text
    assert '<a href="/annuaire">Annuaire</a>' in text
    assert "/identitovigilance" not in text and "/admin/audit" not in text
    assert "à venir" not in text and "En préparation : le suivi des envois au DMP" in text
    assert '<a href="/dossiers">Dossier patient</a>' in text
    assert '<a href="/annuaire/lits">Lits disponibles</a>' in text
    account = client.get("/account")
    assert "Alice" in account.text and "professional" in account.text


def test_login_without_csrf_token_is_refused(client: TestClient, factory: Factory) -> None:
    factory.user("alice")
    client.get("/login")
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf": "forged"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "enrs_session" not in response.cookies


def test_lockout_after_repeated_failures_even_with_right_password(
    client: TestClient, factory: Factory, db: Database
) -> None:
    factory.user("alice")
    for _ in range(5):
        assert _login(client, "alice", "wrong-password") == 401
    assert _login(client, "alice", PASSWORD) == 401
    page = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf": _csrf(client)}
    )
    assert "verrouillé" in page.text
    with db.sessionmaker() as session:
        logins = list(session.scalars(select(AuditRecord).where(AuditRecord.category == "login")))
    assert len(logins) == 7 and all(r.outcome == "4" for r in logins)
    assert "locked" in (logins[-1].outcome_desc or "")


def test_totp_second_factor(client: TestClient, factory: Factory) -> None:
    secret = factory.user("bob", totp=True)
    assert _login(client, "bob", PASSWORD) == 401  # password alone is not enough
    assert (
        _login(
            client, "bob", PASSWORD, "000000" if totp.current_code(secret) != "000000" else "111111"
        )
        == 401
    )
    assert _login(client, "bob", PASSWORD, totp.current_code(secret)) == 303
    assert client.get("/").status_code == 200


def test_logout_ends_the_session(client: TestClient, factory: Factory) -> None:
    factory.user("alice")
    _login(client, "alice", PASSWORD)
    cookie = client.cookies.get("enrs_session")
    page = client.get("/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    assert (
        client.post("/logout", data={"csrf": csrf.group(1)}, follow_redirects=False).status_code
        == 303
    )
    client.cookies.set("enrs_session", cookie or "")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_admin_audit_page_lists_records_and_is_closed_to_others(
    client: TestClient, factory: Factory
) -> None:
    factory.user("root", roles=("admin",))
    factory.user("alice")
    _login(client, "alice", PASSWORD)
    denied = client.get("/admin/audit", headers={"accept": "text/html"})
    assert denied.status_code == 403 and "administrateurs" in denied.text
    client.cookies.clear()
    _login(client, "root", PASSWORD)
    page = client.get("/admin/audit?action=E")
    assert page.status_code == 200
    assert "Journal d'audit" in html.unescape(page.text) and "login" in page.text
    # The session cookie also reaches the FHIR API for the admin (user/AuditEvent.rs).
    bundle = client.get("/fhir/AuditEvent?subtype=login").json()
    assert bundle["resourceType"] == "Bundle" and bundle["total"] >= 2


def test_services_page_shows_each_role_its_services(client: TestClient, factory: Factory) -> None:
    factory.user("ida", roles=("identitovigilance", "admin"))
    assert _login(client, "ida", PASSWORD) == 303
    text = html.unescape(client.get("/").text)
    for href, name in (
        ("/identitovigilance", "Identitovigilance"),
        ("/admin/audit", "Traçabilité"),
        ("/account", "Mon compte"),
    ):
        assert f'<a href="{href}">{name}</a>' in text
        assert client.get(href).status_code == 200  # a link the user may follow
