"""Local-filesystem blob backend.

A blob ``a/b/c`` is stored as ``<root>/a/b/c.blob`` (ciphertext) and ``<root>/a/b/c.meta.json``
(meta). Every write goes to a hidden temp file (fsync'd) then ``os.replace``; the folder is
fsync'd after the rename. Readers and writers of a key serialise on one of 64 ``fcntl`` lock
files under ``<root>/.locks`` (shared for reads, exclusive for writes), so a reader never sees a
new ciphertext with an old meta, even across worker processes. Folders and files are private
(0700 / 0600). Empty folders left by deletions are not pruned.

The cold tier is a second folder, ``cold_root`` (``ENRS_STORAGE_COLD_DIR``: a cheaper disk), laid
out the same way; the locks stay under ``<root>``. A read looks in ``<root>`` first, then in
``cold_root``; a move writes the cold copy (temp files, fsync, rename: meta last), and only then
may the warm copy be deleted (meta first), so a crash at any point leaves a whole copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from . import crypto
from .base import (
    BLOB_SUFFIX,
    COLD,
    META_SUFFIX,
    WARM,
    BlobStorage,
    Opened,
    StorageUnavailable,
    Stored,
)

_LOCK_STRIPES = 64
_LOCK_DIR = ".locks"


def _unavailable(action: str, exc: OSError) -> StorageUnavailable:
    return StorageUnavailable(f"Blob storage cannot {action}: {exc.strerror or exc}")


def _pread(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes of the file ``fd`` from ``offset``, fewer only at its end."""
    parts, done = [], 0
    try:
        while done < length:
            part = os.pread(fd, length - done, offset + done)
            if not part:
                break
            parts.append(part)
            done += len(part)
    except OSError as exc:
        raise _unavailable("read", exc) from None
    return b"".join(parts)


