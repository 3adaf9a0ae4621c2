"""Run the real ``enrs serve`` command in a subprocess, for tests with real clients (browser,
OIDC provider, concurrent HTTP)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import enrs
from enrs.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def enrs_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "enrs", *args]


def run_enrs(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``enrs ARGS`` run as an administrator would, on the test's database and data folder
    (this checkout's code), ``env`` added to its environment."""
    environ = {
        **os.environ,
        "ENRS_DATA_DIR": str(settings.data_dir),
        "ENRS_DATABASE_URL": settings.database_url,
        "ENRS_BASE_URL": settings.base_url,
        "PYTHONPATH": str(Path(enrs.__file__).parents[1]),
        **env,
    }
    return subprocess.run(
        enrs_command(*args), capture_output=True, text=True, env=environ, timeout=120
    )


@contextmanager
def live_server(
    *,
    data_dir: Path,
    database_url: str,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    dev: bool = True,
    start_timeout: float = 60,
) -> Iterator[LiveServer]:
    """Start ``enrs serve`` and wait until ``/healthz`` answers; stop it with SIGTERM.

    ``dev``: development mode (``--dev``: the placeholder OID root and test INS accepted, /docs
    open); a production start needs ``ENRS_OID_ROOT`` in ``extra_env``. ``start_timeout``: seconds
    to wait for ``/healthz`` (each of its processes imports the platform first: a few seconds, but
    over 30 when the suite's workers all start servers at once on two cores). The server runs in
    ``data_dir`` with no ``ENRS_*`` variable but those given: no developer's ``.env`` is read."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(
        ENRS_DATA_DIR=str(data_dir),
        ENRS_DATABASE_URL=database_url,
        ENRS_HTTP_PORT=str(port),
        ENRS_HTTP_HOST="127.0.0.1",
        ENRS_BASE_URL=base_url,
        ENRS_HTTP_WORKERS=str(workers),
        ENRS_LOG_LEVEL="warning",
        ENRS_MLLP_PORT="0",
        ENRS_DICOM_PORT="0",
        ENRS_MAIL_SERVERS="off",  # the mail tests start them on their own ports
    )
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "serve.log"
    with open(log_path, "wb") as log:
        command = enrs_command("serve", *(["--dev"] if dev else []))
        proc = subprocess.Popen(command, env=env, cwd=data_dir, stdout=log, stderr=log)
    server = LiveServer(base_url, proc, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"enrs serve exited ({proc.returncode}):\n{server.log()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"enrs serve did not answer in {start_timeout:.0f} s:\n{server.log()}"
                )
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
