"""Mailbox logins with an ENRS access token (issue 14): a professional's mail client gets a
token from the ENRS authorization server (the code flow, as Thunderbird does with the
``mail`` scope) and logs into IMAP and SMTP submission with SASL ``XOAUTH2``; Debian's
Dovecot introspects the token at ENRS (RFC 7662) and opens only the professional's own
mailbox. And the introspection endpoint itself: clients that may introspect, ``active``
false for anything not valid."""

from __future__ import annotations

import base64
import imaplib
import secrets
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from fastapi.testclient import TestClient

from enrs.accounts import service as accounts_service
from enrs.kit.db import Database
from enrs.messaging import oauth, service
from tests.accounts.test_authorization_code import _portal_login
from tests.conftest import Factory
from tests.messaging.mail import (
    CHU,
    DOCTOR,
    DOMAIN,
    OTHER_DOCTOR,
    PASSWORD,
    MailServers,
    mail_servers,
    prepare_directory,
)
from tests.messaging.test_mail_servers import _subjects
from tests.support.live_server import LiveServer, enrs_command, live_server

ME, OTHER = f"dr.un@{DOMAIN}", f"dr.deux@{DOMAIN}"
REDIRECT = "http://127.0.0.1:9/callback"


def _xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


@pytest.fixture
def platform(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, MailServers]]:
    prepare_directory(database_url, tmp_path)
    db = Database(database_url)
    with db.transaction() as session:
        for name, rpps in (("dr.un", DOCTOR), ("dr.deux", OTHER_DOCTOR)):
            accounts_service.create_user(
                session, username=name, display_name=name, password=PASSWORD,
                roles=["professional"], rpps=rpps,
            )  # fmt: skip
    db.dispose()
    with live_server(data_dir=tmp_path / "var", database_url=database_url) as http:
        env = {"ENRS_MAIL_INTROSPECTION_URL": f"{http.base_url}/oauth/introspect"}
        with mail_servers(database_url, tmp_path, env) as mail:
            for address, rpps in ((ME, DOCTOR), (OTHER, OTHER_DOCTOR)):
                done = mail.enrs(
                    "messaging", "mailbox", "add", address, "--type", "PER", "--rpps", rpps,
                    "--password-stdin", stdin=PASSWORD,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
            yield http, mail


def _user_token(http: LiveServer, mail: MailServers, username: str, scope: str) -> str:
    """A token for ``username`` through the code flow with PKCE, for a mail client app."""
    made = subprocess.run(
        enrs_command("clients", "create", f"Client de messagerie {secrets.token_hex(3)}",
                     "--redirect-uri", REDIRECT, "--scope", "openid mail"),
        env=mail.env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    import json

    app = json.loads(made.stdout)
    client = OAuth2Client(
        client_id=app["client_id"], client_secret=app["client_secret"], scope=scope,
        redirect_uri=REDIRECT, code_challenge_method="S256",
    )  # fmt: skip
    verifier = secrets.token_urlsafe(48)
    url, _ = client.create_authorization_url(
        http.base_url + "/oauth/authorize", code_verifier=verifier
    )
    with httpx.Client(base_url=http.base_url) as browser:
        final = _portal_login(browser, url, username, PASSWORD)
    token = client.fetch_token(
        http.base_url + "/oauth/token", authorization_response=final, code_verifier=verifier
    )
    return str(token["access_token"])


def _imap_login(mail: MailServers, user: str, token: str) -> bool:
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        try:
            imap.authenticate("XOAUTH2", lambda _: _xoauth2(user, token))
        except imaplib.IMAP4.error:
            return False
        return True


def test_a_professional_logs_in_with_an_enrs_token(
    platform: tuple[LiveServer, MailServers], database_url: str
) -> None:
    http, mail = platform
    token = _user_token(http, mail, "dr.un", "openid mail")
    assert _imap_login(mail, ME, token)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ME, OTHER, "Envoyé avec un jeton"
    msg.set_content("Compte rendu.")
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=mail.tls)
        smtp.ehlo()
        assert "XOAUTH2" in smtp.esmtp_features["auth"].upper()
        code, _ = smtp.docmd("AUTH", "XOAUTH2 " + base64.b64encode(_xoauth2(ME, token)).decode())
        assert code == 235
        smtp.send_message(msg)
    assert _subjects(mail, OTHER, expected=1) == ["Envoyé avec un jeton"]

    # Never another's mailbox, nothing without a valid token or the mail scope.
    assert not _imap_login(mail, OTHER, token)
    assert not _imap_login(mail, ME, "eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl")
    assert not _imap_login(mail, ME, _user_token(http, mail, "dr.un", "openid"))
    assert not _imap_login(mail, ME, _user_token(http, mail, "dr.deux", "openid mail"))
    # A suspended mailbox: its owner's token no longer opens it.
    db = Database(database_url)
    with db.transaction() as session:
        service.set_status(session, ME, "suspended")
    db.dispose()
    assert not _imap_login(mail, ME, token)
    # Passwords still work for the other mailbox.
    with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
        imap.starttls(ssl_context=mail.tls)
        imap.login(OTHER, PASSWORD)


def test_the_introspection_endpoint(client: TestClient, factory: Factory, db: Database) -> None:
    with db.transaction() as session:
        made, secret = accounts_service.create_client(
            session, name="Dovecot", scope=oauth.INTROSPECT_SCOPE
        )
        assert secret is not None
        dovecot = (made.client_id, secret)
    other = factory.system_client("system/Patient.rs")
    system_token = factory.token("system/Patient.rs")

    def ask(auth: tuple[str, str] | None, token: str) -> httpx.Response:
        return client.post("/oauth/introspect", data={"token": token}, auth=auth)

    assert ask(None, system_token).status_code == 401
    assert ask(other, system_token).status_code == 401  # no introspect scope
    assert ask((dovecot[0], "wrong"), system_token).status_code == 401
    assert ask(dovecot, "garbage").json() == {"active": False}
    assert ask(dovecot, "").json() == {"active": False}
    answer = ask(dovecot, system_token).json()
    assert answer["active"] is True and "username" not in answer
    assert answer["scope"] == "system/Patient.rs"
    assert ask(dovecot, system_token).headers["cache-control"] == "no-store"


def test_a_delegate_opens_the_service_mailbox_with_their_own_token(
    platform: tuple[LiveServer, MailServers],
) -> None:
    """The service's mailbox (ORG) opened by a delegate's mail client with the delegate's
    own token, as ``<service>*<own address>``; nobody else's token opens it so."""
    http, mail = platform
    service_box = f"cardiologie@{DOMAIN}"
    done = mail.enrs("messaging", "mailbox", "add", service_box, "--type", "ORG", "--finess", CHU)
    assert done.returncode == 0, done.stderr
    assert mail.enrs("messaging", "mailbox", "delegate", service_box, ME, "--send").returncode == 0
    mine = _user_token(http, mail, "dr.un", "openid mail")
    theirs = _user_token(http, mail, "dr.deux", "openid mail")
    as_delegate = f"{service_box}*{ME}"

    # Mail for the service, then the delegate's client opens the service's INBOX.
    incoming = EmailMessage()
    incoming["From"], incoming["To"], incoming["Subject"] = OTHER, service_box, "Au service"
    incoming.set_content("Demande d'avis.")
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=mail.tls)
        smtp.login(OTHER, PASSWORD)
        smtp.send_message(incoming)
    deadline = time.monotonic() + 20
    while True:
        with imaplib.IMAP4("127.0.0.1", mail.imap_port, timeout=30) as imap:
            imap.starttls(ssl_context=mail.tls)
            imap.authenticate("XOAUTH2", lambda _: _xoauth2(as_delegate, mine))
            imap.select("INBOX", readonly=True)
            found = imap.search(None, "SUBJECT", '"Au service"')[1][0].split()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(found) == 1  # the service's mailbox, not the delegate's own
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = service_box, OTHER, "Pour le service"
    msg.set_content("Rendez-vous confirmé.")
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        smtp.starttls(context=mail.tls)
        smtp.ehlo()
        auth = base64.b64encode(_xoauth2(as_delegate, mine)).decode()
        assert smtp.docmd("AUTH", "XOAUTH2 " + auth)[0] == 235
        smtp.send_message(msg)
    assert _subjects(mail, OTHER, expected=1) == ["Pour le service"]

    # Not the service's own name with a delegate's token, not another's token as the
    # delegate, not someone who is no delegate.
    assert not _imap_login(mail, service_box, mine)
    assert not _imap_login(mail, as_delegate, theirs)
    assert not _imap_login(mail, f"{service_box}*{OTHER}", theirs)
    # The delegate suspended: their token opens the service's mailbox no more.
    assert mail.enrs("messaging", "mailbox", "suspend", ME).returncode == 0
    time.sleep(1.1)  # Dovecot looks at a passwd-file again when its mtime second changes
    assert not _imap_login(mail, as_delegate, mine)
