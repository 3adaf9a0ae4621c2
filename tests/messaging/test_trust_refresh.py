"""The trust space refreshed from the national list's URL (issue 14): a list that verifies and
is not older than the one in force replaces it; a refused, older, oversized or unreachable one
keeps it and is recorded. The list server is a real HTTP server on the loopback (the national
one is outside the platform); lists are signed by a test PKI."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select, text

from enrs.kit.db import Database
from enrs.messaging import servers, trustlist_refresh
from enrs.messaging.models import TrustedDomain
from enrs.messaging.trustlist import MAX_BYTES
from enrs.settings import Settings
from tests.support.live_server import enrs_command
from tests.support.trust_list import Domain, Pki, make_pki, signed_trust_list

FIRST = "2026-12-01T02:00:00+01:00"
LATER = "2026-12-02T02:00:00+01:00"
EARLIER = "2026-11-30T02:00:00+01:00"


@dataclass
class ListServer:
    """What each path answers: ``(status, headers, body)``; ``hits`` counts the requests."""

    url: str
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: int = 0

    def serve(self, body: bytes, path: str = "/liste-blanche.xml") -> str:
        self.routes[path] = (200, {"Content-Type": "application/xml"}, body)
        return self.url + path


@pytest.fixture
def list_server() -> Iterator[ListServer]:
    state = ListServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            status, headers, body = state.routes.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers and "X-No-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def ca_file(tmp_path: Path, pki: Pki) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(pki.ca_cert.public_bytes(Encoding.PEM))
    return path


def _settings(tmp_path: Path, database_url: str, ca_file: Path, url: str = "") -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "var",
        database_url=database_url,
        mail_trust_ca=ca_file,
        mail_trust_list_url=url,
        mail_trust_list_every=3600,
    )


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def listed(db: Database) -> list[str]:
    with db.transaction(write=False) as session:
        return list(session.scalars(select(TrustedDomain.name).order_by(TrustedDomain.name)))


def test_a_refresh_replaces_the_trust_space(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    url = list_server.serve(signed_trust_list([Domain("chu.example"), Domain("labo.example")], pki))
    settings = _settings(tmp_path, database_url, ca_file, url)

    first = trustlist_refresh.refresh_trust_list(db, settings)
    assert first.imported, first.detail
    assert listed(db) == ["chu.example", "labo.example"]
    state = trustlist_refresh.status(db)
    assert (state.outcome, state.source, state.domains) == ("imported", url, 2)
    assert (
        state.generated is not None and state.generated.isoformat() == "2026-12-01T01:00:00+00:00"
    )

    list_server.serve(
        signed_trust_list([Domain("chu.example"), Domain("clinique.example")], pki, generated=LATER)
    )
    second = trustlist_refresh.refresh_trust_list(db, settings)
    assert second.imported and second.detail == "2 domain(s), 1 added, 1 removed, 1 kept"
    assert listed(db) == ["chu.example", "clinique.example"]
    state = trustlist_refresh.status(db)
    assert state.generated is not None and state.generated.isoformat().startswith("2026-12-02")


def _tampered(pki: Pki) -> bytes:
    return signed_trust_list([Domain("chu.example")], pki, generated=LATER).replace(
        b"chu.example", b"pirate.example"
    )


FAULTS = {
    "untrusted signer": (
        lambda pki: signed_trust_list(
            [Domain("pirate.example")], make_pki("Autre"), generated=LATER
        ),
        "refused",
        "signer is not trusted",
    ),
    "tampered": (_tampered, "refused", "changed after it was signed"),
    "older": (
        lambda pki: signed_trust_list([Domain("ancien.example")], pki, generated=EARLIER),
        "older",
        "older than the list in force",
    ),
    "not xml": (lambda pki: b"<html>maintenance</html>", "refused", "not an MSSant"),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_refused_list_keeps_the_trust_space(
    fault: str,
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    make, outcome, reason = FAULTS[fault]
    url = list_server.serve(signed_trust_list([Domain("chu.example")], pki, generated=FIRST))
    settings = _settings(tmp_path, database_url, ca_file, url)
    assert trustlist_refresh.refresh_trust_list(db, settings).imported

    list_server.serve(make(pki))
    attempt = trustlist_refresh.refresh_trust_list(db, settings)
    assert (attempt.outcome, attempt.imported) == (outcome, False)
    assert reason in attempt.detail
    assert listed(db) == ["chu.example"]
    state = trustlist_refresh.status(db)
    assert (state.outcome, state.detail) == (outcome, attempt.detail)
    assert state.generated is not None and state.generated.isoformat().startswith("2026-12-01")


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ((404, {}, b"gone"), "answered HTTP 404"),
        ((200, {}, b"x" * (MAX_BYTES + 1)), "larger than 5,000,000 bytes"),  # Content-Length
        ((200, {"X-No-Length": "1"}, b"x" * (MAX_BYTES + 1)), "larger than"),  # read to the end
        ((302, {"Location": "/liste-blanche.xml"}, b""), "more than 3 redirects"),  # a loop
    ],
    ids=["not-found", "too-large", "too-large-unannounced", "redirect-loop"],
)
def test_a_list_that_cannot_be_fetched_keeps_the_trust_space(
    route: tuple[int, dict[str, str], bytes],
    reason: str,
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    url = list_server.serve(signed_trust_list([Domain("chu.example")], pki))
    settings = _settings(tmp_path, database_url, ca_file, url)
    assert trustlist_refresh.refresh_trust_list(db, settings).imported

    list_server.routes["/liste-blanche.xml"] = route
    attempt = trustlist_refresh.refresh_trust_list(db, settings)
    assert not attempt.imported and reason in attempt.detail
    assert listed(db) == ["chu.example"]
    assert trustlist_refresh.status(db).detail == attempt.detail


def test_an_unreachable_server_keeps_the_trust_space(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    url = list_server.serve(signed_trust_list([Domain("chu.example")], pki))
    assert trustlist_refresh.refresh_trust_list(
        db, _settings(tmp_path, database_url, ca_file, url)
    ).imported
    closed = _settings(tmp_path, database_url, ca_file, "http://127.0.0.1:9/liste.xml")
    attempt = trustlist_refresh.refresh_trust_list(db, closed)
    assert attempt.outcome == "unreachable" and "ConnectError" in attempt.detail
    assert listed(db) == ["chu.example"]
    state = trustlist_refresh.status(db)
    assert state.outcome == "unreachable" and state.source == url


def test_a_redirect_is_followed(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    list_server.serve(signed_trust_list([Domain("chu.example")], pki), "/v2/liste.xml")
    list_server.routes["/liste.xml"] = (301, {"Location": "/v2/liste.xml"}, b"")
    settings = _settings(tmp_path, database_url, ca_file, list_server.url + "/liste.xml")
    assert trustlist_refresh.refresh_trust_list(db, settings).imported
    assert listed(db) == ["chu.example"]


# --- the command ----------------------------------------------------------------------------


def _enrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        enrs_command("messaging", "trust-list", *args),
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_command_refreshes_and_shows_the_status(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(
        ENRS_DATA_DIR=str(tmp_path / "var"),
        ENRS_DATABASE_URL=database_url,
        ENRS_MAIL_TRUST_CA=str(ca_file),
    )
    unset = _enrs(env, "--refresh")
    assert unset.returncode == 1 and "ENRS_MAIL_TRUST_LIST_URL is not set" in unset.stderr

    env["ENRS_MAIL_TRUST_LIST_URL"] = list_server.serve(
        signed_trust_list([Domain("chu.example"), Domain("labo.example")], pki, generated=LATER)
    )
    done = _enrs(env, "--refresh")
    assert done.returncode == 0, done.stderr
    assert "2 domain(s), 2 added, 0 removed, 0 kept" in done.stdout
    assert listed(db) == ["chu.example", "labo.example"]

    list_server.serve(_tampered(pki))
    refused = _enrs(env, "--refresh")
    assert refused.returncode == 1
    assert "the trust list is refused" in refused.stderr and "changed after" in refused.stderr

    older = tmp_path / "older.xml"  # a file goes by the same rule
    older.write_bytes(signed_trust_list([Domain("ancien.example")], pki, generated=FIRST))
    by_hand = _enrs(env, str(older))
    assert by_hand.returncode == 1 and "older than the list in force" in by_hand.stderr
    assert listed(db) == ["chu.example", "labo.example"]

    shown = _enrs(env, "--status")
    assert shown.returncode == 0, shown.stderr
    assert "the list generated 2026-12-02 01:00 UTC, 2 domain(s)" in shown.stdout
    assert f"from {env['ENRS_MAIL_TRUST_LIST_URL']}" in shown.stdout
    assert "older: generated 2026-12-01" in shown.stdout

    assert _enrs(env).returncode == 2  # neither a file nor an option


# --- the mail service -----------------------------------------------------------------------


def test_the_mail_service_refreshes_on_its_timer(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    url = list_server.serve(signed_trust_list([Domain("chu.example")], pki))
    keeper = servers._Keeper(_settings(tmp_path, database_url, ca_file, url), db)
    keeper.tick(1000.0)  # at start
    assert listed(db) == ["chu.example"] and list_server.hits == 1

    list_server.serve(signed_trust_list([Domain("labo.example")], pki, generated=LATER))
    keeper.tick(1000.0 + 3599)
    assert listed(db) == ["chu.example"] and list_server.hits == 1  # not yet due
    keeper.tick(1000.0 + 3600)
    assert listed(db) == ["labo.example"] and list_server.hits == 2

    list_server.routes.clear()  # the server answers 404 from now on: the listener goes on
    keeper.tick(1000.0 + 7200)
    assert listed(db) == ["labo.example"] and list_server.hits == 3
    assert trustlist_refresh.status(db).outcome == "unreachable"


def test_without_a_url_the_mail_service_fetches_nothing(
    tmp_path: Path, database_url: str, ca_file: Path, list_server: ListServer, db: Database
) -> None:
    keeper = servers._Keeper(_settings(tmp_path, database_url, ca_file), db)
    keeper.tick(1000.0)
    assert list_server.hits == 0 and trustlist_refresh.status(db).attempted_at is None


def test_an_error_of_the_refresh_does_not_stop_the_mail_service(
    tmp_path: Path,
    database_url: str,
    ca_file: Path,
    pki: Pki,
    list_server: ListServer,
    db: Database,
) -> None:
    url = list_server.serve(signed_trust_list([Domain("chu.example")], pki))
    keeper = servers._Keeper(_settings(tmp_path, database_url, ca_file, url), db)
    with db.engine.begin() as conn:  # the refresh cannot record anything: it raises
        conn.execute(text("DROP TABLE mail_trust_list"))
    keeper.tick(1000.0)  # logged, not raised
    assert list_server.hits == 1
    assert keeper.next_trust_list == 1000.0 + 3600
