"""S3-compatible blob backend (AWS S3, MinIO, Garage, Ceph RGW, ...), through boto3.

A blob ``a/b/c`` is stored as two objects of the bucket: ``a/b/c.blob`` (ciphertext, written
once) and ``a/b/c.meta.json`` (meta; the only object a master key rotation rewrites). Addressing
is path-style so any endpoint works; the bucket is created on first use if missing. A rewrap
replaces the meta with a conditional ``PutObject`` (``If-Match`` on its ETag) so it never clobbers
a concurrent overwrite. Two concurrent ``put`` of the same key may leave the newest meta beside
the other ciphertext: reads then fail with ``BlobCorrupted``, never return wrong bytes.

The cold tier is a storage class (``ENRS_S3_COLD_STORAGE_CLASS``: only classes read without a
restore are allowed, ``STANDARD_IA`` by default): a move copies the ``.blob`` object onto itself
with that class (server-side ``CopyObject``), so the key and the reading path stay the same; the
small meta object stays in ``STANDARD``.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from enrs.settings import Settings

_MISSING = {"NoSuchKey", "404", "NotFound"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_PROBE_PREFIX = ".enrs-probe/"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(action: str, exc: Exception) -> StorageUnavailable:
    detail = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    return StorageUnavailable(f"Blob storage cannot {action} ({detail})")


class S3BlobStorage(BlobStorage):
    """Blobs in one bucket of an S3-compatible object store."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        region: str,
        keyring: crypto.MasterKeyring,
        cold_class: str = "STANDARD_IA",
    ) -> None:
        super().__init__(keyring)
        self.client = client
        self.bucket = bucket
        self.region = region
        self.cold_class = cold_class
        self._bucket_ready = False
        self._mutex = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, keyring: crypto.MasterKeyring) -> S3BlobStorage:
        """Build the boto3 client from ``settings.s3_*`` (no network call is made here)."""
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
            config=Config(
                s3={"addressing_style": "path"},
                signature_version="s3v4",
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        return cls(
            client, settings.s3_bucket, settings.s3_region, keyring, settings.s3_cold_storage_class
        )

    def __repr__(self) -> str:
        return f"S3BlobStorage(bucket={self.bucket!r})"

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()

    # -- helpers ------------------------------------------------------------------------------

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._mutex:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    raise _unavailable("reach the bucket", exc) from None
                self._create_bucket()
            except BotoCoreError as exc:
                raise _unavailable("reach the endpoint", exc) from None
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        try:
            if self.region == "us-east-1":
                self.client.create_bucket(Bucket=self.bucket)
            else:
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": self.region},  # type: ignore[typeddict-item]
                )
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise _unavailable("create the bucket", exc) from None

    def _get(self, name: str, span: str | None = None) -> tuple[bytes, str] | None:
        """The object ``name`` (``span``: only its bytes ``a-b``) and its ETag; ``None`` when
        it is missing."""
        try:
            if span is None:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            else:
                response = self.client.get_object(Bucket=self.bucket, Key=name, Range=span)
            return response["Body"].read(), response.get("ETag", "")
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            if span is not None and _code(exc) in {"InvalidRange", "416"}:
                return b"", ""  # the object is shorter than the span starts: nothing in it
            raise _unavailable("read", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("read", exc) from None

    def _put(self, name: str, data: bytes, content_type: str, if_match: str | None = None) -> None:
        if if_match is None:
            self.client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=content_type
            )
        else:
            self.client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=content_type, IfMatch=if_match
            )

    # -- primitives ---------------------------------------------------------------------------

    def _load(self, key: str, *, content: bool) -> Stored | None:
        self._ensure_bucket()
        meta = self._get(f"{key}{META_SUFFIX}")
        if meta is None:
            return None
        data = self._get(f"{key}{BLOB_SUFFIX}") if content else None
        return Stored(meta=meta[0], tag=meta[1], content=None if data is None else data[0])

    def _open(self, key: str) -> Opened | None:
        self._ensure_bucket()
        meta = self._get(f"{key}{META_SUFFIX}")
        if meta is None:
            return None
        name = f"{key}{BLOB_SUFFIX}"

        def read(offset: int, length: int) -> bytes | None:
            got = self._get(name, f"bytes={offset}-{offset + length - 1}")
            return None if got is None else got[0]

        return Opened(meta=meta[0], read=read, close=lambda: None)

    def _store(self, key: str, content: bytes | bytearray, meta: bytes) -> None:
        self._ensure_bucket()
        try:
            self._put(f"{key}{BLOB_SUFFIX}", bytes(content), "application/octet-stream")
            self._put(f"{key}{META_SUFFIX}", meta, "application/json")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("write", exc) from None

    def _swap_meta(self, key: str, meta: bytes, expected_tag: str) -> bool:
        self._ensure_bucket()
        try:
            self._put(f"{key}{META_SUFFIX}", meta, "application/json", if_match=expected_tag)
        except ClientError as exc:
            if _code(exc) in _CONFLICT | _MISSING:
                return False
            if _code(exc) != "NotImplemented":
                raise _unavailable("write", exc) from None
            # An endpoint without conditional writes: fall back to a plain overwrite.
            try:
                self._put(f"{key}{META_SUFFIX}", meta, "application/json")
            except (ClientError, BotoCoreError) as again:
                raise _unavailable("write", again) from None
        except BotoCoreError as exc:
            raise _unavailable("write", exc) from None
        return True

    def _remove(self, key: str) -> None:
        self._ensure_bucket()
        try:
            self.client.delete_object(Bucket=self.bucket, Key=f"{key}{META_SUFFIX}")
            self.client.delete_object(Bucket=self.bucket, Key=f"{key}{BLOB_SUFFIX}")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("delete", exc) from None

    def _scan(self, prefix: str) -> Iterator[str]:
        self._ensure_bucket()
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    name = obj.get("Key", "")
                    if name.endswith(META_SUFFIX):
                        yield name[: -len(META_SUFFIX)]
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("list", exc) from None

    # -- tiers --------------------------------------------------------------------------------

    def _storage_class(self, name: str) -> str | None:
        """The object's storage class (``STANDARD`` when S3 leaves it out), ``None`` if absent."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise _unavailable("read", exc) from None
        except BotoCoreError as exc:
            raise _unavailable("read", exc) from None
        return str(head.get("StorageClass") or "STANDARD")

    def cold_copy_request(self, key: str) -> dict[str, object]:
        """The ``CopyObject`` parameters that move ``key``'s content to the cold class."""
        name = f"{key}{BLOB_SUFFIX}"
        return {
            "Bucket": self.bucket,
            "Key": name,
            "CopySource": {"Bucket": self.bucket, "Key": name},
            "StorageClass": self.cold_class,
            "MetadataDirective": "COPY",
        }

    def _copy_cold(self, key: str) -> bool:
        self._ensure_bucket()
        if self._storage_class(f"{key}{META_SUFFIX}") is None:
            return False
        current = self._storage_class(f"{key}{BLOB_SUFFIX}")
        if current is None or current == self.cold_class:
            return True  # nothing to copy: the verification reads what is there
        try:
            self.client.copy_object(**self.cold_copy_request(key))  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("write the cold tier", exc) from None
        return True

    def _load_cold(self, key: str) -> Stored | None:
        if self._storage_class(f"{key}{BLOB_SUFFIX}") != self.cold_class:
            return None
        return self._load(key, content=True)

    def _release_warm(self, key: str) -> bool:
        return self._storage_class(f"{key}{BLOB_SUFFIX}") == self.cold_class

    def _tier(self, key: str) -> str | None:
        self._ensure_bucket()
        if self._storage_class(f"{key}{META_SUFFIX}") is None:
            return None
        return COLD if self._storage_class(f"{key}{BLOB_SUFFIX}") == self.cold_class else WARM

    def _probe(self) -> None:
        self._ensure_bucket()
        name = f"{_PROBE_PREFIX}{secrets.token_hex(8)}"
        try:
            self._put(name, b"ok", "text/plain")
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("write in the bucket", exc) from None
