"""The blob storage contract: errors, key rules, result types and the envelope-encryption logic.

:class:`BlobStorage` holds everything that does not depend on where bytes live: key validation,
encryption (see :mod:`enrs.kit.storage.crypto`), integrity checks and master-key rotation. A
backend (:mod:`~enrs.kit.storage.fs`, :mod:`~enrs.kit.storage.s3`) only implements a handful of
raw primitives on two stored objects per blob: ``<key>.blob`` (the ciphertext, never rewritten by
a rotation) and ``<key>.meta.json`` (the wrapped data key and the blob's metadata). The meta object
is the commit point: it is written last and deleted first, so a blob exists iff its meta exists.

Storage tiers: a blob is *warm* when written; :meth:`BlobStorage.copy_to_cold` puts a verified
copy of it in the backend's cheaper *cold* tier (a second folder for the fs backend, another
storage class of the same object on S3), and :meth:`BlobStorage.release_warm` then drops the warm
copy. Readers only ever know the key: :meth:`BlobStorage.get` finds the blob in either tier.

Parts of a blob: :meth:`BlobStorage.reader` gives a :class:`BlobReader` whose ``read(start,
length)`` fetches and decrypts only the segments holding those bytes (a frame of a multi-frame
image, a DICOM file's header), where :meth:`~BlobStorage.get` reads, decrypts and checks it all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from enrs.kit.errors import BadRequest, EnrsError, NotFound, PayloadTooLarge, ServiceUnavailable

from . import crypto

log = logging.getLogger(__name__)

BLOB_SUFFIX = ".blob"
META_SUFFIX = ".meta.json"
MAX_KEY_LENGTH = 512
MAX_SEGMENT_LENGTH = 200
MAX_CONTENT_TYPE_LENGTH = 255
MAX_BLOB_BYTES = 2**31 - 1  # the largest blob taken (held whole in memory by put and get)
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_PREFIX = re.compile(r"[A-Za-z0-9._/-]*")
_CONTENT_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
_READ_ATTEMPTS = 3
WARM, COLD = "warm", "cold"


class BlobNotFound(NotFound):
    """No blob is stored under the key."""

    title = "Blob not found"

    def __init__(self, key: str) -> None:
        super().__init__(f"Blob not found: {key}")
        self.key = key


class InvalidBlobKey(BadRequest):
    """The key breaks the key rules (charset, length, ``..``, absolute path, reserved suffix)."""

    title = "Invalid blob key"


class StorageUnavailable(ServiceUnavailable):
    """The backend cannot be reached, read or written."""

    title = "Storage unavailable"


class MasterKeyError(StorageUnavailable):
    """The master key file cannot be read, created or parsed."""

    title = "Master key unavailable"


class BlobCorrupted(EnrsError):
    """Stored ciphertext or metadata failed authentication: the bytes are never returned."""

    status = 500
    issue_code = "exception"
    title = "Blob corrupted"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"Blob corrupted: {key} ({reason})")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What is known about a stored blob, without its content."""

    key: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RotationReport:
    """Outcome of :meth:`BlobStorage.rotate_master_key` or :meth:`BlobStorage.rewrap_all`.

    ``stale_key_ids`` are the master key ids, other than the current one, that objects still
    reference after the pass (because re-wrapping them failed); empty when the pass completed.
    """

    current_key_id: str
    rewrapped: int = 0
    already_current: int = 0
    failed: int = 0
    failed_keys: tuple[str, ...] = ()
    stale_key_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Stored:
    """A raw read from a backend: the meta bytes, their version tag and (maybe) the content."""

    meta: bytes
    tag: str
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    """A blob opened by a backend for reads in parts: its meta, a function reading ``length``
    bytes of its ciphertext from ``offset`` (``None`` when the content object is missing), and
    one releasing what the reads hold."""

    meta: bytes
    read: Callable[[int, int], bytes | None]
    close: Callable[[], None]


