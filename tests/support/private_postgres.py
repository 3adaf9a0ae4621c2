"""A private PostgreSQL server for the benches and tests, with the server's default settings
(autovacuum on, fsync on, synchronous_commit on) whatever the machine's shared server is tuned
for (the test machine's runs with autovacuum off, which no production server does), or with
settings a test needs (``fsync = off``).

``initdb`` in a temporary folder, ``pg_ctl start`` on a free port (Unix socket in the same
folder), trust authentication for the local user, stopped and removed on exit. When the
process runs as root, the server runs as the ``postgres`` system user (PostgreSQL refuses
root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _bin(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server package")
    return found


def server_available() -> bool:
    """Whether PostgreSQL's server programs are installed (``initdb``, ``pg_ctl``)."""
    try:
        _bin("initdb"), _bin("pg_ctl")
    except RuntimeError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def private_postgres(settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start a server with the defaults (plus ``settings``); yield an admin SQLAlchemy URL to
    its ``postgres`` database."""
    folder = Path(tempfile.mkdtemp(prefix="enrs-pg-"))
    data, port = folder / "data", _free_port()
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(
        _as_server_user([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    conf = {"listen_addresses": "'127.0.0.1'", "port": str(port)}
    conf["unix_socket_directories"] = f"'{folder}'"
    conf |= settings or {}
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
    ctl = [_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w"]
    subprocess.run(_as_server_user([*ctl, "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([*ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
