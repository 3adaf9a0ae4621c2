"""What a viewer opening studies asks the archive for: a study's metadata, then frames one at a
time, over WADO-RS from the real server, next to reading the same things from whole blobs.

    .venv/bin/python -m bench.imaging_viewer [--ct 200] [--frames 50] [--rows 2048]
        [--columns 1664] [--repeat 30] [--postgres] [--http-only]

**The studies**, stored for real by DCMTK's ``storescu`` into ``enrs serve`` (SQLite by default,
``--postgres``: a temporary PostgreSQL database): a CT study of ``--ct`` instances (512 × 512 ×
16 bits, 0.5 MB each; pixels pseudo-random), and a breast tomosynthesis-like multi-frame instance
(Breast Tomosynthesis Image Storage, uncompressed: ``--frames`` frames of ``--rows`` ×
``--columns`` × 16 bits; the defaults give 6.8 MB a frame, 341 MB in all).

**The requests**, by httpx on one keep-alive connection with the portal session of a user of the
identitovigilance cell (as the OHIF viewer the platform serves makes them): the CT study's
metadata (``/dicomweb/studies/{uid}/metadata``), a frame of the tomosynthesis instance drawn at
random (``…/frames/{n}``, ``application/octet-stream``: as stored), the one frame of a CT
instance drawn at random, and a frame of the tomosynthesis rendered as PNG
(``…/frames/{n}/rendered``); ``--repeat`` times each. Printed: p50 / p95 / max latency, MB/s of
the bodies, and the server's peak RSS (its process tree, sampled every 0.2 s).

**The baseline**, in this process and the same run, on the same blobs: what the server did per
request before it read blobs in parts (``BlobStorage.get``: the whole blob read, decrypted and
checked, then pydicom on the whole file), against the same reads done in parts
(``BlobStorage.reader`` and :mod:`enrs.imaging.parts`, what it does now), each with its peak of
Python allocations (tracemalloc). The ratio printed is whole / parts: how many times faster the
read in parts is, without HTTP.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import BreastTomosynthesisImageStorage, generate_uid
from sqlalchemy import create_engine, text
from tests.imaging.conftest import ct_dataset, write

from bench._load import percentiles
from bench.http_baseline import PG_ADMIN_URL, temporary_postgres
from bench.imaging_query import STORE_AET, Archive, archive, migrate
from enrs.imaging import parts
from enrs.imaging.encoding import read_file
from enrs.imaging.rendering import PNG, render
from enrs.kit.storage import BlobStorage, open_storage
from enrs.settings import Settings

MB = 1_000_000
OCTET = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
JSON = {"Accept": "application/dicom+json"}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=int, default=200, help="instances of the CT study")
    parser.add_argument("--frames", type=int, default=50, help="frames of the multi-frame one")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--columns", type=int, default=1664)
    parser.add_argument("--repeat", type=int, default=30, help="requests of each kind")
    parser.add_argument("--postgres", action="store_true", help="a temporary PostgreSQL base")
    parser.add_argument(
        "--http-only", action="store_true", help="no in-process baseline (an older server's run)"
    )
    return parser.parse_args(argv)


def _storescu(server: Archive, path: Path) -> None:
    command = ["storescu", "-R", "-aet", STORE_AET, "-aec", "ENRS", "+sd", "127.0.0.1",
               str(server.dicom_port), str(path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"storescu: {done.stderr[-2000:]}")


def store(server: Archive, folder: Path, args: argparse.Namespace) -> None:
    """The CT study and the multi-frame instance, stored by storescu."""
    study, series = generate_uid(), generate_uid()
    ct = folder / "ct"
    ct.mkdir()
    for i in range(args.ct):
        ds = ct_dataset(patient_id="VIEW1", issuer="1.2.250.1.999.1.1.2", study_uid=study,
                        series_uid=series, seed=i, size=512)  # fmt: skip
        ds.InstanceNumber = i + 1
        write(ds, ct / f"{i:05d}.dcm")
    _storescu(server, ct)
    rng = random.Random(7)
    tomo = ct_dataset(patient_id="VIEW1", issuer="1.2.250.1.999.1.1.2", size=8)
    tomo.SOPClassUID = tomo.file_meta.MediaStorageSOPClassUID = BreastTomosynthesisImageStorage
    tomo.Modality, tomo.Rows, tomo.Columns = "MG", args.rows, args.columns
    tomo.NumberOfFrames = args.frames
    frame = args.rows * args.columns * 2
    tomo.PixelData = b"".join(rng.randbytes(frame) for _ in range(args.frames))
    path = write(tomo, folder / "tomo.dcm")
    del tomo
    _storescu(server, path)
    path.unlink()


def _rows(database_url: str, frames: int) -> list[tuple[str, str, str, str, int]]:
    """(study, series, instance UIDs, blob key, frames) of every stored instance."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT st.study_uid, se.series_uid, i.sop_instance_uid, i.blob_key, "
                "i.sop_class_uid FROM imaging_instance i "
                "JOIN imaging_series se ON se.id = i.series_id "
                "JOIN imaging_study st ON st.id = se.study_id"
            )
        ).all()
    engine.dispose()
    tomo = str(BreastTomosynthesisImageStorage)
    return [(r[0], r[1], r[2], r[3], frames if r[4] == tomo else 1) for r in rows]


def _timed(call: Callable[[int], int], repeat: int) -> dict[str, Any]:
    took, size = [], 0
    for n in range(repeat):
        began = time.perf_counter_ns()
        size += call(n)
        took.append(time.perf_counter_ns() - began)
    p50, p95, top = (v / 1e6 for v in percentiles(took, (50, 95, 100)))
    return {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "max_ms": round(top, 1),
            "mb_per_s": round(size / MB / (sum(took) / 1e9), 1)}  # fmt: skip


