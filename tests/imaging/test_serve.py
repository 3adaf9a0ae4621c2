"""The DICOM listener started by ``enrs serve`` (ENRS_DICOM_PORT), its peers registered with
``enrs imaging ae``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from enrs.imaging.encoding import read_file
from enrs.imaging.models import Instance
from enrs.imaging.transcoding import EXPLICIT
from enrs.kit.storage.base import BLOB_SUFFIX
from enrs.settings import Settings
from tests.imaging.conftest import JPEG_LS, compressed, ct_dataset, smooth_ct, write
from tests.imaging.web_world import parts
from tests.support.live_server import LiveServer, enrs_command, free_port, live_server
from tests.support.portal import PASSWORD, log_in

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _enrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(enrs_command(*args), env=env, capture_output=True, text=True, timeout=120)


def _dcmtk(
    tool: str, port: int, *files: Path, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, *options, "-aet", "MODALITY", "-aec", "ARCHIVE", "127.0.0.1", str(port),
         *map(str, files)],
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


@contextmanager
def _archive_with(
    tmp_path: Path, database_url: str, *files: Path, options: tuple[str, ...] = ()
) -> Iterator[tuple[LiveServer, httpx.Client, Path]]:
    """``enrs serve`` with its DICOM listener, ``files`` stored by storescu (``options``) from
    a registered modality, and an httpx client logged in as the cell; and its data folder."""
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env.update(ENRS_DATA_DIR=str(data_dir), ENRS_DATABASE_URL=database_url)
    assert _enrs(env, "imaging", "ae", "add", "MODALITY", "--host", "127.0.0.1", "--port", "104",
                 "--store").returncode == 0  # fmt: skip
    made = _enrs(env, "users", "create", "cellule", "--name", "Cellule", "--role",
                 "identitovigilance", "--password", PASSWORD)  # fmt: skip
    assert made.returncode == 0, made.stderr
    port = free_port()
    dicom = {"ENRS_DICOM_PORT": str(port), "ENRS_DICOM_AET": "ARCHIVE"}
    with (
        live_server(data_dir=data_dir, database_url=database_url, extra_env=dicom) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        deadline = time.monotonic() + 30
        while (stored := _dcmtk("storescu", port, *files, options=options)).returncode and (
            time.monotonic() < deadline
        ):
            time.sleep(0.3)  # the listener's process may start after the HTTP one answers
        assert stored.returncode == 0, stored.stderr
        log_in(http, "cellule")
        yield server, http, data_dir


def _sop_uids(answer: httpx.Response) -> list[str]:
    return [str(read_file(content).SOPInstanceUID) for _, content in parts(answer)]


def test_a_study_goes_out_as_its_files_are_read(tmp_path: Path, database_url: str) -> None:
    """WADO-RS sends a study's files as it reads them: a file lost after the first cuts the
    answer (no closing delimiter, no last chunk: the client sees it incomplete, and the server
    says so in its log), and the server goes on serving; a first file lost is an error
    status. Read through a real server, whose body a client receives while it is sent."""
    first = ct_dataset(seed=1, size=256)
    files = [write(first, tmp_path / "1.dcm")]
    for n in (2, 3):
        ds = ct_dataset(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID,
                        seed=n, size=256)  # fmt: skip
        ds.InstanceNumber = n
        files.append(write(ds, tmp_path / f"{n}.dcm"))
    with _archive_with(tmp_path, database_url, *files) as (server, http, data_dir):
        url = f"/dicomweb/studies/{first.StudyInstanceUID}"
        whole = http.get(url, headers={"Accept": ACCEPT})
        assert whole.status_code == 200
        order = _sop_uids(whole)
        assert len(order) == 3 and whole.content.endswith(b"--\r\n")

        settings = Settings(data_dir=data_dir, database_url=database_url)
        engine = create_engine(database_url)
        with engine.connect() as conn:
            keys = dict(conn.execute(select(Instance.sop_instance_uid, Instance.blob_key)).all())
        engine.dispose()

        def lose(sop_uid: str) -> None:
            (settings.storage_path / f"{keys[sop_uid]}{BLOB_SUFFIX}").unlink()

        lose(order[2])
        received = b""
        with http.stream("GET", url, headers={"Accept": ACCEPT}) as cut:
            assert cut.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in cut.iter_bytes():
                    received += chunk
        assert received.count(b"\r\nContent-Type: application/dicom") == 2
        assert [uid for uid in order if uid.encode() in received] == order[:2]
        assert not received.endswith(b"--\r\n")
        assert (
            f"study {first.StudyInstanceUID}: an instance could not be read or decoded"
            in server.log()
        )

        one = http.get(f"{url}/series/{first.SeriesInstanceUID}/instances/{order[0]}",
                       headers={"Accept": ACCEPT})  # fmt: skip
        assert one.status_code == 200 and _sop_uids(one) == order[:1]
        lose(order[0])
        refused = http.get(url, headers={"Accept": ACCEPT})
        assert refused.status_code >= 400 and refused.status_code != 403


def test_compressed_instances_decoded_under_enrs_serve(tmp_path: Path, database_url: str) -> None:
    """The decoding pool (:mod:`enrs.imaging.decoding`) from the processes of ``enrs serve``
    (its HTTP worker, itself a spawned process): a JPEG-LS instance stored by storescu comes
    out decoded and rendered, and the server stops cleanly with its pool."""
    ds = smooth_ct(size=64)
    path = compressed(write(ds, tmp_path / "ct.dcm"), JPEG_LS)
    with _archive_with(tmp_path, database_url, path, options=("-xt",)) as (server, http, _):
        url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
        explicit = http.get(url, headers={"Accept": ACCEPT.replace("*", EXPLICIT)})
        assert explicit.status_code == 200, explicit.text
        ((kind, content),) = parts(explicit)
        assert kind.endswith(f"transfer-syntax={EXPLICIT}")
        assert read_file(content).PixelData == ds.PixelData
        png = http.get(f"{url}/rendered", headers={"Accept": "image/png"})
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.process.returncode == 0, server.log()
    assert "Traceback" not in server.log()
