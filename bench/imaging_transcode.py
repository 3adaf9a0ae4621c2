"""Instances kept compressed, given out decoded (:func:`enrs.imaging.transcoding.to_explicit`),
and instances encoded losslessly (:func:`~enrs.imaging.transcoding.to_syntax`):
what a C-GET / C-MOVE sub-operation or a WADO-RS retrieval with
``transfer-syntax=1.2.840.10008.1.2.1`` pays per instance, next to baselines in the same run.

    .venv/bin/python -m bench.imaging_transcode [--ct 40] [--mg 3] [--rounds 3] [--frames 30]

Synthetic images whose values compress like real ones (a smooth field plus noise, 12 bits): CT
512 × 512 (0.5 MB decoded) and mammography 3328 × 2560 (17 MB decoded). Each is encoded in
lossless JPEG (DCMTK's dcmcjpeg), JPEG-LS (dcmcjpls), RLE (dcmcrle) and JPEG 2000 lossless
(pydicom with OpenJPEG). Timed per instance (best of ``--rounds`` passes over the files):
``to_explicit`` of each encoding; the baselines are the same call on the Implicit VR Little
Endian file (no decoding: the data set read and written again by pydicom) and DCMTK's own
decoders (``dcmdjpeg``, ``dcmdjpls``, ``dcmdrle`` run on each file, process start included).
Printed: compression ratio, instances/s, decoded MB/s, p50/p95 ms, the peak of Python
allocations in one call (tracemalloc: numpy's arrays included), and the ratio of the
decoded MB/s to the Implicit VR baseline's. Then the encoding the other way, for a peer that
takes only a compressed syntax (``to_syntax`` of each Explicit VR original into each lossless
syntax the archive encodes to), beside DCMTK's encoder where it has one (``dcmcrle``).

Then the decoding pool (:mod:`enrs.imaging.decoding`, which the archive's services call): the
JPEG 2000 files decoded in this process (``to_explicit``) and through the pool
(``decoding.explicit``, the files sent to and the answers received from another process): ms
per instance, alone, then beside a busy Python thread of this process, with how much that
thread gets done meanwhile, as a ratio to what it does alone for as long (the same thread, the
main one sleeping): what the other requests of a serving process get while an instance is
decoded.

Last, one frame of a multi-frame image (``--frames`` frames of 1024 × 1024, 12 bits; a breast
tomosynthesis has 50-70, larger), as a viewer asks for it over WADO-RS in another syntax than
the kept one: the frame alone (:func:`~enrs.imaging.transcoding.frames_in`, what the archive
does) against the baseline of the whole instance transcoded then cut (what it did before), ms
per request (best of ``--rounds``) and the peak of allocations, for a JPEG-LS instance asked
for in Explicit VR and an uncompressed one asked for in JPEG-LS.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation as MG_STORAGE
from tests.imaging.conftest import (
    ENCODERS,
    J2K,
    JPEG_LOSSLESS,
    JPEG_LS,
    RLE,
    compressed,
    ct_dataset,
    write,
)

from enrs.imaging import decoding
from enrs.imaging.parts import frames
from enrs.imaging.transcoding import ENCODABLE, EXPLICIT, frames_in, to_explicit, to_syntax

DECODERS = {JPEG_LOSSLESS: "dcmdjpeg", JPEG_LS: "dcmdjpls", RLE: "dcmdrle"}
NAMES = {JPEG_LOSSLESS: "JPEG lossless", JPEG_LS: "JPEG-LS", RLE: "RLE", J2K: "JPEG 2000"}


def _image(rows: int, columns: int, seed: int) -> bytes:
    """A smooth field plus noise, 12 bits: compresses about as a real CT or mammogram does."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    field = 1500 + 600 * np.sin(x / (columns / 7) + seed) * np.cos(y / (rows / 5))
    values = field + rng.normal(0, 12, (rows, columns))
    return np.clip(values, 0, 4095).astype("<u2").tobytes()


