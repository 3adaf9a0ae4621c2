"""Local-filesystem blob backend.

A blob ``a/b/c`` is stored as ``<root>/a/b/c.blob`` (ciphertext) and ``<root>/a/b/c.meta.json``
(meta). Every write goes to a hidden temp file (fsync'd) then ``os.replace``; the folder is
fsync'd after the rename. Readers and writers of a key serialise on one of 64 ``fcntl`` lock
files under ``<root>/.locks`` (shared for reads, exclusive for writes), so a reader never sees a
new ciphertext with an old meta, even across worker processes. Folders and files are private
(0700 / 0600). Empty folders left by deletions are not pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from . import crypto
from .base import BLOB_SUFFIX, META_SUFFIX, BlobStorage, StorageUnavailable, Stored

_LOCK_STRIPES = 64
_LOCK_DIR = ".locks"


def _unavailable(action: str, exc: OSError) -> StorageUnavailable:
    return StorageUnavailable(f"Blob storage cannot {action}: {exc.strerror or exc}")


class FsBlobStorage(BlobStorage):
    """Blobs in a local (or network-mounted, POSIX-locking) folder."""

    def __init__(self, root: Path, keyring: crypto.MasterKeyring) -> None:
        super().__init__(keyring)
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FsBlobStorage({str(self.root)!r})"

    # -- paths and locks ----------------------------------------------------------------------

    def _paths(self, key: str) -> tuple[Path, Path]:
        # ``key`` was validated: relative, no empty/'.'/'..' segments, safe charset.
        return self.root / f"{key}{BLOB_SUFFIX}", self.root / f"{key}{META_SUFFIX}"

    def _makedirs(self, path: Path) -> None:
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self, key: str, *, exclusive: bool) -> Iterator[None]:
        stripe = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4]) % _LOCK_STRIPES
        lock_dir = self.root / _LOCK_DIR
        path = lock_dir / f"{stripe:02d}.lock"
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                self._makedirs(lock_dir)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _unavailable("take a lock", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- primitives ---------------------------------------------------------------------------

    def _load(self, key: str, *, content: bool) -> Stored | None:
        blob_path, meta_path = self._paths(key)
        try:
            with self._locked(key, exclusive=False):
                try:
                    meta = meta_path.read_bytes()
                except (FileNotFoundError, NotADirectoryError):
                    return None
                data: bytes | None = None
                if content:
                    with contextlib.suppress(FileNotFoundError):
                        data = blob_path.read_bytes()
        except OSError as exc:
            raise _unavailable("read", exc) from None
        return Stored(meta=meta, tag=hashlib.sha256(meta).hexdigest(), content=data)

    def _store(self, key: str, content: bytes, meta: bytes) -> None:
        blob_path, meta_path = self._paths(key)
        temps: list[Path] = []
        try:
            self._makedirs(blob_path.parent)
            temps.append(crypto.write_temp_file(blob_path, content))
            temps.append(crypto.write_temp_file(meta_path, meta))
            with self._locked(key, exclusive=True):
                os.replace(temps[0], blob_path)
                os.replace(temps[1], meta_path)
            temps.clear()
            crypto.fsync_dir(blob_path.parent)
        except OSError as exc:
            raise _unavailable("write", exc) from None
        finally:
            for tmp in temps:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _swap_meta(self, key: str, meta: bytes, expected_tag: str) -> bool:
        _, meta_path = self._paths(key)
        try:
            with self._locked(key, exclusive=True):
                try:
                    current = meta_path.read_bytes()
                except FileNotFoundError:
                    return False
                if hashlib.sha256(current).hexdigest() != expected_tag:
                    return False
                crypto.replace_atomically(meta_path, meta)
        except OSError as exc:
            raise _unavailable("write", exc) from None
        return True

    def _remove(self, key: str) -> None:
        try:
            with self._locked(key, exclusive=True):
                for path in reversed(self._paths(key)):  # meta first: it is the commit point
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        path.unlink()
        except OSError as exc:
            raise _unavailable("delete", exc) from None

    def _scan(self, prefix: str) -> Iterator[str]:
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        try:
            yield from self._walk(start, f"{base}/" if base else "", prefix)
        except OSError as exc:
            raise _unavailable("list", exc) from None

    def _walk(self, folder: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            # Materialise the folder listing so renames during a rewrap cannot skip entries.
            with os.scandir(folder) as it:
                entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in it)
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, is_dir in entries:
            if name.startswith("."):
                continue  # lock folder, temp files, probes
            path = f"{rel}{name}"
            if is_dir:
                sub = f"{path}/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    yield from self._walk(folder / name, sub, prefix)
            elif name.endswith(META_SUFFIX):
                key = path[: -len(META_SUFFIX)]
                if key.startswith(prefix):
                    yield key

    def _probe(self) -> None:
        try:
            self._makedirs(self.root)
            probe = self.root / f".probe-{secrets.token_hex(8)}"
            crypto.write_temp_file(probe, b"ok").unlink()
        except OSError as exc:
            raise _unavailable("write in its folder", exc) from None
