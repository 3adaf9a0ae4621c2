"""Encrypted blob storage (documents, DICOM images) on a local folder or an S3 bucket.

Build one store at start-up with :func:`open_storage` and pass it explicitly::

    storage = open_storage(settings)
    info = storage.put("documents/2024/abc.pdf", data, "application/pdf")
    data = storage.get(info.key)

Every blob is encrypted at rest with its own data key, wrapped by a master key kept in
``settings.master_key_path`` (see :mod:`enrs.kit.storage.crypto`). Nothing happens at import time;
the S3 backend (and boto3) is imported only when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    COLD,
    WARM,
    BlobCorrupted,
    BlobInfo,
    BlobNotFound,
    BlobReader,
    BlobStorage,
    InvalidBlobKey,
    MasterKeyError,
    RotationReport,
    StorageUnavailable,
    validate_key,
)
from .crypto import MasterKeyring
from .fs import FsBlobStorage

if TYPE_CHECKING:
    from enrs.settings import Settings

__all__ = [
    "COLD",
    "WARM",
    "BlobCorrupted",
    "BlobInfo",
    "BlobNotFound",
    "BlobReader",
    "BlobStorage",
    "FsBlobStorage",
    "InvalidBlobKey",
    "MasterKeyError",
    "MasterKeyring",
    "RotationReport",
    "StorageUnavailable",
    "open_storage",
    "validate_key",
]


def open_storage(settings: Settings) -> BlobStorage:
    """Return the blob store selected by ``settings.storage_backend`` (``"fs"`` or ``"s3"``).

    No I/O happens here: folders, the master key file and the bucket are created on first use
    (or by :meth:`BlobStorage.check`).
    """
    keyring = MasterKeyring(settings.master_key_path)
    if settings.storage_backend == "fs":
        return FsBlobStorage(settings.storage_path, keyring, settings.storage_cold_path)
    if settings.storage_backend == "s3":
        from .s3 import S3BlobStorage

        return S3BlobStorage.from_settings(settings, keyring)
    raise ValueError(f"Unknown storage backend {settings.storage_backend!r}")