class FsBlobStorage(BlobStorage):
    """Blobs in a local (or network-mounted, POSIX-locking) folder."""

    def __init__(
        self, root: Path, keyring: crypto.MasterKeyring, cold_root: Path | None = None
    ) -> None:
        super().__init__(keyring)
        self.root = Path(root)
        self.cold_root = None if cold_root is None else Path(cold_root)

    def __repr__(self) -> str:
        return f"FsBlobStorage({str(self.root)!r})"

    # -- paths and locks ----------------------------------------------------------------------

    def _paths(self, key: str, root: Path | None = None) -> tuple[Path, Path]:
        # ``key`` was validated: relative, no empty/'.'/'..' segments, safe charset.
        base = self.root if root is None else root
        return base / f"{key}{BLOB_SUFFIX}", base / f"{key}{META_SUFFIX}"

    def _roots(self) -> tuple[Path, ...]:
        return (self.root,) if self.cold_root is None else (self.root, self.cold_root)

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
        return self._load_from(key, self._roots(), content=content)

    def _load_from(self, key: str, roots: tuple[Path, ...], *, content: bool) -> Stored | None:
        """Read ``key`` from the first of ``roots`` that holds its meta."""
        try:
            with self._locked(key, exclusive=False):
                for root in roots:
                    blob_path, meta_path = self._paths(key, root)
                    try:
                        meta = meta_path.read_bytes()
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    data: bytes | None = None
                    if content:
                        with contextlib.suppress(FileNotFoundError):
                            data = blob_path.read_bytes()
                    return Stored(meta=meta, tag=hashlib.sha256(meta).hexdigest(), content=data)
        except OSError as exc:
            raise _unavailable("read", exc) from None
        return None

    def _open(self, key: str) -> Opened | None:
        """The meta and the ciphertext file opened together under the key's lock: a later
        overwrite renames another file over the name, and the reads go on in this one."""
        try:
            with self._locked(key, exclusive=False):
                for root in self._roots():
                    blob_path, meta_path = self._paths(key, root)
                    try:
                        meta = meta_path.read_bytes()
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    try:
                        fd = os.open(blob_path, os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        return Opened(meta=meta, read=lambda _o, _n: None, close=lambda: None)
                    return Opened(meta=meta, read=partial(_pread, fd), close=partial(os.close, fd))
        except OSError as exc:
            raise _unavailable("read", exc) from None
        return None

    def _store(self, key: str, content: bytes | bytearray, meta: bytes) -> None:
        blob_path, meta_path = self._paths(key)
        temps: list[Path] = []
        try:
            self._makedirs(blob_path.parent)
            temps.append(crypto.write_temp_file(blob_path, content))
            temps.append(crypto.write_temp_file(meta_path, meta))
            with self._locked(key, exclusive=True):
                os.replace(temps[0], blob_path)
                os.replace(temps[1], meta_path)
                if self.cold_root is not None:  # an overwrite makes any cold copy stale
                    self._unlink_copy(key, self.cold_root)
            temps.clear()
            crypto.fsync_dir(blob_path.parent)
        except OSError as exc:
            raise _unavailable("write", exc) from None
        finally:
            for tmp in temps:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _swap_meta(self, key: str, meta: bytes, expected_tag: str) -> bool:
        try:
            with self._locked(key, exclusive=True):
                for root in self._roots():  # the copy reads are served from
                    _, meta_path = self._paths(key, root)
                    try:
                        current = meta_path.read_bytes()
                        break
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                else:
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
                for root in self._roots():
                    self._unlink_copy(key, root)
        except OSError as exc:
            raise _unavailable("delete", exc) from None

    def _unlink_copy(self, key: str, root: Path) -> None:
        for path in reversed(self._paths(key, root)):  # meta first: it is the commit point
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                path.unlink()

    def _scan(self, prefix: str) -> Iterator[str]:
        base, _, _ = prefix.rpartition("/")
        rel = f"{base}/" if base else ""
        try:
            yield from self._walk(self.root / base if base else self.root, rel, prefix)
            if self.cold_root is None:
                return
            for key in self._walk(self.cold_root / base if base else self.cold_root, rel, prefix):
                if not self._paths(key)[1].exists():  # mid-move: listed once, from the warm tier
                    yield key
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

    # -- tiers --------------------------------------------------------------------------------

    def _cold(self) -> Path:
        if self.cold_root is None:
            raise StorageUnavailable("Blob storage has no cold tier (ENRS_STORAGE_COLD_DIR)")
        return self.cold_root

    def _copy_cold(self, key: str) -> bool:
        cold = self._cold()
        warm = self._load_from(key, (self.root,), content=True)
        if warm is None:
            return self._load_from(key, (cold,), content=False) is not None
        if warm.content is None:
            return True  # a warm meta without content: the verification reports it
        blob_path, meta_path = self._paths(key, cold)
        temps: list[Path] = []
        try:
            self._makedirs(blob_path.parent)
            temps.append(crypto.write_temp_file(blob_path, warm.content))
            temps.append(crypto.write_temp_file(meta_path, warm.meta))
            with self._locked(key, exclusive=True):
                try:
                    current = self._paths(key)[1].read_bytes()
                except FileNotFoundError:
                    current = b""
                if current != warm.meta:
                    return True  # overwritten or deleted meanwhile: nothing copied, verify
                os.replace(temps[0], blob_path)
                os.replace(temps[1], meta_path)
            temps.clear()
            crypto.fsync_dir(blob_path.parent)
        except OSError as exc:
            raise _unavailable("write the cold tier", exc) from None
        finally:
            for tmp in temps:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return True

    def _load_cold(self, key: str) -> Stored | None:
        return self._load_from(key, (self._cold(),), content=True)

    def _release_warm(self, key: str) -> bool:
        cold = self._cold()
        try:
            with self._locked(key, exclusive=True):
                if not self._paths(key, cold)[1].exists():
                    return False
                self._unlink_copy(key, self.root)
        except OSError as exc:
            raise _unavailable("delete", exc) from None
        return True

    def _tier(self, key: str) -> str | None:
        try:
            with self._locked(key, exclusive=False):
                if self._paths(key)[1].exists():
                    return WARM
                if self.cold_root is not None and self._paths(key, self.cold_root)[1].exists():
                    return COLD
        except OSError as exc:
            raise _unavailable("read", exc) from None
        return None

    def _probe(self) -> None:
        try:
            self._makedirs(self.root)
            probe = self.root / f".probe-{secrets.token_hex(8)}"
            crypto.write_temp_file(probe, b"ok").unlink()
        except OSError as exc:
            raise _unavailable("write in its folder", exc) from None
