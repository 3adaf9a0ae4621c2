"""Envelope encryption of blobs and the master key file.

Each blob gets its own random 256-bit data key (DEK). The content is encrypted with AES-256-GCM
in segments of :data:`SEGMENT_BYTES` (meta version 2), so a part of a large blob (a frame of a
multi-frame image, the header of a DICOM file) is read by decrypting only the segments that hold
it (:func:`open_segments`). Segment ``i`` of ``n`` is sealed with the meta's random 96-bit nonce,
its last 4 bytes replaced by ``i``, and the blob key, ``i`` and ``n`` as associated data: a blob
moved under another key, a segment moved, and a blob cut short no longer decrypt. Blobs of
version 1 (written before segments) are one GCM message under the meta's nonce and the key; they
are still read. The DEK is wrapped (AES-256-GCM) by a master key; the wrap's associated data is
every other field of the meta, so the meta cannot be altered without the unwrap failing.

Master keys live in a JSON file, out of the database by design::

    {"current": "<kid>", "keys": {"<kid>": "<base64 of 32 bytes>", ...}}

It is created on first use (mode 0600, parent folder 0700) under an ``fcntl`` lock, so several
worker processes starting together agree on one key. This module has no HTTP semantics: it raises
:class:`IntegrityError` and :class:`KeyringError`, which :mod:`enrs.kit.storage.base` maps.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
META_VERSION = 2
SEGMENT_BYTES = 64 * 1024
TAG_BYTES = 16
_WRAP_CONTEXT = b"enrs-blob-dek-v1\x00"


class IntegrityError(Exception):
    """Ciphertext, wrapped key or meta failed authentication or consistency checks."""


class KeyringError(Exception):
    """The master key file cannot be read, created, parsed or written."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, name: str, length: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{name} is not a string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{name} is not base64") from None
    if length is not None and len(data) != length:
        raise ValueError(f"{name} has the wrong length")
    return data


