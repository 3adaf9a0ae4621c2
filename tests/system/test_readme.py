"""The README: its configuration table lists every setting, and its examples work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.live_server import enrs_command, free_port, live_server

from enrs.settings import Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [
        f"ENRS_{n.upper()}" for n in Settings.model_fields if f"`ENRS_{n.upper()}`" not in readme
    ]
    assert missing == []


def _try_it_blocks(readme: str) -> list[str]:
    """The README's ```sh try-it blocks, in order."""
    return re.findall(r"^```sh try-it\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)


def test_the_readme_examples_work_against_a_live_server(tmp_path: Path, database_url: str) -> None:
    """The "Try it" commands, run as a newcomer would after ``make run``: demo data loaded,
    from the repository root (here a folder whose ``var/`` is the server's data dir), the
    default ports replaced by the test server's."""
    blocks = _try_it_blocks((Path(__file__).parents[2] / "README.md").read_text())
    assert len(blocks) == 5
    data_dir = tmp_path / "var"
    mllp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    for step in ("migrate", ("demo", "load")):
        args = (step,) if isinstance(step, str) else step
        subprocess.run(enrs_command(*args), env=env, cwd=tmp_path, check=True, timeout=120)
    venv_bin = Path(sys.executable).parent
    with live_server(
        data_dir=data_dir,
        database_url=database_url,
        extra_env={"ENRS_MLLP_PORT": str(mllp_port)},
    ) as server:
        port = server.base_url.rsplit(":", 1)[1]
        script = "\n".join(blocks)
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        script = script.replace("-p 2575", f"-p {mllp_port}")
        script = script.replace(".venv/bin/", f"{venv_bin}/")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env={k: v for k, v in env.items() if not k.startswith("ENRS_")},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "HTTP/1.1 201" in out and "enrs-link-method: new" in out.lower(), out
    decode = json.JSONDecoder().raw_decode
    search, _ = decode(out, out.index('{"resourceType":"Bundle"'))
    assert search["total"] == 1
    assert search["entry"][0]["resource"]["name"][0]["family"] == "MARTIN"
    pix, _ = decode(out, out.index('{"resourceType":"Parameters"'))
    values = {p["valueIdentifier"]["value"] for p in pix["parameter"] if "valueIdentifier" in p}
    assert "285039720912360" in values  # the INS of a qualified identity is shared
    assert "MSA|AA|MSG0001" in out, out
    # The ADT-fed identity read over PDQm: NK1 translated to a FHIR contact.
    richard, _ = decode(out, out.rindex('{"resourceType":"Bundle"'))
    [contact] = richard["entry"][0]["resource"]["contact"]
    assert contact["name"] == {"family": "RICHARD", "given": ["Anne"]}
    assert contact["gender"] == "female"
    assert contact["relationship"][0]["coding"][0]["code"] == "SPO"
