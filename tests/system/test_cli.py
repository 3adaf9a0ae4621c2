"""The ``enrs`` command as an operator runs it, in a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from tests.support.live_server import enrs_command

from enrs.kit.db import Database
from enrs.kit.storage import open_storage
from enrs.settings import Settings


def _run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``enrs ARGS`` with only the variables of ``env``, in the data dir's parent (no .env)."""
    cwd = Path(env["ENRS_DATA_DIR"]).parent
    return subprocess.run(
        enrs_command(*args),
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {"ENRS_DATA_DIR": str(tmp_path / "var"), "ENRS_DATABASE_URL": database_url}


def test_users_and_clients(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    made = _run(
        {**env, "ENRS_NEW_PASSWORD": "Very-long-pass-42"},
        "users",
        "create",
        "dr.leon",
        "--name",
        "Dr Léon",
        "--role",
        "professional",
        "--rpps",
        "10000000001",
        "--totp",
    )
    out = json.loads(made.stdout)
    assert out["username"] == "dr.leon" and out["totp_uri"].startswith("otpauth://totp/")
    weak = _run(
        {**env, "ENRS_NEW_PASSWORD": "short"},
        "users",
        "create",
        "x.y",
        "--name",
        "X",
        "--role",
        "admin",
        check=False,
    )
    assert weak.returncode != 0 and "12 characters" in weak.stderr
    bad_role = _run(
        {**env, "ENRS_NEW_PASSWORD": "Very-long-pass-42"},
        "users",
        "create",
        "z.z",
        "--name",
        "Z",
        "--role",
        "wizard",
        check=False,
    )
    assert bad_role.returncode != 0 and "unknown role" in bad_role.stderr
    client = json.loads(
        _run(env, "clients", "create", "RIS Clinique", "--scope", "system/Patient.rs").stdout
    )
    assert client["client_id"].startswith("ris-clinique-") and len(client["client_secret"]) > 30
    wrong = _run(env, "clients", "create", "X", "--scope", "user/Patient.rs", check=False)
    assert wrong.returncode != 0 and "system/ scopes only" in wrong.stderr
    assert "dr.leon" in _run(env, "users", "list").stdout


def test_audit_verify_exit_codes(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    for name in ("a", "b", "c"):
        _run(env, "clients", "create", name, "--scope", "system/Patient.rs")
    db = Database(database_url)
    from enrs.kit.audit import AuditEntry, write_entries

    write_entries(
        db, [AuditEntry(category="rest", interaction="read", agent_id=str(i)) for i in range(3)]
    )
    ok = _run(env, "audit", "verify")
    assert "3 records verified" in ok.stdout
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(text("DROP TRIGGER audit_record_no_update"))
        else:
            conn.execute(text("DROP TRIGGER audit_record_no_change ON audit_record"))
        conn.execute(text("UPDATE audit_record SET agent_id = 'intruder' WHERE seq = 2"))
    db.dispose()
    broken = _run(env, "audit", "verify", check=False)
    assert broken.returncode == 1 and "record 2" in broken.stderr


def test_keys_rotate_rewraps_blobs(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url)
    store = open_storage(settings)
    for i in range(3):
        store.put(f"docs/{i}", f"compte-rendu {i}".encode())
    before_kid, _ = store.keyring.current()
    report = json.loads(_run(env, "keys", "rotate").stdout)
    assert report["rewrapped"] == 3 and report["failed"] == 0
    assert report["current_key_id"] != before_kid
    fresh = open_storage(settings)
    assert [fresh.get(f"docs/{i}") for i in range(3)] == [
        f"compte-rendu {i}".encode() for i in range(3)
    ]
    signing = json.loads(_run(env, "keys", "rotate-signing").stdout)
    assert signing["alg"] == "ES256"


def test_clients_and_mllp_senders_bound_to_authorities(tmp_path: Path, database_url: str) -> None:
    env = {**_env(tmp_path, database_url), "ENRS_OID_ROOT": "1.2.250.1.71.9"}
    chu, clinic = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2"
    unregistered = _run(
        env, "clients", "create", "DPI CHU", "--scope", "system/Patient.cu", "--authority", chu,
        check=False,
    )  # fmt: skip
    assert f"the assigning authority {chu} is not a registered domain" in _error_of(unregistered)
    for oid, namespace in ((chu, "CHU"), (clinic, "CLINIQUE")):
        _run(env, "identity", "domains", "add", oid, "--namespace", namespace)
    # The facility registry: the CHU (FINESS 000897405) owns its PAM-FR domain and ``chu``.
    added = _run(env, "identity", "domains", "add", "--finess", "000897405", "--name", "CHU X")
    finess_oid = "1.2.250.1.71.9.2.1000897405"  # the FINESS's OID under the region's arc
    assert json.loads(added.stdout)["finess"] == "000897405"
    _run(env, "identity", "domains", "add", chu, "--owner", "000897405")
    bad_owner = _run(env, "identity", "domains", "add", clinic, "--owner", "000897406", check=False)
    assert bad_owner.returncode != 0 and "key (last digit) does not check" in bad_owner.stderr
    made = _run(
        env, "clients", "create", "DPI CHU", "--scope", "system/Patient.cu",
        "--authority", chu, "--authority", clinic,
    )  # fmt: skip
    client = json.loads(made.stdout)
    assert client["authorities"] == f"{chu} {clinic}" and "client_secret" in client
    sender = json.loads(
        _run(
            env, "clients", "create", "GAM CHU", "--mllp-sender", chu, "--finess", "000897405"
        ).stdout
    )  # fmt: skip
    assert sender == {
        "mllp_sender": chu,
        "kind": "mllp",
        "name": "GAM CHU",
        "scope": "system/Patient.crus",
        "authorities": f"{chu} {finess_oid}",  # the domains its facility owns
        "finess": "000897405",
        "active": "yes",
    }
    assert "client_secret" not in sender
    listed = _run(env, "clients", "list").stdout.splitlines()
    line = f"system\t{client['client_id']}\tDPI CHU\tsystem/Patient.cu\t{chu} {clinic}\t-\tactive"
    assert line in listed
    assert f"mllp\t{chu}\tGAM CHU\tsystem/Patient.crus\t{chu} {finess_oid}\t000897405\tactive" in (
        listed
    )
    domains = _run(env, "identity", "domains", "list").stdout.splitlines()
    assert f"{chu}\tCHU\t-\t000897405" in domains and f"{clinic}\tCLINIQUE\t-\t-" in domains
    # The clinic's domain given to the CHU: its sender writes it at once.
    _run(env, "identity", "domains", "add", clinic, "--owner", "000897405")
    assert f"mllp\t{chu}\tGAM CHU\tsystem/Patient.crus\t{chu} {clinic} {finess_oid}\t000897405\t" \
        "active" in _run(env, "clients", "list").stdout.splitlines()  # fmt: skip
    attached = json.loads(_run(env, "clients", "attach", client["client_id"], "--finess",
                               "000897405").stdout)  # fmt: skip
    assert attached["authorities"] == f"{chu} {clinic} {finess_oid}"
    revoked = json.loads(_run(env, "clients", "revoke", chu).stdout)
    assert revoked["active"] == "no"
    assert f"mllp\t{chu}\tGAM CHU\tsystem/Patient.crus\t{chu} {clinic} {finess_oid}\t000897405\t" \
        "revoked" in _run(env, "clients", "list").stdout.splitlines()  # fmt: skip
    twice = _run(env, "clients", "create", "X", "--mllp-sender", chu, check=False)
    assert twice.returncode != 0 and "already registered" in twice.stderr
    bad = _run(env, "clients", "create", "Y", "--mllp-sender", "CHU-X", check=False)
    assert bad.returncode != 0 and "MSH-4 OID" in bad.stderr
    wrong = _run(env, "clients", "create", "Z", "--scope", "system/Patient.cu",
                 "--authority", "CHU-X", check=False)  # fmt: skip
    assert wrong.returncode != 0 and "OID" in wrong.stderr
    no_finess = _run(
        env, "clients", "create", "W", "--mllp-sender", clinic, "--finess", "1.2.3", check=False
    )
    assert no_finess.returncode != 0 and "not a FINESS" in no_finess.stderr


def test_demo_load_registers_its_feeders(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    first = _run(env, "demo", "load").stdout
    assert "Demo MLLP sender: MSH-4 CHFDF^970000006^M" in first
    assert first == _run(env, "demo", "load").stdout  # idempotent
    listed = sorted(line.split("\t")[0] for line in _run(env, "clients", "list").stdout.split("\n"))
    assert [kind for kind in listed if kind] == ["mllp", "system"]


SECRET = "pw-never-shown-42"


def test_migrate_never_prints_the_database_password(tmp_path: Path, database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=SECRET)  # the test server trusts local connections: accepted
    shown = url.render_as_string(hide_password=True)
    env = _env(tmp_path, url.render_as_string(hide_password=False))
    done = _run(env, "migrate")
    assert done.stdout.strip() == f"database at head: {shown}"
    assert SECRET not in done.stdout + done.stderr
    # A server that cannot be reached: the error does not show the password either.
    unreachable = f"postgresql+psycopg://enrs:{SECRET}@127.0.0.1:1/enrs"
    failed = _run({**env, "ENRS_DATABASE_URL": unreachable}, "migrate", check=False)
    assert failed.returncode != 0 and "127.0.0.1" in failed.stderr
    assert SECRET not in failed.stdout + failed.stderr


def _error_of(done: subprocess.CompletedProcess[str]) -> str:
    """What a failed command printed: one ``Error: …`` line, exit status 1, no traceback."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), done.stderr
    return lines[-1]


def test_mistakes_print_an_error_not_a_traceback(tmp_path: Path, database_url: str) -> None:
    env = {**_env(tmp_path, database_url), "ENRS_NEW_PASSWORD": "Very-long-pass-42"}
    _run(env, "migrate")
    user = ("users", "create", "ida", "--name", "Ida", "--role", "identitovigilance")
    _run(env, *user)
    assert "already exists" in _error_of(_run(env, *user, check=False))
    short = {**env, "ENRS_NEW_PASSWORD": "short"}
    other = ("users", "create", "bo", "--name", "Bo", "--role", "admin")
    assert "12 characters" in _error_of(_run(short, *other, check=False))
    scope = ("clients", "create", "X", "--scope", "bogus")
    assert "not a SMART scope" in _error_of(_run(env, *scope, check=False))
    assert "no user 'ghost'" in _error_of(_run(env, "users", "unlock", "ghost", check=False))
    assert "no user 'ghost'" in _error_of(_run(env, "users", "disable", "ghost", check=False))
    revoke = _run(env, "clients", "revoke", "nope", check=False)
    assert "no client or MLLP sender" in _error_of(revoke)
    bad_port = _run({**env, "ENRS_HTTP_PORT": "eighty"}, "users", "list", check=False)
    assert "ENRS_HTTP_PORT" in _error_of(bad_port)
    down = {**env, "ENRS_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    assert "the database cannot be used" in _error_of(_run(down, "users", "list", check=False))
    # run from another folder than the one holding the embedded database: said so
    elsewhere = {**env, "ENRS_DATABASE_URL": f"sqlite:///{tmp_path / 'nowhere' / 'enrs.db'}"}
    add_ae = ("imaging", "ae", "add", "M", "--host", "127.0.0.1", "--port", "104")
    for command in (("users", "list"), add_ae):
        missing = _error_of(_run(elsewhere, *command, check=False))
        assert f"the database folder {tmp_path / 'nowhere'} does not exist" in missing


def test_a_disabled_user_cannot_log_in_until_enabled(tmp_path: Path, database_url: str) -> None:
    from enrs.accounts import service

    env = {**_env(tmp_path, database_url), "ENRS_NEW_PASSWORD": "Very-long-pass-42"}
    _run(env, "users", "create", "ida", "--name", "Ida", "--role", "identitovigilance")

    def login() -> str | None:
        db = Database(database_url)
        try:
            with db.transaction() as session:
                result = service.authenticate_password(
                    session,
                    username="ida",
                    password="Very-long-pass-42",
                    totp_code=None,
                    max_failures=5,
                    lockout_seconds=60,
                )
                return result.reason
        finally:
            db.dispose()

    assert login() is None
    assert _run(env, "users", "disable", "ida").stdout.strip() == "ida disabled"
    assert _run(env, "users", "list").stdout.rstrip().endswith("disabled")
    assert login() == "inactive"
    _run(env, "users", "enable", "ida")
    assert login() is None
    assert not _run(env, "users", "list").stdout.rstrip().endswith("disabled")