# -- the per-blob meta ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobMeta:
    """The JSON sidecar stored beside each blob's ciphertext."""

    key: str
    kid: str
    wrapped_dek: bytes
    nonce: bytes
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    segment: int = SEGMENT_BYTES  # plaintext bytes per GCM segment; 0: one message (version 1)

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"v": 1} if not self.segment else {"v": 2, "segment": self.segment}
        return fields | {
            "key": self.key,
            "kid": self.kid,
            "nonce": _b64(self.nonce),
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "created_at": self.created_at.isoformat(),
        }

    @property
    def segments(self) -> int:
        """How many GCM segments the ciphertext holds (an empty blob has one; version 1: one)."""
        return max(1, -(-self.size // self.segment)) if self.segment else 1

    def wrap_aad(self) -> bytes:
        """Associated data of the DEK wrap: every meta field except the wrapped DEK itself."""
        canonical = json.dumps(self._fields(), sort_keys=True, separators=(",", ":"))
        return _WRAP_CONTEXT + canonical.encode("utf-8")

    def to_json(self) -> bytes:
        """Serialise the meta (UTF-8 JSON)."""
        doc = self._fields() | {"wrapped_dek": _b64(self.wrapped_dek)}
        return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, key: str, raw: bytes) -> BlobMeta:
        """Parse a meta stored for ``key``; raise ``ValueError`` if malformed or not for ``key``."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not JSON") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        version = doc.get("v")
        if version not in (1, META_VERSION):
            raise ValueError("unknown meta version")
        segment = doc.get("segment") if version == META_VERSION else 0
        if not isinstance(segment, int) or isinstance(segment, bool) or segment < 0:
            raise ValueError("segment invalid")
        if version == META_VERSION and not segment:
            raise ValueError("segment invalid")
        if doc.get("key") != key:
            raise ValueError("meta names another key")
        kid, size, sha, ctype, created = (
            doc.get(name) for name in ("kid", "size", "sha256", "content_type", "created_at")
        )
        if not isinstance(kid, str) or not kid:
            raise ValueError("kid missing")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size invalid")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ValueError("sha256 invalid")
        if not isinstance(ctype, str) or not isinstance(created, str):
            raise ValueError("content_type or created_at invalid")
        try:
            created_at = datetime.fromisoformat(created)
        except ValueError:
            raise ValueError("created_at invalid") from None
        return cls(
            key=key,
            kid=kid,
            wrapped_dek=_unb64(doc.get("wrapped_dek"), "wrapped_dek", NONCE_BYTES + KEY_BYTES + 16),
            nonce=_unb64(doc.get("nonce"), "nonce", NONCE_BYTES),
            size=size,
            sha256=sha,
            content_type=ctype,
            created_at=created_at,
            segment=segment,
        )


# -- envelope operations ----------------------------------------------------------------------


def _wrap(meta: BlobMeta, dek: bytes, master: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, dek, meta.wrap_aad())


def seal(
    key: str, plaintext: bytes, content_type: str, kid: str, master: bytes
) -> tuple[bytearray, BlobMeta]:
    """Encrypt ``plaintext`` for ``key`` under a fresh DEK wrapped by ``master``."""
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    meta = BlobMeta(
        key=key,
        kid=kid,
        wrapped_dek=b"",
        nonce=nonce,
        size=len(plaintext),
        sha256=hashlib.sha256(plaintext).hexdigest(),
        content_type=content_type,
        created_at=datetime.now(UTC),
    )
    aead, view, step = AESGCM(dek), memoryview(plaintext), meta.segment
    ciphertext = bytearray(meta.size + meta.segments * TAG_BYTES)  # written in place
    out = memoryview(ciphertext)
    for i in range(meta.segments):
        part, at = view[i * step : (i + 1) * step], i * (step + TAG_BYTES)
        aead.encrypt_into(
            _nonce(meta, i), part, _aad(meta, i), out[at : at + len(part) + TAG_BYTES]
        )
    return ciphertext, replace(meta, wrapped_dek=_wrap(meta, dek, master))


def _nonce(meta: BlobMeta, index: int) -> bytes:
    return meta.nonce[:-4] + struct.pack(">I", index)


def _aad(meta: BlobMeta, index: int) -> bytes:
    return meta.key.encode("utf-8") + struct.pack(">BII", 0, index, meta.segments)


def span(meta: BlobMeta, start: int, length: int) -> tuple[int, int, int]:
    """The segments holding plaintext bytes ``[start, start + length)`` of a version-2 blob
    (``start`` and ``length`` within its size): ``(first segment, ciphertext offset,
    ciphertext length)``."""
    first, last = start // meta.segment, max(start, start + length - 1) // meta.segment
    offset = first * (meta.segment + TAG_BYTES)
    end = min((last + 1) * (meta.segment + TAG_BYTES), meta.size + meta.segments * TAG_BYTES)
    return first, offset, end - offset


def open_segments(meta: BlobMeta, dek: bytes, first: int, ciphertext: bytes) -> bytes:
    """Decrypt whole segments ``first, first + 1, …`` of a version-2 blob from their
    ``ciphertext`` (as :func:`span` located it); raise :class:`IntegrityError` if one fails."""
    aead, view, step = AESGCM(dek), memoryview(ciphertext), meta.segment + TAG_BYTES
    parts = []
    for n, at in enumerate(range(0, len(ciphertext), step)):
        index = first + n
        try:
            parts.append(aead.decrypt(_nonce(meta, index), view[at : at + step], _aad(meta, index)))
        except InvalidTag:
            raise IntegrityError(f"content segment {index} failed authentication") from None
    return b"".join(parts)


def unwrap_dek(meta: BlobMeta, master: bytes) -> bytes:
    """Return the DEK of ``meta``; raise :class:`IntegrityError` if the meta was altered."""
    nonce, wrapped = meta.wrapped_dek[:NONCE_BYTES], meta.wrapped_dek[NONCE_BYTES:]
    try:
        return AESGCM(master).decrypt(nonce, wrapped, meta.wrap_aad())
    except InvalidTag:
        raise IntegrityError("meta or wrapped data key failed authentication") from None


def open_content(
    meta: BlobMeta, ciphertext: bytes, master: bytes, *, unwrapped: bool = False
) -> bytes:
    """Decrypt and verify a blob's content (``master`` is its DEK itself when ``unwrapped``);
    raise :class:`IntegrityError` on any mismatch."""
    dek = master if unwrapped else unwrap_dek(meta, master)
    if meta.segment:
        if len(ciphertext) != meta.size + meta.segments * TAG_BYTES:
            raise IntegrityError("content does not have its segments' length")
        plaintext = open_segments(meta, dek, 0, ciphertext)
    else:
        try:
            plaintext = AESGCM(dek).decrypt(meta.nonce, ciphertext, meta.key.encode("utf-8"))
        except InvalidTag:
            raise IntegrityError("content failed authentication") from None
    if len(plaintext) != meta.size or hashlib.sha256(plaintext).hexdigest() != meta.sha256:
        raise IntegrityError("content does not match its size or digest")
    return plaintext


def rewrap(meta: BlobMeta, old_master: bytes, kid: str, master: bytes) -> BlobMeta:
    """Return ``meta`` with its DEK re-wrapped by the master key ``kid``."""
    dek = unwrap_dek(meta, old_master)
    moved = replace(meta, kid=kid, wrapped_dek=b"")
    return replace(moved, wrapped_dek=_wrap(moved, dek, master))


# -- the master key file ----------------------------------------------------------------------


def _new_kid(existing: dict[str, bytes]) -> str:
    while True:
        kid = f"mk-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        if kid not in existing:
            return kid


def _parse_keyfile(raw: bytes) -> tuple[str, dict[str, bytes]]:
    try:
        doc = json.loads(raw)
        items = doc["keys"].items()
        keys = {str(kid): _unb64(value, "master key", KEY_BYTES) for kid, value in items}
        current = doc["current"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyringError(f"master key file is invalid: {exc}") from None
    if not isinstance(current, str) or current not in keys:
        raise KeyringError("master key file names no valid current key")
    return current, keys


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (after a rename) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp_file(target: Path, data: bytes | bytearray) -> Path:
    """Write ``data`` (mode 0600, fsync'd) to a fresh hidden temp file beside ``target``.

    The caller ``os.replace``-s it onto ``target``; the temp file is removed if writing fails.
    """
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb", closefd=False) as out:
            out.write(data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    return tmp


def replace_atomically(target: Path, data: bytes) -> None:
    """Atomically (temp file + ``os.replace``) and durably set the content of ``target``."""
    tmp = write_temp_file(target, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


class MasterKeyring:
    """The master keys of one key file, re-read whenever the file changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._mutex = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current = ""
        self._keys: dict[str, bytes] = {}

    def current(self) -> tuple[str, bytes]:
        """Return ``(key id, key)`` of the current master key, creating the file if needed."""
        with self._mutex:
            self._refresh()
            return self._current, self._keys[self._current]

    def key(self, kid: str) -> bytes | None:
        """Return the master key ``kid``, or ``None`` if the file does not hold it."""
        with self._mutex:
            self._refresh()
            return self._keys.get(kid)

    def key_ids(self) -> list[str]:
        """Return every master key id of the file (oldest first)."""
        with self._mutex:
            self._refresh()
            return list(self._keys)

    def rotate(self) -> str:
        """Add a new random master key, make it current and return its id."""
        with self._mutex, self._file_lock():
            _, keys = self._read() if self.path.exists() else ("", {})
            kid = _new_kid(keys)
            keys[kid] = os.urandom(KEY_BYTES)
            self._write(kid, keys)
            self._stamp = None
            self._refresh()
            return kid

    # -- internals: callers hold self._mutex ---------------------------------------------------

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._create()
            st = self._stat()
        except OSError as exc:
            raise KeyringError(f"cannot stat master key file: {exc.strerror}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            if st.st_mode & 0o077:
                log.warning("master key file %s is readable by group/others", self.path)
            self._current, self._keys = self._read()
            self._stamp = stamp

    def _stat(self) -> os.stat_result:
        try:
            return os.stat(self.path)
        except OSError as exc:
            raise KeyringError(f"cannot stat master key file: {exc.strerror}") from None

    def _read(self) -> tuple[str, dict[str, bytes]]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise KeyringError(f"cannot read master key file: {exc.strerror}") from None
        return _parse_keyfile(raw)

    def _create(self) -> None:
        with self._file_lock():
            if self.path.exists():  # another process won the race
                return
            kid = _new_kid({})
            self._write(kid, {kid: os.urandom(KEY_BYTES)})
            log.info("created blob master key file %s (key id %s)", self.path, kid)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        parent = self.path.parent
        try:
            if not parent.is_dir():
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(parent, 0o700)
            fd = os.open(
                parent / f"{self.path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise KeyringError(f"cannot lock master key file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _write(self, current: str, keys: dict[str, bytes]) -> None:
        doc = {"current": current, "keys": {kid: _b64(key) for kid, key in keys.items()}}
        data = json.dumps(doc, indent=2).encode("utf-8") + b"\n"
        try:
            replace_atomically(self.path, data)
        except OSError as exc:
            raise KeyringError(f"cannot write master key file: {exc.strerror}") from None
