"""Compressed pixel data decoded out of the serving process.

pylibjpeg's decoders hold the GIL while they run (OpenJPEG's, called with the GIL, reads its
input through a Python file object): decoding a JPEG 2000 mammogram takes about 0.9 s, during
which every other thread of the process (an HTTP worker's event loop and its requests, the DICOM
listener's associations) is all but stopped, and so does encoding one. So an instance kept in
a compressed transfer syntax is transcoded (:func:`.transcoding.to_syntax`) or rendered
(:func:`.rendering.render`), and any instance is encoded to a compressed syntax, in a pool of
processes of its own; the calling thread waits for the answer without holding the GIL. An
instance kept uncompressed and given uncompressed is handled in the calling thread, as before
(no decoder nor encoder runs).

The pool belongs to the serving process: started at its first decoding, with at most
:data:`PROCESSES` processes (``spawn``: the serving process runs threads, which ``fork`` does not
copy safely), stopped when the process exits (each pool process also ends by itself within a
second of the serving process's end, however it ended). A pool process that dies (killed, out
of memory) fails the calls it was running with :class:`DecoderUnavailable` (503) and the next
call starts a new pool. Errors raised by the decoding itself
(:class:`~.transcoding.CannotTranscode`, :class:`~.rendering.NotRenderable`) reach the caller as
they are. The decoded bytes come back through a file in shared memory (``/dev/shm``, deleted
once read; through the pool's pipe where there is none), which the calling process reads at
once rather than 64 KiB at a time: see :func:`_handed_back`, and docs/benchmarks.md for what
each way costs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pydicom.uid import UID

from enrs.imaging import rendering, transcoding
from enrs.kit.errors import ServiceUnavailable

PROCESSES = 2  # decodings at once per serving process (they are CPU-bound: one core each)
PARENT_CHECK_S = 1.0  # how often a pool process checks that the serving process is there
# Where the answers come back: memory, never a disk (mkstemp: a file of our own, mode 0600).
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


class DecoderUnavailable(ServiceUnavailable):
    """The process decoding the instance died: 503, the next call starts a new pool."""


def _in_pool(parent: int) -> None:
    """Set up each pool process: a Ctrl-C (sent to the whole process group) is left to the
    serving process, and the pool process ends once the serving process has (killed, or ended
    as multiprocessing's children end, by ``os._exit``, which skips the exit hook of
    ``concurrent.futures`` that would stop the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _current() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(
                PROCESSES, mp_context=context, initializer=_in_pool, initargs=(os.getpid(),)
            )
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def _handed_back(folder: Path, work: Callable[..., bytes], *args: object) -> bytes | Path:
    """In a pool process: ``work(*args)``, in a file of ``folder`` (shared memory) when there is
    one, else itself.
    (Read from the pool's pipe, a large answer would be received 64 KiB at a time by a
    thread of the calling process, which takes the GIL for each piece: up to the switch
    interval, 5 ms, each time another thread holds it, seconds for a mammogram.)"""
    data = work(*args)
    if not folder.is_dir():
        return data
    fd, path = tempfile.mkstemp(prefix="enrs-decoded-", dir=folder)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(path)


def off_process(work: Callable[..., bytes], *args: object) -> bytes:
    """``work(*args)`` run in the decoding pool (``work`` and ``args`` picklable)."""
    pool = _current()
    try:
        answer = pool.submit(_handed_back, SHARED_MEMORY, work, *args).result()
    except BrokenProcessPool as exc:
        _discard(pool)
        raise DecoderUnavailable("the process decoding the instance stopped; try again") from exc
    if isinstance(answer, bytes):
        return answer
    try:
        return answer.read_bytes()
    finally:
        answer.unlink()


def explicit(content: bytes, syntax: str) -> bytes:
    """:func:`.transcoding.to_explicit` of a file kept in ``syntax``, decoded out of the
    process when ``syntax`` is compressed."""
    return transcoded(content, syntax, transcoding.EXPLICIT)


def transcoded(content: bytes, syntax: str, target: str) -> bytes:
    """:func:`.transcoding.to_syntax` of a file kept in ``syntax`` into ``target``, out of the
    process when either is compressed (the encoders hold the GIL too)."""
    if UID(syntax).is_compressed or UID(target).is_compressed:
        return off_process(transcoding.to_syntax, content, target)
    return transcoding.to_syntax(content, target)


def frames(content: bytes, syntax: str, numbers: list[int], target: str) -> list[bytes]:
    """:func:`.transcoding.frames_in` of a file kept in ``syntax``, out of the process when
    either syntax is compressed."""
    if UID(syntax).is_compressed or UID(target).is_compressed:
        return _unpacked(off_process(_packed_frames, content, numbers, target))
    return transcoding.frames_in(content, numbers, target)


def _packed_frames(content: bytes, numbers: list[int], target: str) -> bytes:
    """In a pool process: the frames as one answer, each after its length (8 bytes)."""
    found = transcoding.frames_in(content, numbers, target)
    return b"".join(struct.pack("<Q", len(frame)) + frame for frame in found)


def _unpacked(data: bytes) -> list[bytes]:
    found, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<Q", data, at)
        found.append(data[at + 8 : at + 8 + size])
        at += 8 + size
    return found


def rendered(content: bytes, syntax: str, number: int, media_type: str) -> bytes:
    """:func:`.rendering.render` of a file kept in ``syntax``, decoded out of the process when
    ``syntax`` is compressed."""
    if UID(syntax).is_compressed:
        return off_process(rendering.render, content, number, media_type)
    return rendering.render(content, number, media_type)
