"""Notifications as an operator sets them up: ``enrs notifications`` commands, ``enrs serve``
sending them (its notifications listener), the admin's API and portal page."""

from __future__ import annotations

import html
import json
from pathlib import Path

import hl7
from fastapi.testclient import TestClient
from hl7.client import MLLPClient
from tests.conftest import Factory
from tests.identity.feeders import CHU, CLINIC, register_client, register_domains
from tests.support.live_server import free_port, live_server
from tests.support.portal import csrf_of, log_in
from tests.support.receivers import MllpReceiver
from tests.support.waiting import wait_until
from tests.system.test_cli import _env, _error_of, _run

from enrs.identity import subscriptions
from enrs.identity.config import IdentityConfig
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT


def test_the_commands(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    _run(env, "migrate")
    unregistered = _run(
        env, "notifications", "add", "chu", "--mllp", "127.0.0.1:2600", "--authority", CHU,
        check=False,
    )  # fmt: skip
    assert "not a registered domain" in _error_of(unregistered)
    _run(env, "identity", "domains", "add", CHU, "--namespace", "CHU")
    added = _run(
        env, "notifications", "add", "chu", "--mllp", "127.0.0.1:2600", "--authority", CHU,
        "--application", "DPI", "--facility", "CHU",
    )  # fmt: skip
    assert json.loads(added.stdout) == {
        "name": "chu",
        "endpoint": "127.0.0.1:2600",
        "authority": CHU,
        "domains": [CHU, IdentityConfig(PLACEHOLDER_OID_ROOT).rri_authority],
        "format": "hl7v2",
        "application": "DPI",
        "facility": "CHU",
    }
    _run(
        env, "notifications", "add", "entrepot", "--url", "https://entrepot.example/hook",
        "--header", "Authorization: Bearer s3cret",
    )  # fmt: skip
    listed = _run(env, "notifications", "list").stdout.splitlines()
    assert listed == [
        "chu\tmllp 127.0.0.1:2600\tactive\tpending 0\tsent 0\trejected 0",
        "entrepot\thttp https://entrepot.example/hook\tactive\tpending 0\tsent 0\trejected 0",
    ]
    assert "stopped" in _run(env, "notifications", "stop", "chu").stdout
    assert "\tstopped\t" in _run(env, "notifications", "list").stdout.splitlines()[0]
    assert "started" in _run(env, "notifications", "start", "chu").stdout
    assert "0 message(s) waiting" in _run(env, "notifications", "retry", "chu").stdout
    twice = _run(env, "notifications", "add", "chu", "--url", "http://x.example/", check=False)
    assert "already a destination 'chu'" in _error_of(twice)
    assert "no destination 'nope'" in _error_of(
        _run(env, "notifications", "retry", "nope", check=False)
    )
    neither = _run(env, "notifications", "add", "x", check=False)
    assert neither.returncode == 2 and "--mllp HOST:PORT or --url URL" in neither.stderr


def test_enrs_serve_sends_the_notifications(tmp_path: Path, database_url: str) -> None:
    """The CHU's GAM merges two of its identities over MLLP; the document store, subscribed,
    gets the ADT^A40 from the server's notifications listener."""
    env = _env(tmp_path, database_url)
    _run(env, "migrate")
    _run(env, "identity", "domains", "add", CHU, "--namespace", "CHU")
    _run(env, "clients", "create", "GAM CHU", "--mllp-sender", CHU, "--authority", CHU)
    store = MllpReceiver().start()
    _run(env, "notifications", "add", "entrepot", "--mllp", f"127.0.0.1:{store.port}",
         "--domain", CHU)  # fmt: skip
    mllp = free_port()
    try:
        with live_server(
            data_dir=tmp_path / "var", database_url=database_url,
            extra_env={"ENRS_MLLP_PORT": str(mllp)},
        ) as server:  # fmt: skip
            head = f"MSH|^~\\&|GAM|CHU^{CHU}^ISO|ENRS|REGION|20260101||ADT^{{}}|{{}}|P|2.5\r"
            pid = "PID|1||{}^^^&" + CHU + "&ISO^PI||{}^{}^^^^L||{}|{}|||||||||||||||||||||||PROV\r"
            with MLLPClient("127.0.0.1", mllp) as client:
                for control, ipp, name, given, dob, sex in (
                    ("1", "1", "JOSEPH", "Marie", "19610409", "F"),
                    ("2", "2", "DUCLOS", "Paul", "19900130", "M"),
                ):
                    message = head.format("A28^ADT_A05", control)
                    message += pid.format(ipp, name, given, dob, sex)
                    ack = hl7.parse(client.send_message(message)[1:-2].decode())
                    assert str(ack.segment("MSA")[1]) == "AA", server.log()
                merge = head.format("A40^ADT_A39", "3") + "EVN|A40|20260101\r"
                merge += pid.format("1", "JOSEPH", "Marie", "19610409", "F")
                merge += f"MRG|2^^^&{CHU}&ISO^PI\r"
                ack = hl7.parse(client.send_message(merge)[1:-2].decode())
                assert str(ack.segment("MSA")[1]) == "AA"
            assert wait_until(lambda: store.messages(), timeout=30), server.log()
        [a40] = store.messages()
        assert str(a40.segment("MSH")[9]) == "ADT^A40^ADT_A39"
        assert str(a40.segment("MRG")[1]) == f"2^^^CHU&{CHU}&ISO^PI"
        listed = _run(env, "notifications", "list").stdout
        assert "\tsent 1\t" in listed
    finally:
        store.stop()


def test_the_admins_page_and_api(client: TestClient, factory: Factory, db: Database) -> None:
    register_domains(db, [CHU, CLINIC])
    config = IdentityConfig(PLACEHOLDER_OID_ROOT)
    with db.transaction() as session:
        subscriptions.subscribe(
            session, config, name="clinique", transport="mllp", endpoint="127.0.0.1:9",
            authority=CLINIC,
        )  # fmt: skip
    # The API, for a client given the scope.
    reader, secret = register_client(db, "system/Subscription.rs", [])
    token = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(reader, secret)
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    listed = client.get("/api/admin/notifications", headers=bearer)
    assert listed.status_code == 200
    [dest] = listed.json()["destinations"]
    assert (dest["name"], dest["authority"], dest["pending"], dest["failing"]) == (
        "clinique", CLINIC, 0, None,
    )  # fmt: skip
    denied = client.post("/api/admin/notifications/clinique/retry", headers=bearer)
    assert denied.status_code == 403  # read only
    assert client.get("/api/admin/notifications").status_code == 401
    # The portal page, for admins only.
    factory.user("root", roles=("admin",))
    factory.user("alice")
    log_in(client, "alice")
    assert client.get("/admin/notifications").status_code == 403
    client.cookies.clear()
    log_in(client, "root")
    text = html.unescape(client.get("/").text)
    assert '<a href="/admin/notifications">Notifications</a>' in text
    page = client.get("/admin/notifications")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "clinique" in text and "MLLP 127.0.0.1:9" in text and "à jour" in text
    assert client.get("/api/admin/notifications").status_code == 200  # the admin's session
    retried = client.post(
        "/admin/notifications/clinique/relancer",
        data={"csrf": csrf_of(client.get("/account").text)},
        follow_redirects=False,
    )
    assert retried.status_code == 303
    forged = client.post("/admin/notifications/clinique/relancer", data={"csrf": "x"})
    assert forged.status_code == 403
