"""The DICOM listener started by ``enrs serve`` (ENRS_DICOM_PORT), its peers registered with
``enrs imaging ae``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.imaging.conftest import ct_dataset, write
from tests.support.live_server import enrs_command, free_port, live_server


def _enrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(enrs_command(*args), env=env, capture_output=True, text=True, timeout=120)


def _dcmtk(tool: str, port: int, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_enrs_serve_runs_the_dicom_listener(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    added = _enrs(env, "imaging", "ae", "add", "MODALITY", "--host", "127.0.0.1",
                  "--port", "104", "--store")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "MODALITY\t127.0.0.1:104\tstore\t-\n"
    bad = _enrs(env, "imaging", "ae", "add", "WAY-TOO-LONG-AE-TITLE", "--host", "h", "--port", "1")
    assert bad.returncode == 1 and "is not an AE title" in bad.stderr
    assert _enrs(env, "imaging", "ae", "list").stdout == added.stdout
    port = free_port()
    dicom = {"ENRS_DICOM_PORT": str(port), "ENRS_DICOM_AET": "ARCHIVE"}
    with live_server(data_dir=data_dir, database_url=database_url, extra_env=dicom):
        deadline = time.monotonic() + 30
        while (echo := _dcmtk("echoscu", port)).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.3)  # the listener's process may start after the HTTP one answers
        assert echo.returncode == 0, echo.stderr
        stored = _dcmtk("storescu", port, write(ct_dataset(), tmp_path / "ct.dcm"))
        assert stored.returncode == 0, stored.stderr
        removed = _enrs(env, "imaging", "ae", "remove", "MODALITY")
        assert removed.stdout == "MODALITY removed\n"
        refused = _dcmtk("echoscu", port)
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
    assert _enrs(env, "imaging", "ae", "remove", "MODALITY").returncode == 1