def _originals(folder: Path, kind: str, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        ds = ct_dataset(seed=i, size=8)
        rows, columns = (512, 512) if kind == "CT" else (3328, 2560)
        if kind == "MG":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MG_STORAGE
            ds.Modality = "MG"
        ds.Rows, ds.Columns = rows, columns
        ds.PixelData = _image(rows, columns, i)
        paths.append(write(ds, folder / f"{kind}-{i}.dcm"))
    return paths


def _implicit(path: Path) -> Path:
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    return write(ds, path.with_name(f"{path.stem}-implicit.dcm"))


def _time(
    files: list[bytes], rounds: int, work: Callable[[bytes], bytes] = to_explicit
) -> tuple[list[float], int]:
    """Seconds per call of ``work`` over the best pass, and the peak of allocations in one
    call."""
    best: list[float] = []
    for _ in range(rounds):
        took = []
        for content in files:
            start = time.perf_counter()
            work(content)
            took.append(time.perf_counter() - start)
        if not best or sum(took) < sum(best):
            best = took
    tracemalloc.start()
    work(files[0])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak


def _dcmtk(paths: list[Path], syntax: str, folder: Path, tools: dict[str, str]) -> list[float]:
    took = []
    for path in paths:
        start = time.perf_counter()
        out = folder / "dcmtk-out.dcm"
        subprocess.run([tools[syntax], str(path), str(out)], check=True)
        took.append(time.perf_counter() - start)
    return took


def _row(label: str, took: list[float], decoded: int, ratio: str, peak: int, base: float) -> str:
    per = sorted(took)
    mbs = decoded / sum(took) / 1e6
    p95 = per[min(len(per) - 1, round(0.95 * (len(per) - 1)))]
    return (
        f"{label:24s} {ratio:>7s} {len(took) / sum(took):9.1f} {mbs:8.1f} "
        f"{statistics.median(per) * 1e3:8.2f} {p95 * 1e3:8.2f} {peak / 1e6:8.1f} "
        f"{mbs / base if base else 1.0:7.2f}"
    )


def _spin(stop: threading.Event, counts: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
    counts.append(n)


def _beside(work: Callable[[], object], seconds: float | None = None) -> tuple[float, int]:
    """Seconds ``work`` took (or, without it, ``seconds`` slept) and the loops a busy thread
    made meanwhile."""
    stop, counts = threading.Event(), []
    thread = threading.Thread(target=_spin, args=(stop, counts))
    start = time.perf_counter()
    thread.start()
    if seconds is None:
        work()
    else:
        time.sleep(seconds)
    took = time.perf_counter() - start
    stop.set()
    thread.join()
    return took, counts[0]


def pool_rows(kind: str, files: list[bytes]) -> None:
    """The JPEG 2000 ``files`` decoded here and through the decoding pool (see the docstring)."""
    decoding.explicit(files[0], J2K)  # the pool started (its processes spawned) before timing
    for label, decode in (("in process", to_explicit),
                          ("decoding pool", partial(decoding.explicit, syntax=J2K))):  # fmt: skip
        start = time.perf_counter()
        for content in files:
            decode(content)
        quiet = (time.perf_counter() - start) / len(files)
        took, loops = _beside(lambda decode=decode: [decode(content) for content in files])
        alone, alone_loops = _beside(lambda: None, took)
        beside = (loops / took) / (alone_loops / alone)
        print(
            f"{kind} JPEG 2000, {label:14s} {quiet * 1e3:8.1f} ms each; beside a busy thread "
            f"{took / len(files) * 1e3:8.1f} ms each, and the thread did {beside:4.2f} of its work"
        )


def _one_call(work: Callable[[], object], rounds: int) -> tuple[float, int]:
    """The best of ``rounds`` calls of ``work`` (s), and the peak of allocations in one."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    work()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak


def frame_rows(folder: Path, frames: int, rounds: int) -> None:
    ds = ct_dataset(seed=1, size=8)
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = frames
    ds.PixelData = b"".join(_image(1024, 1024, i) for i in range(frames))
    plain = write(ds, folder / "multi-frame.dcm").read_bytes()
    kept = to_syntax(plain, JPEG_LS)
    middle = [frames // 2 + 1]
    print(f"\none frame of {frames} (1024 x 1024): {'alone ms':>9s} {'peak MB':>8s} "
          f"{'whole ms':>9s} {'peak MB':>8s} {'whole/alone':>11s}")  # fmt: skip
    for label, content, target in (
        ("JPEG-LS kept, as Explicit", kept, EXPLICIT),
        ("uncompressed, as JPEG-LS", plain, JPEG_LS),
    ):
        alone, alone_peak = _one_call(partial(frames_in, content, middle, target), rounds)
        assert frames_in(content, middle, target) == _cut(to_syntax(content, target), middle)
        whole, whole_peak = _one_call(
            lambda c=content, t=target: _cut(to_syntax(c, t), middle), max(1, rounds // 2)
        )
        print(f"{label:30s} {alone * 1e3:9.1f} {alone_peak / 1e6:8.1f} {whole * 1e3:9.1f} "
              f"{whole_peak / 1e6:8.1f} {whole / alone:11.1f}")  # fmt: skip


def _cut(content: bytes, numbers: list[int]) -> list[bytes]:
    """The frames of a file, as the archive cut them from a whole transcoded instance."""
    return frames(BytesIO(content), numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=int, default=40, help="CT instances (512 x 512)")
    parser.add_argument("--mg", type=int, default=3, help="mammography instances (3328 x 2560)")
    parser.add_argument("--rounds", type=int, default=3, help="passes; the best is kept")
    parser.add_argument("--frames", type=int, default=30, help="frames of the multi-frame image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(
            f"{'':24s} {'ratio':>7s} {'inst/s':>9s} {'MB/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} "
            f"{'peak MB':>8s} {'vs impl':>7s}"
        )
        for kind, count in (("CT", args.ct), ("MG", args.mg)):
            if not count:
                continue
            originals = _originals(folder, kind, count)
            decoded = sum(len(dcmread(p).PixelData) for p in originals)
            implicit = [_implicit(p).read_bytes() for p in originals]
            took, peak = _time(implicit, args.rounds)
            base = decoded / sum(took) / 1e6
            print(_row(f"{kind} Implicit VR (base)", took, decoded, "1.00", peak, base))
            for syntax in (JPEG_LOSSLESS, JPEG_LS, RLE, J2K):
                paths = [compressed(p, syntax) for p in originals]
                files = [p.read_bytes() for p in paths]
                size = sum(len(dcmread(p).PixelData) for p in paths)
                took, peak = _time(files, args.rounds)
                ratio = f"{decoded / size:.2f}"
                print(_row(f"{kind} {NAMES[syntax]}", took, decoded, ratio, peak, base))
                if syntax in DECODERS:
                    took = _dcmtk(paths, syntax, folder, DECODERS)
                    label = f"{kind} {NAMES[syntax]} (DCMTK)"
                    print(_row(label, took, decoded, ratio, 0, base))
            explicit = [p.read_bytes() for p in originals]
            for syntax in ENCODABLE:  # encoding (C-MOVE / WADO-RS to a compressed syntax)
                took, peak = _time(explicit, args.rounds, partial(to_syntax, target=syntax))
                size = sum(len(dcmread(compressed(p, syntax)).PixelData) for p in originals)
                ratio = f"{decoded / size:.2f}"
                print(_row(f"{kind} to {NAMES[syntax]}", took, decoded, ratio, peak, base))
                if syntax in ENCODERS:
                    took = _dcmtk(originals, syntax, folder, ENCODERS)
                    print(_row(f"{kind} to {NAMES[syntax]} (DCMTK)", took, decoded, ratio, 0, base))
            pool_rows(kind, [compressed(p, J2K).read_bytes() for p in originals])
        if args.frames:
            frame_rows(folder, args.frames, args.rounds)


if __name__ == "__main__":
    main()