class BlobReader:
    """One blob read in parts (:meth:`BlobStorage.reader`). Each segment read is authenticated;
    the whole blob's digest is not checked (that needs every byte). The last segments read are
    kept, so small reads one after the other decrypt each segment once. Not thread-safe."""

    def __init__(self, key: str, meta: crypto.BlobMeta, dek: bytes, opened: Opened) -> None:
        self.key, self.size = key, meta.size
        self._meta, self._dek, self._opened = meta, dek, opened
        self._kept: tuple[int, bytes] = (0, b"")  # (plaintext offset, plaintext)

    def read(self, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of the content, fewer at its end. Raises
        :class:`BlobCorrupted` when a segment fails authentication or is missing."""
        start, end = max(0, start), min(self.size, max(0, start) + max(0, length))
        at, kept = self._kept
        if at <= start and end <= at + len(kept):
            return kept[start - at : end - at]
        meta = self._meta
        if not meta.segment:  # version 1: one GCM message, read and decrypted whole once
            whole = self._fetch(0, meta.size + crypto.TAG_BYTES)
            with _integrity(self.key):
                self._kept = (0, crypto.open_content(meta, whole, self._dek, unwrapped=True))
            return self._kept[1][start:end]
        first, offset, count = crypto.span(meta, start, end - start)
        with _integrity(self.key):
            plain = crypto.open_segments(meta, self._dek, first, self._fetch(offset, count))
        self._kept = (first * meta.segment, plain)
        at = first * meta.segment
        return plain[start - at : end - at]

    def _fetch(self, offset: int, length: int) -> bytes:
        data = self._opened.read(offset, length)
        if data is None:
            raise BlobCorrupted(self.key, "content object missing")
        if len(data) != length:
            raise BlobCorrupted(self.key, "content shorter than its meta says")
        return data

    def close(self) -> None:
        self._opened.close()


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid blob key, else raise :class:`InvalidBlobKey`.

    A key is 1 to 512 characters of ``[A-Za-z0-9._/-]`` made of ``/``-separated segments. A segment
    is non-empty, at most 200 characters, does not start with ``.`` (so no ``.``, ``..`` or hidden
    names) and does not end with ``.blob`` or ``.meta.json`` (the names of the stored objects).
    """
    if not isinstance(key, str) or not key:
        raise InvalidBlobKey("Blob key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKey(f"Blob key longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not segment:
            raise InvalidBlobKey("Blob key has an empty segment (leading, trailing or double '/')")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise InvalidBlobKey(f"Blob key segment longer than {MAX_SEGMENT_LENGTH} characters")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidBlobKey(
                "Blob key segments use only [A-Za-z0-9._-] and must not start with '.'"
            )
        if segment.endswith((BLOB_SUFFIX, META_SUFFIX)):
            raise InvalidBlobKey("Blob key segments must not end with '.blob' or '.meta.json'")
    return key


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidBlobKey:
        return False
    return True


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a valid key (``""`` included), else raise."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
        raise InvalidBlobKey("Invalid blob key prefix")
    if prefix.startswith("/") or "//" in prefix or not _PREFIX.fullmatch(prefix):
        raise InvalidBlobKey("Invalid blob key prefix")
    if any(segment.startswith(".") for segment in prefix.split("/")):
        raise InvalidBlobKey("Blob key prefix segments must not start with '.'")
    return prefix


def _validate_content_type(content_type: str) -> str:
    if (
        not isinstance(content_type, str)
        or len(content_type) > MAX_CONTENT_TYPE_LENGTH
        or not _CONTENT_TYPE.fullmatch(content_type)
    ):
        raise BadRequest("Invalid content type")
    return content_type


class BlobStorage(ABC):
    """An encrypted key -> bytes store. Thread-safe; safe to share between worker processes."""

    def __init__(self, keyring: crypto.MasterKeyring) -> None:
        self.keyring = keyring

    # -- raw primitives implemented by the backends -------------------------------------------

    @abstractmethod
    def _load(self, key: str, *, content: bool) -> Stored | None:
        """Read the meta (and the content if asked) of ``key``; ``None`` if the meta is absent.

        ``Stored.content`` is ``None`` when the content object is missing.
        """

    @abstractmethod
    def _store(self, key: str, content: bytes | bytearray, meta: bytes) -> None:
        """Write the content, then the meta, of ``key`` (each atomically)."""

    @abstractmethod
    def _swap_meta(self, key: str, meta: bytes, expected_tag: str) -> bool:
        """Replace the meta of ``key`` only if its version tag is still ``expected_tag``."""

    @abstractmethod
    def _remove(self, key: str) -> None:
        """Delete the meta, then the content, of ``key``; no error if absent."""

    @abstractmethod
    def _scan(self, prefix: str) -> Iterator[str]:
        """Yield the keys whose meta object exists and whose stored name starts with ``prefix``."""

    @abstractmethod
    def _probe(self) -> None:
        """Write and delete a probe object; raise :class:`StorageUnavailable` on failure."""

    @abstractmethod
    def _copy_cold(self, key: str) -> bool:
        """Put a copy of ``key``'s stored objects in the cold tier (done again harmlessly);
        ``False`` when the blob is in neither tier."""

    @abstractmethod
    def _load_cold(self, key: str) -> Stored | None:
        """Read the meta and content of ``key``'s cold copy only; ``None`` if there is none."""

    @abstractmethod
    def _release_warm(self, key: str) -> bool:
        """Delete the warm copy of ``key`` if a cold copy exists; ``False`` if there is none."""

    @abstractmethod
    def _open(self, key: str) -> Opened | None:
        """Open ``key`` (in either tier) for reads in parts; ``None`` if the meta is absent."""

    @abstractmethod
    def _tier(self, key: str) -> str | None:
        """``"warm"`` while a warm copy exists, else ``"cold"``; ``None`` if absent."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release backend resources (connections). The default does nothing."""

    # -- public API ---------------------------------------------------------------------------

    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> BlobInfo:
        """Encrypt and store ``data`` under ``key``, replacing any previous blob."""
        validate_key(key)
        _validate_content_type(content_type)
        if len(data) > MAX_BLOB_BYTES:
            raise PayloadTooLarge(f"Blob larger than {MAX_BLOB_BYTES} bytes")
        kid, master = self._current()
        content, meta = crypto.seal(key, bytes(data), content_type, kid, master)
        self._store(key, content, meta.to_json())
        return _info(meta)

    def get(self, key: str) -> bytes:
        """Return the decrypted content of ``key``.

        Raises :class:`BlobNotFound` if absent and :class:`BlobCorrupted` if the ciphertext or
        the meta fails authentication. A read racing a concurrent overwrite is retried.
        """
        validate_key(key)
        for attempt in range(_READ_ATTEMPTS):
            stored = self._load(key, content=True)
            if stored is None:
                raise BlobNotFound(key)
            try:
                meta = self._decode(key, stored.meta)
                if stored.content is None:
                    raise BlobCorrupted(key, "content object missing")
                master = self._master(meta)
                with _integrity(key):
                    return crypto.open_content(meta, stored.content, master)
            except BlobCorrupted:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def reader(self, key: str) -> Iterator[BlobReader]:
        """``key`` opened for reads in parts (:class:`BlobReader`), closed on leaving. Raises
        :class:`BlobNotFound` if absent, :class:`BlobCorrupted` if the meta fails
        authentication (and later, from ``read``, a segment)."""
        validate_key(key)
        opened = self._open(key)
        if opened is None:
            raise BlobNotFound(key)
        try:
            meta = self._decode(key, opened.meta)
            master = self._master(meta)
            with _integrity(key):
                dek = crypto.unwrap_dek(meta, master)
            yield BlobReader(key, meta, dek, opened)
        finally:
            opened.close()

    def head(self, key: str) -> BlobInfo:
        """Return the authenticated metadata of ``key`` without reading its content."""
        validate_key(key)
        stored = self._load(key, content=False)
        if stored is None:
            raise BlobNotFound(key)
        meta = self._decode(key, stored.meta)
        master = self._master(meta)
        with _integrity(key):
            crypto.unwrap_dek(meta, master)
        return _info(meta)

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key`` (its integrity is not checked)."""
        validate_key(key)
        return self._load(key, content=False) is not None

    def delete(self, key: str) -> None:
        """Delete the blob under ``key``. Deleting an absent blob is not an error."""
        validate_key(key)
        self._remove(key)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys that start with ``prefix`` (order is backend-specific).

        The prefix is validated at once (:class:`InvalidBlobKey`), before iteration starts.
        """
        validate_prefix(prefix)
        return (k for k in self._scan(prefix) if k.startswith(prefix) and _is_valid_key(k))

    def copy_to_cold(self, key: str) -> BlobInfo:
        """Copy ``key`` to the cold tier, then read the cold copy back and decrypt it: its
        content must match the size and SHA-256 sealed in its meta. Returns that meta.

        Idempotent (a blob already cold is only verified again). The warm copy, if any, is
        left in place: readers keep using it until :meth:`release_warm`. Raises
        :class:`BlobNotFound`, :class:`BlobCorrupted` (the cold copy does not verify) or
        :class:`StorageUnavailable` (the cold tier cannot be written).
        """
        validate_key(key)
        if not self._copy_cold(key):
            raise BlobNotFound(key)
        stored = self._load_cold(key)
        if stored is None or stored.content is None:
            raise BlobCorrupted(key, "the cold copy is missing after the copy")
        meta = self._decode(key, stored.meta)
        master = self._master(meta)
        with _integrity(key):
            crypto.open_content(meta, stored.content, master)
        return _info(meta)

    def release_warm(self, key: str) -> None:
        """Delete the warm copy of ``key`` once its cold copy exists (a no-op when the tier is
        the storage class of one object, as on S3). Raises :class:`BlobNotFound` when there is
        no cold copy: the warm one is then kept."""
        validate_key(key)
        if not self._release_warm(key):
            raise BlobNotFound(f"{key} (cold copy)")

    def tier(self, key: str) -> str:
        """``"warm"`` or ``"cold"``: where reads of ``key`` are served from."""
        validate_key(key)
        found = self._tier(key)
        if found is None:
            raise BlobNotFound(key)
        return found

    def check(self) -> None:
        """Raise :class:`StorageUnavailable` unless the backend and the master keys are usable."""
        self._current()
        self._probe()

    def rotate_master_key(self) -> RotationReport:
        """Make a new master key current, then re-wrap every object's data key with it.

        Only the meta objects are rewritten; content objects are left byte-for-byte unchanged.
        Old master keys stay in the key file, so objects not yet re-wrapped still decrypt.
        """
        try:
            new_kid = self.keyring.rotate()
        except crypto.KeyringError as exc:
            raise MasterKeyError(str(exc)) from None
        log.info("blob master key rotated; new key id %s", new_kid)
        return self.rewrap_all()

    def rewrap_all(self) -> RotationReport:
        """Re-wrap the data key of every object not wrapped with the current master key.

        Resumable: objects already on the current key are skipped. An object overwritten or
        deleted concurrently is re-read, never clobbered.
        """
        rewrapped = already = failed = 0
        failed_keys: list[str] = []
        stale: set[str] = set()
        for key in self.iter_keys():
            try:
                outcome = self._rewrap_one(key)
            except (BlobCorrupted, StorageUnavailable) as exc:
                log.warning("cannot re-wrap blob %s: %s", key, exc.message)
                outcome = None
                failed += 1
                if len(failed_keys) < 100:
                    failed_keys.append(key)
                stored = self._safe_kid(key)
                if stored is not None:
                    stale.add(stored)
            if outcome is True:
                rewrapped += 1
            elif outcome is False:
                already += 1
        current_kid, _ = self._current()
        stale.discard(current_kid)
        return RotationReport(
            current_key_id=current_kid,
            rewrapped=rewrapped,
            already_current=already,
            failed=failed,
            failed_keys=tuple(failed_keys),
            stale_key_ids=frozenset(stale),
        )

    # -- helpers ------------------------------------------------------------------------------

    def _rewrap_one(self, key: str) -> bool | None:
        """Re-wrap ``key``: True if rewritten, False if already current, None if gone."""
        for _ in range(_READ_ATTEMPTS):
            stored = self._load(key, content=False)
            if stored is None:
                return None
            meta = self._decode(key, stored.meta)
            kid, master = self._current()
            if meta.kid == kid:
                return False
            old_master = self._master(meta)
            with _integrity(key):
                new_meta = crypto.rewrap(meta, old_master, kid, master)
            if self._swap_meta(key, new_meta.to_json(), stored.tag):
                return True
        raise BlobCorrupted(key, "meta keeps changing during re-wrap")

    def _safe_kid(self, key: str) -> str | None:
        try:
            stored = self._load(key, content=False)
            return None if stored is None else crypto.BlobMeta.from_json(key, stored.meta).kid
        except (ValueError, EnrsError):
            return None

    def _decode(self, key: str, raw: bytes) -> crypto.BlobMeta:
        try:
            return crypto.BlobMeta.from_json(key, raw)
        except ValueError as exc:
            raise BlobCorrupted(key, f"invalid meta: {exc}") from None

    def _current(self) -> tuple[str, bytes]:
        try:
            return self.keyring.current()
        except crypto.KeyringError as exc:
            raise MasterKeyError(str(exc)) from None

    def _master(self, meta: crypto.BlobMeta) -> bytes:
        try:
            master = self.keyring.key(meta.kid)
        except crypto.KeyringError as exc:
            raise MasterKeyError(str(exc)) from None
        if master is None:
            raise BlobCorrupted(meta.key, f"unknown master key id {meta.kid!r}")
        return master


@contextlib.contextmanager
def _integrity(key: str) -> Iterator[None]:
    """Turn a :class:`crypto.IntegrityError` into :class:`BlobCorrupted`."""
    try:
        yield
    except crypto.IntegrityError as exc:
        raise BlobCorrupted(key, str(exc)) from None


def _info(meta: crypto.BlobMeta) -> BlobInfo:
    return BlobInfo(
        key=meta.key,
        size=meta.size,
        sha256=meta.sha256,
        content_type=meta.content_type,
        created_at=meta.created_at,
    )