def _peak(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def _get(http: httpx.Client, path: str, headers: dict[str, str]) -> int:
    answer = http.get(path, headers=headers)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
    return len(answer.content)


def measure(server: Archive, args: argparse.Namespace) -> dict[str, Any]:
    rows = _rows(server.database_url, args.frames)
    tomo = next(r for r in rows if r[4] > 1)
    ct = [r for r in rows if r[4] == 1]
    rng = random.Random(11)
    picks = [rng.randrange(1, tomo[4] + 1) for _ in range(args.repeat)]
    ct_picks = [rng.choice(ct) for _ in range(args.repeat)]
    study = ct[0][0]
    tomo_url = f"/dicomweb/studies/{tomo[0]}/series/{tomo[1]}/instances/{tomo[2]}/frames/"

    def ct_url(row: tuple[str, str, str, str, int]) -> str:
        return f"/dicomweb/studies/{row[0]}/series/{row[1]}/instances/{row[2]}/frames/1"

    http = server.http
    ways: dict[str, Callable[[int], int]] = {
        f"HTTP: metadata of the CT study ({len(ct)} instances)": lambda _n: _get(
            http, f"/dicomweb/studies/{study}/metadata", JSON
        ),
        f"HTTP: a frame of the tomosynthesis ({tomo[4]} frames)": lambda n: _get(
            http, tomo_url + str(picks[n]), OCTET
        ),
        "HTTP: the frame of a CT instance": lambda n: _get(http, ct_url(ct_picks[n]), OCTET),
        "HTTP: a frame of the tomosynthesis, rendered (PNG)": lambda n: _get(
            http, f"{tomo_url}{picks[n]}/rendered", {"Accept": "image/png"}
        ),
    }
    found: dict[str, Any] = {}
    for name, way in ways.items():
        way(0)  # a first request: the connection and the server's caches
        server.sampler.reset_peak()
        found[name] = _timed(way, args.repeat)
        time.sleep(2 * server.sampler.interval)
        found[name]["server_peak_rss_mb"] = round(server.sampler.peak_rss / 2**20)

    if args.http_only:
        return found
    storage = open_storage(Settings(data_dir=server.data_dir, database_url=server.database_url))
    size = args.rows * args.columns * 2
    local: dict[str, tuple[Callable[[int], int], Callable[[int], int]]] = {
        "metadata of the CT study": (
            lambda _n: sum(_whole_metadata(storage, r[3]) for r in ct),
            lambda _n: sum(_parts_metadata(storage, r[3]) for r in ct),
        ),
        "a frame of the tomosynthesis": (
            lambda n: _whole_frame(storage, tomo[3], picks[n], size),
            lambda n: _parts_frame(storage, tomo[3], picks[n]),
        ),
        "the frame of a CT instance": (
            lambda n: _whole_frame(storage, ct_picks[n][3], 1, 512 * 512 * 2),
            lambda n: _parts_frame(storage, ct_picks[n][3], 1),
        ),
        "a frame of the tomosynthesis, rendered": (
            lambda n: len(render(storage.get(tomo[3]), picks[n], PNG)),
            lambda n: _parts_rendered(storage, tomo[3], picks[n]),
        ),
    }
    for name, (whole, in_parts) in local.items():
        assert whole(0) == in_parts(0), name  # the same bytes, or attributes, either way
        old, new = _timed(whole, args.repeat), _timed(in_parts, args.repeat)
        old["peak_alloc_mb"] = round(_peak(lambda w=whole: w(1)), 1)  # type: ignore[misc]
        new["peak_alloc_mb"] = round(_peak(lambda p=in_parts: p(1)), 1)  # type: ignore[misc]
        found[f"in process: {name}, whole blob (before)"] = old
        found[f"in process: {name}, in parts (now)"] = new
        found[f"ratio whole/parts p50: {name}"] = round(old["p50_ms"] / new["p50_ms"], 1)
    storage.close()
    return found


def _whole_metadata(storage: BlobStorage, key: str) -> int:
    ds = read_file(storage.get(key))
    del ds.PixelData
    return len(ds.to_json_dict())


def _parts_metadata(storage: BlobStorage, key: str) -> int:
    with storage.reader(key) as reader:
        return len(parts.metadata(parts.open_file(reader)).to_json_dict())


def _whole_frame(storage: BlobStorage, key: str, number: int, size: int) -> int:
    data = read_file(storage.get(key)).PixelData
    return len(data[(number - 1) * size : number * size])


def _parts_frame(storage: BlobStorage, key: str, number: int) -> int:
    with storage.reader(key) as reader:
        return sum(map(len, parts.frames(parts.open_file(reader), [number])))


def _parts_rendered(storage: BlobStorage, key: str, number: int) -> int:
    with storage.reader(key) as reader:
        return len(render(parts.one_frame(parts.open_file(reader), number), 1, PNG))


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="enrs-viewer-")))
        url = f"sqlite:///{tmp / 'data' / 'enrs.db'}"
        if args.postgres:
            url = stack.enter_context(temporary_postgres(PG_ADMIN_URL))
        migrate(tmp / "data", url)
        server = stack.enter_context(archive(tmp / "data", url))
        began = time.perf_counter()
        (tmp / "files").mkdir()
        store(server, tmp / "files", args)
        print(f"stored in {time.perf_counter() - began:.1f} s "
              f"({'PostgreSQL' if args.postgres else 'SQLite'})")  # fmt: skip
        for name, f in measure(server, args).items():
            if isinstance(f, dict):
                extra = ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("p50_ms",))
                print(f"  {name:<62} p50 {f['p50_ms']:>8.1f} ms  {extra}")
            else:
                print(f"  {name:<62} {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
