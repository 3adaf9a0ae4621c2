"""Blob storage: the same behavioural tests on the fs backend and on S3 (moto's HTTP server)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from moto.server import ThreadedMotoServer

from enrs.kit.errors import BadRequest, EnrsError, NotFound, ServiceUnavailable
from enrs.kit.storage import (
    BlobCorrupted,
    BlobNotFound,
    BlobStorage,
    FsBlobStorage,
    InvalidBlobKey,
    MasterKeyring,
    StorageUnavailable,
    crypto,
    open_storage,
)
from enrs.kit.storage.crypto import BlobMeta, rewrap
from enrs.kit.storage.s3 import S3BlobStorage as S3
from enrs.settings import Settings

# -- infrastructure ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real HTTP S3 fake (moto server) on a free local port."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class Raw:
    """Direct access to the stored objects (``<key>.blob`` / ``<key>.meta.json``), for tampering."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        if settings.storage_backend == "s3":
            self.client = boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id="test",
                aws_secret_access_key="test",
                config=Config(s3={"addressing_style": "path"}),
            )

    def read(self, name: str) -> bytes:
        if self.client is None:
            return (self.settings.storage_path / name).read_bytes()
        body = self.client.get_object(Bucket=self.settings.s3_bucket, Key=name)["Body"]
        return bytes(body.read())

    def write(self, name: str, data: bytes) -> None:
        if self.client is None:
            path = self.settings.storage_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.client.put_object(Bucket=self.settings.s3_bucket, Key=name, Body=data)

    def remove(self, name: str) -> None:
        if self.client is None:
            (self.settings.storage_path / name).unlink()
        else:
            self.client.delete_object(Bucket=self.settings.s3_bucket, Key=name)

    def meta(self, key: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.read(f"{key}.meta.json"))
        return doc

    def write_meta(self, key: str, doc: dict[str, Any]) -> None:
        self.write(f"{key}.meta.json", json.dumps(doc).encode())


@pytest.fixture(params=["fs", "s3"])
def blob_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "fs":
        return Settings(data_dir=tmp_path, storage_backend="fs")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return Settings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_endpoint_url=endpoint,
        s3_bucket=f"enrs-test-{os.urandom(6).hex()}",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )


@pytest.fixture
def storage(blob_settings: Settings) -> Iterator[BlobStorage]:
    store = open_storage(blob_settings)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def raw(blob_settings: Settings) -> Raw:
    return Raw(blob_settings)


# -- basic behaviour --------------------------------------------------------------------------


def test_round_trip(storage: BlobStorage) -> None:
    data = b"%PDF-1.7 compte rendu\n" * 10
    before = datetime.now(UTC)
    info = storage.put("patients/42/cr-2024.pdf", data, "application/pdf")
    assert info.key == "patients/42/cr-2024.pdf"
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.content_type == "application/pdf"
    assert before <= info.created_at <= datetime.now(UTC)
    assert storage.get(info.key) == data
    assert storage.head(info.key) == info
    assert storage.exists(info.key)
    assert list(storage.iter_keys()) == [info.key]

    storage.delete(info.key)
    assert not storage.exists(info.key)
    with pytest.raises(BlobNotFound):
        storage.get(info.key)
    storage.delete(info.key)  # idempotent
    assert list(storage.iter_keys()) == []


def test_default_content_type_empty_blob_and_overwrite(storage: BlobStorage) -> None:
    assert storage.put("empty", b"").content_type == "application/octet-stream"
    assert storage.get("empty") == b""
    storage.put("k", b"first", "text/plain")
    storage.put("k", b"second version", "text/plain; charset=utf-8")
    assert storage.get("k") == b"second version"
    assert storage.head("k").content_type == "text/plain; charset=utf-8"


def test_content_is_encrypted_at_rest(storage: BlobStorage, raw: Raw) -> None:
    secret = b"Patient: DUPONT Jean, diagnostic confidentiel " * 20
    storage.put("doc", secret)
    stored = raw.read("doc.blob") + raw.read("doc.meta.json")
    assert b"DUPONT" not in stored
    assert len(raw.read("doc.blob")) == len(secret) + 16  # one segment: its GCM tag
    meta = raw.meta("doc")
    assert set(meta) >= {"kid", "wrapped_dek", "nonce", "size", "sha256", "content_type"}
    assert len(base64.b64decode(meta["nonce"])) == 12


def test_large_blob(storage: BlobStorage) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)
    info = storage.put("dicom/1.2.840.10008/series/image.dcm", data, "application/dicom")
    assert info.size == len(data)
    got = storage.get(info.key)
    assert hashlib.sha256(got).hexdigest() == info.sha256 == hashlib.sha256(data).hexdigest()


def test_missing_blob(storage: BlobStorage) -> None:
    with pytest.raises(BlobNotFound) as caught:
        storage.get("nope/never")
    assert caught.value.status == 404
    with pytest.raises(BlobNotFound):
        storage.head("nope/never")
    assert not storage.exists("nope/never")


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../b",
    "a/./b",
    "..",
    ".",
    ".hidden",
    "a//b",
    "a/",
    "with space",
    "accentué",
    "back\\slash",
    "nul\x00byte",
    "colon:x",
    "%2e%2e/x",
    "x" * 513,
    "a/" + "s" * 201,
    "file.blob",
    "x.meta.json",
    "dir.blob/x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_refused(storage: BlobStorage, key: str) -> None:
    operations: list[Callable[[], object]] = [
        lambda: storage.put(key, b"x"),
        lambda: storage.get(key),
        lambda: storage.head(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidBlobKey) as caught:
            operation()
        assert caught.value.status == 400
    assert list(storage.iter_keys()) == []


def test_valid_unusual_keys(storage: BlobStorage) -> None:
    keys = ["a", "A-b_c.d/e/f.pdf", "1.2.840.10008/x.dcm", "x" * 200, "a.blobx", "v1..2"]
    for key in keys:
        storage.put(key, key.encode())
    for key in keys:
        assert storage.get(key) == key.encode()
    assert sorted(storage.iter_keys()) == sorted(keys)


def test_invalid_content_type(storage: BlobStorage) -> None:
    with pytest.raises(BadRequest):
        storage.put("k", b"x", "text/plain\r\nX-Injected: 1")


def test_iter_keys_prefix(storage: BlobStorage) -> None:
    for key in ["p/1/a", "p/1/b", "p/2/c", "q/d", "pa", "p/1b"]:
        storage.put(key, b"x")
    assert sorted(storage.iter_keys("p/")) == ["p/1/a", "p/1/b", "p/1b", "p/2/c"]
    assert sorted(storage.iter_keys("p")) == ["p/1/a", "p/1/b", "p/1b", "p/2/c", "pa"]
    assert sorted(storage.iter_keys("p/1/")) == ["p/1/a", "p/1/b"]
    assert sorted(storage.iter_keys("p/1")) == ["p/1/a", "p/1/b", "p/1b"]
    assert sorted(storage.iter_keys("p/1/a")) == ["p/1/a"]
    assert list(storage.iter_keys("zzz")) == []
    assert len(list(storage.iter_keys())) == 6
    for prefix in ["../", "/p", "p//", ".x", "a b", "p/../q"]:
        with pytest.raises(InvalidBlobKey):
            storage.iter_keys(prefix)  # refused before iterating


# -- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flip", "truncate", "extend", "empty"])
def test_tampered_ciphertext_detected(storage: BlobStorage, raw: Raw, how: str) -> None:
    storage.put("doc", b"compte rendu operatoire " * 100)
    blob = bytearray(raw.read("doc.blob"))
    if how == "flip":
        blob[len(blob) // 2] ^= 0x01
    elif how == "truncate":
        del blob[-1]
    elif how == "extend":
        blob += b"\x00"
    else:
        blob = bytearray()
    raw.write("doc.blob", bytes(blob))
    with pytest.raises(BlobCorrupted) as caught:
        storage.get("doc")
    assert caught.value.status == 500
    assert isinstance(caught.value, EnrsError)


TAMPERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "sha256": lambda m: m.update(sha256="0" * 64),
    "size": lambda m: m.update(size=m["size"] + 1),
    "content_type": lambda m: m.update(content_type="text/html"),
    "created_at": lambda m: m.update(created_at="2001-01-01T00:00:00+00:00"),
    "unknown_kid": lambda m: m.update(kid="mk-unknown"),
    "nonce": lambda m: m.update(nonce=base64.b64encode(b"\x01" * 12).decode()),
    "wrapped_dek": lambda m: m.update(
        wrapped_dek=base64.b64encode(bytes(60)).decode(),
    ),
    "other_key": lambda m: m.update(key="other"),
    "missing_field": lambda m: m.pop("nonce"),
    "bad_base64": lambda m: m.update(wrapped_dek="***"),
    "version": lambda m: m.update(v=99),
    "segment": lambda m: m.update(segment=1024),
    "segment_missing": lambda m: m.pop("segment"),
}


@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_tampered_meta_detected(storage: BlobStorage, raw: Raw, field: str) -> None:
    storage.put("doc", b"resultats de biologie", "text/plain")
    meta = raw.meta("doc")
    TAMPERS[field](meta)
    raw.write_meta("doc", meta)
    with pytest.raises(BlobCorrupted):
        storage.get("doc")
    with pytest.raises(BlobCorrupted):
        storage.head("doc")


def test_meta_not_json_detected(storage: BlobStorage, raw: Raw) -> None:
    storage.put("doc", b"x")
    raw.write("doc.meta.json", b"{not json")
    with pytest.raises(BlobCorrupted):
        storage.get("doc")


def test_missing_content_object_detected(storage: BlobStorage, raw: Raw) -> None:
    storage.put("doc", b"x")
    raw.remove("doc.blob")
    with pytest.raises(BlobCorrupted):
        storage.get("doc")


def test_blob_moved_to_another_key_fails(storage: BlobStorage, raw: Raw) -> None:
    storage.put("patients/1/doc", b"patient one")
    storage.put("patients/2/doc", b"patient two")
    # Whole object (content + meta) copied under another key.
    raw.write("patients/3/doc.blob", raw.read("patients/1/doc.blob"))
    raw.write("patients/3/doc.meta.json", raw.read("patients/1/doc.meta.json"))
    with pytest.raises(BlobCorrupted):
        storage.get("patients/3/doc")
    # Meta edited to claim the new key: the wrap's associated data no longer matches.
    meta = raw.meta("patients/3/doc")
    meta["key"] = "patients/3/doc"
    raw.write_meta("patients/3/doc", meta)
    with pytest.raises(BlobCorrupted):
        storage.get("patients/3/doc")
    # Content swapped between two keys.
    raw.write("patients/2/doc.blob", raw.read("patients/1/doc.blob"))
    with pytest.raises(BlobCorrupted):
        storage.get("patients/2/doc")
    assert storage.get("patients/1/doc") == b"patient one"


# -- reads in parts ---------------------------------------------------------------------------

SEGMENT = crypto.SEGMENT_BYTES
SEALED = SEGMENT + 16  # a segment's ciphertext and its GCM tag


def test_reader_reads_any_part(storage: BlobStorage) -> None:
    data = os.urandom(3 * SEGMENT + 1234)
    storage.put("img/multi.dcm", data, "application/dicom")
    spans = [
        (0, 132), (0, len(data)), (SEGMENT - 5, 10), (SEGMENT, SEGMENT), (100, 2 * SEGMENT),
        (3 * SEGMENT, 1234), (len(data) - 1, 1), (len(data) - 10, 100), (len(data), 5),
        (len(data) + 50, 5), (10, 0), (SEGMENT + 7, 3), (SEGMENT + 8, 3),
    ]  # fmt: skip
    with storage.reader("img/multi.dcm") as reader:
        assert reader.size == len(data)
        for start, length in spans:
            assert reader.read(start, length) == data[start : start + length], (start, length)
    storage.put("img/empty", b"")
    with storage.reader("img/empty") as reader:
        assert (reader.size, reader.read(0, 10)) == (0, b"")
    with pytest.raises(BlobNotFound), storage.reader("img/absent"):
        pass


def test_reader_decrypts_only_the_segments_read(storage: BlobStorage, raw: Raw) -> None:
    """A segment is authenticated on its own: a part away from a damaged segment reads, the
    damaged one fails, and so does the whole blob."""
    data = os.urandom(4 * SEGMENT)
    storage.put("img/frames.dcm", data)
    blob = bytearray(raw.read("img/frames.dcm.blob"))
    assert len(blob) == 4 * SEALED
    blob[2 * SEALED + 100] ^= 0x01  # in the third segment
    raw.write("img/frames.dcm.blob", bytes(blob))
    with storage.reader("img/frames.dcm") as reader:
        assert reader.read(0, 2 * SEGMENT) == data[: 2 * SEGMENT]
        assert reader.read(3 * SEGMENT, 10) == data[3 * SEGMENT : 3 * SEGMENT + 10]
        with pytest.raises(BlobCorrupted):
            reader.read(2 * SEGMENT + 50, 100)
    with pytest.raises(BlobCorrupted):
        storage.get("img/frames.dcm")


@pytest.mark.parametrize("how", ["swapped", "cut", "last_dropped"])
def test_segments_moved_or_cut_detected(storage: BlobStorage, raw: Raw, how: str) -> None:
    data = os.urandom(3 * SEGMENT + 10)
    storage.put("img/a.dcm", data)
    blob = raw.read("img/a.dcm.blob")
    parts = [blob[i : i + SEALED] for i in range(0, len(blob), SEALED)]
    if how == "swapped":
        parts[0], parts[1] = parts[1], parts[0]
    elif how == "cut":
        parts[-1] = parts[-1][:-1]
    else:
        parts.pop()
    raw.write("img/a.dcm.blob", b"".join(parts))
    with pytest.raises(BlobCorrupted):
        storage.get("img/a.dcm")
    with storage.reader("img/a.dcm") as reader, pytest.raises(BlobCorrupted):
        reader.read(0 if how == "swapped" else 3 * SEGMENT, 10)


def test_version_1_blob_still_read(storage: BlobStorage, raw: Raw) -> None:
    """A blob written before segments (one GCM message, meta ``"v": 1``) reads whole and in
    parts, and a master key rotation keeps it readable."""
    data = os.urandom(2 * SEGMENT + 99)
    storage.put("old/scan.dcm", b"placeholder")  # the key's folders and the master key file
    kid, master = storage.keyring.current()
    dek, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    meta = BlobMeta(
        key="old/scan.dcm", kid=kid, wrapped_dek=b"", nonce=nonce, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), content_type="application/dicom",
        created_at=datetime(2026, 11, 1, tzinfo=UTC), segment=0,
    )  # fmt: skip
    meta = replace(meta, wrapped_dek=crypto._wrap(meta, dek, master))
    assert json.loads(meta.to_json())["v"] == 1 and "segment" not in json.loads(meta.to_json())
    raw.write("old/scan.dcm.blob", AESGCM(dek).encrypt(nonce, data, b"old/scan.dcm"))
    raw.write("old/scan.dcm.meta.json", meta.to_json())
    assert storage.get("old/scan.dcm") == data
    with storage.reader("old/scan.dcm") as reader:
        assert reader.read(SEGMENT - 3, 10) == data[SEGMENT - 3 : SEGMENT + 7]
        assert reader.read(2 * SEGMENT, 500) == data[2 * SEGMENT :]
    storage.rotate_master_key()
    assert raw.meta("old/scan.dcm")["v"] == 1
    assert storage.get("old/scan.dcm") == data


def test_reader_of_a_missing_content_object(storage: BlobStorage, raw: Raw) -> None:
    storage.put("img/b.dcm", b"pixels" * 100)
    raw.remove("img/b.dcm.blob")
    with storage.reader("img/b.dcm") as reader, pytest.raises(BlobCorrupted):
        reader.read(0, 10)


def test_reader_opened_before_an_overwrite(storage: BlobStorage) -> None:
    """An overwrite while a reader is open never gives the new bytes under the old meta: the
    fs backend goes on reading the file it opened, S3 fails the segment's authentication."""
    old, new = os.urandom(2 * SEGMENT), os.urandom(2 * SEGMENT)
    storage.put("img/c.dcm", old)
    with storage.reader("img/c.dcm") as reader:
        storage.put("img/c.dcm", new)
        try:
            got = reader.read(SEGMENT, 100)
        except BlobCorrupted:
            got = None
    assert got == old[SEGMENT : SEGMENT + 100] or (got is None and isinstance(storage, S3))
    assert storage.get("img/c.dcm") == new


def test_reader_finds_the_cold_copy(storage: BlobStorage) -> None:
    data = os.urandom(SEGMENT + 500)
    storage.put("imaging/old.dcm", data)
    storage.copy_to_cold("imaging/old.dcm")
    storage.release_warm("imaging/old.dcm")
    assert storage.tier("imaging/old.dcm") == "cold"
    with storage.reader("imaging/old.dcm") as reader:
        assert reader.read(SEGMENT - 1, 2) == data[SEGMENT - 1 : SEGMENT + 1]


# -- master keys and rotation -----------------------------------------------------------------


def test_master_key_file_created_private(storage: BlobStorage, blob_settings: Settings) -> None:
    path = blob_settings.master_key_path
    assert not path.exists()  # nothing happens before first use
    storage.put("k", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert list(doc["keys"]) == [doc["current"]]
    assert len(base64.b64decode(doc["keys"][doc["current"]])) == 32
    assert list(path.parent.glob(".*.tmp")) == []


def test_rotation_twice(storage: BlobStorage, raw: Raw, blob_settings: Settings) -> None:
    blobs = {f"docs/{i:03d}": os.urandom(100 + i) for i in range(12)}
    for key, data in blobs.items():
        storage.put(key, data)
    content_before = {key: raw.read(f"{key}.blob") for key in blobs}
    first_kid = raw.meta("docs/000")["kid"]

    kids = [first_kid]
    for _ in range(2):
        report = storage.rotate_master_key()
        assert report.current_key_id not in kids
        kids.append(report.current_key_id)
        assert report.rewrapped == len(blobs)
        assert report.failed == 0
        assert report.stale_key_ids == frozenset()
        for key, data in blobs.items():
            assert raw.meta(key)["kid"] == report.current_key_id
            assert raw.read(f"{key}.blob") == content_before[key]  # byte-for-byte unchanged
            assert storage.get(key) == data

    doc = json.loads(blob_settings.master_key_path.read_text())
    assert doc["current"] == kids[-1]
    assert set(doc["keys"]) == set(kids)  # old keys are kept
    assert stat.S_IMODE(blob_settings.master_key_path.stat().st_mode) == 0o600


def test_rewrap_all_is_resumable(storage: BlobStorage, raw: Raw) -> None:
    for i in range(5):
        storage.put(f"k{i}", b"v%d" % i)
    old_kid = raw.meta("k0")["kid"]
    new_kid = storage.keyring.rotate()  # new current key, objects not re-wrapped yet
    storage.put("fresh", b"new")
    assert raw.meta("fresh")["kid"] == new_kid
    assert storage.get("k3") == b"v3"  # still readable with the old key

    raw.write("k4.meta.json", b"garbage")  # one object cannot be re-wrapped
    report = storage.rewrap_all()
    assert (report.rewrapped, report.already_current, report.failed) == (4, 1, 1)
    assert report.failed_keys == ("k4",)
    assert report.current_key_id == new_kid
    assert old_kid not in report.stale_key_ids  # its meta is unreadable: kid unknown

    storage.delete("k4")
    again = storage.rewrap_all()
    assert (again.rewrapped, again.already_current, again.failed) == (0, 5, 0)
    for i in range(4):
        assert storage.get(f"k{i}") == b"v%d" % i


def test_rotation_reports_stale_key(storage: BlobStorage, raw: Raw) -> None:
    storage.put("good", b"ok")
    storage.put("bad", b"ko")
    old_kid = raw.meta("bad")["kid"]
    meta = raw.meta("bad")
    meta["size"] += 1  # still names the old key, but no longer authenticates
    raw.write_meta("bad", meta)
    report = storage.rotate_master_key()
    assert (report.rewrapped, report.failed) == (1, 1)
    assert report.stale_key_ids == frozenset({old_kid})
    assert storage.get("good") == b"ok"


def test_rewrap_never_clobbers_concurrent_overwrite(storage: BlobStorage) -> None:
    storage.put("k", b"old")
    stored = storage._load("k", content=False)
    assert stored is not None
    storage.keyring.rotate()
    storage.put("k", b"new")  # overwritten after the rewrap read the meta
    meta = BlobMeta.from_json("k", stored.meta)
    kid, master = storage.keyring.current()
    old_master = storage.keyring.key(meta.kid)
    assert old_master is not None
    stale = rewrap(meta, old_master, kid, master).to_json()
    assert storage._swap_meta("k", stale, stored.tag) is False
    assert storage.get("k") == b"new"


def test_other_instance_sees_rotated_keys(blob_settings: Settings) -> None:
    first, second = open_storage(blob_settings), open_storage(blob_settings)
    try:
        first.put("k", b"shared")
        assert second.get("k") == b"shared"  # second has loaded the key file now
        first.rotate_master_key()
        assert second.get("k") == b"shared"  # re-reads the changed key file
        second.put("k2", b"two")
        assert first.get("k2") == b"two"
    finally:
        first.close()
        second.close()


_CHILD = """
import pathlib, sys, time
from enrs.kit.storage.crypto import MasterKeyring
ring = MasterKeyring(pathlib.Path(sys.argv[1]))
go = pathlib.Path(sys.argv[2])
pathlib.Path(sys.argv[3]).touch()
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    pass
print(ring.current()[0])
"""


def test_concurrent_master_key_creation(tmp_path: Path) -> None:
    key_file = tmp_path / "deep" / "keys" / "master-keys.json"
    go = tmp_path / "go"
    count = 8
    ready = [tmp_path / f"ready-{i}" for i in range(count)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(key_file), str(go), str(ready[i])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [child.communicate(timeout=60) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    kids = {out.strip() for out, _ in outputs}
    assert len(kids) == 1
    doc = json.loads(key_file.read_text())
    assert list(doc["keys"]) == [doc["current"]] == list(kids)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


# -- availability -----------------------------------------------------------------------------


def test_check_ok(storage: BlobStorage, blob_settings: Settings) -> None:
    storage.check()
    storage.check()
    assert blob_settings.master_key_path.exists()
    assert list(storage.iter_keys()) == []  # the probe leaves nothing behind


def test_nothing_created_before_first_use(blob_settings: Settings, tmp_path: Path) -> None:
    store = open_storage(blob_settings)
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_check_fails_when_storage_dir_is_unusable(tmp_path: Path) -> None:
    (tmp_path / "in-the-way").write_text("a file, not a folder")
    settings = Settings(data_dir=tmp_path, storage_dir=tmp_path / "in-the-way" / "blobs")
    store = open_storage(settings)
    with pytest.raises(StorageUnavailable) as caught:
        store.check()
    assert caught.value.status == 503
    with pytest.raises(StorageUnavailable):
        store.put("k", b"x")


def test_check_fails_when_master_key_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "in-the-way").write_text("x")
    settings = Settings(data_dir=tmp_path, master_key_file=tmp_path / "in-the-way" / "mk.json")
    with pytest.raises(StorageUnavailable):
        open_storage(settings).check()


def test_check_fails_when_s3_unreachable(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{_free_port()}",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    store = open_storage(settings)
    try:
        with pytest.raises(StorageUnavailable):
            store.check()
        with pytest.raises(StorageUnavailable):
            store.get("k")
    finally:
        store.close()


def test_s3_bucket_created_on_first_use(s3_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_endpoint_url=s3_endpoint,
        s3_bucket="created-on-first-put",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    store = open_storage(settings)
    try:
        store.put("k", b"x")
        Raw(settings).client.head_bucket(Bucket="created-on-first-put")
        assert store.get("k") == b"x"
    finally:
        store.close()


def test_error_hierarchy() -> None:
    assert issubclass(BlobNotFound, NotFound)
    assert issubclass(InvalidBlobKey, BadRequest)
    assert issubclass(StorageUnavailable, ServiceUnavailable)
    assert issubclass(BlobCorrupted, EnrsError)
    assert BlobCorrupted("k", "why").status == 500


def test_open_storage_picks_backend(tmp_path: Path) -> None:
    fs = open_storage(Settings(data_dir=tmp_path))
    assert isinstance(fs, FsBlobStorage)
    assert fs.root == tmp_path / "blobs"
    assert isinstance(fs.keyring, MasterKeyring)
    assert fs.keyring.path == tmp_path / "keys" / "master-keys.json"


def test_fs_concurrent_readers_writers_and_rotation(tmp_path: Path) -> None:
    store = open_storage(Settings(data_dir=tmp_path))
    values = [bytes([i]) * (1000 + i) for i in range(20)]
    store.put("hot", values[0])
    errors: list[BaseException] = []
    stop = threading.Event()

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                while not stop.is_set():
                    fn()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        return run

    def write() -> None:
        for value in values:
            store.put("hot", value)

    def read() -> None:
        assert store.get("hot") in values

    threads = [threading.Thread(target=guard(fn)) for fn in (write, read, read)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        report = store.rotate_master_key()
        assert report.failed == 0
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get("hot") in values


# -- storage tiers ----------------------------------------------------------------------------


def _cold_files(settings: Settings) -> list[str]:
    root = settings.storage_cold_path
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_move_to_cold_tier_and_read_back(storage: BlobStorage, blob_settings: Settings) -> None:
    data = os.urandom(70_000)
    stored = storage.put("imaging/2026/12/a.dcm", data, "application/dicom")
    storage.put("imaging/2026/12/b.dcm", b"stays warm")
    assert storage.tier("imaging/2026/12/a.dcm") == "warm"
    info = storage.copy_to_cold("imaging/2026/12/a.dcm")
    assert (info.size, info.sha256) == (stored.size, stored.sha256)
    assert storage.get("imaging/2026/12/a.dcm") == data  # readable between the two steps
    storage.release_warm("imaging/2026/12/a.dcm")
    assert storage.tier("imaging/2026/12/a.dcm") == "cold"
    assert storage.tier("imaging/2026/12/b.dcm") == "warm"
    assert storage.get("imaging/2026/12/a.dcm") == data
    assert storage.head("imaging/2026/12/a.dcm").sha256 == stored.sha256
    keys = sorted(storage.iter_keys("imaging/"))
    assert keys == ["imaging/2026/12/a.dcm", "imaging/2026/12/b.dcm"]
    # Done again: nothing changes, the cold copy is verified again.
    assert storage.copy_to_cold("imaging/2026/12/a.dcm").sha256 == stored.sha256
    storage.release_warm("imaging/2026/12/a.dcm")
    assert storage.get("imaging/2026/12/a.dcm") == data
    storage.delete("imaging/2026/12/a.dcm")
    assert not storage.exists("imaging/2026/12/a.dcm")
    with pytest.raises(BlobNotFound):
        storage.copy_to_cold("imaging/2026/12/a.dcm")
    with pytest.raises(BlobNotFound):
        storage.tier("imaging/2026/12/a.dcm")


def test_fs_cold_tier_is_the_second_folder(blob_settings: Settings, raw: Raw) -> None:
    if blob_settings.storage_backend != "fs":
        pytest.skip("the fs backend's folders")
    store = open_storage(blob_settings)
    data = b"secret pixels " * 1000
    store.put("imaging/x.dcm", data)
    store.copy_to_cold("imaging/x.dcm")
    assert _cold_files(blob_settings) == ["imaging/x.dcm.blob", "imaging/x.dcm.meta.json"]
    assert (blob_settings.storage_path / "imaging/x.dcm.blob").exists()  # until released
    store.release_warm("imaging/x.dcm")
    assert not (blob_settings.storage_path / "imaging/x.dcm.meta.json").exists()
    assert not (blob_settings.storage_path / "imaging/x.dcm.blob").exists()
    cold_blob = (blob_settings.storage_cold_path / "imaging/x.dcm.blob").read_bytes()
    assert b"secret pixels" not in cold_blob  # still encrypted at rest
    # A master key rotation re-wraps the cold copy too; it stays readable.
    report = store.rotate_master_key()
    assert report.rewrapped == 1 and report.failed == 0
    assert store.get("imaging/x.dcm") == data
    # An overwrite goes to the warm tier and drops the stale cold copy.
    store.put("imaging/x.dcm", b"new")
    assert store.tier("imaging/x.dcm") == "warm" and _cold_files(blob_settings) == []
    assert store.get("imaging/x.dcm") == b"new"


def test_fs_unwritable_cold_tier_keeps_the_warm_copy(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, storage_backend="fs")
    settings.storage_cold_path.write_bytes(b"a file where the cold folder should be")
    store = open_storage(settings)
    store.put("imaging/y.dcm", b"pixels")
    with pytest.raises(StorageUnavailable, match="cold tier"):
        store.copy_to_cold("imaging/y.dcm")
    with pytest.raises(BlobNotFound):  # no cold copy: the warm one is not released
        store.release_warm("imaging/y.dcm")
    assert store.tier("imaging/y.dcm") == "warm"
    assert store.get("imaging/y.dcm") == b"pixels"
    assert not list(tmp_path.joinpath("blobs").rglob(".*.tmp*"))


def test_fs_without_cold_folder_refuses_to_move(tmp_path: Path) -> None:
    store = FsBlobStorage(tmp_path / "blobs", MasterKeyring(tmp_path / "keys.json"))
    store.put("a", b"x")
    with pytest.raises(StorageUnavailable, match="no cold tier"):
        store.copy_to_cold("a")
    assert store.tier("a") == "warm"


def test_tampered_cold_copy_fails_verification(
    storage: BlobStorage, blob_settings: Settings, raw: Raw
) -> None:
    storage.put("imaging/z.dcm", b"z" * 5000)
    storage.copy_to_cold("imaging/z.dcm")
    storage.release_warm("imaging/z.dcm")
    if blob_settings.storage_backend == "fs":
        path = blob_settings.storage_cold_path / "imaging/z.dcm.blob"
        damaged = bytearray(path.read_bytes())
        damaged[10] ^= 1
        path.write_bytes(bytes(damaged))
    else:
        damaged = bytearray(raw.read("imaging/z.dcm.blob"))
        damaged[10] ^= 1
        raw.client.put_object(
            Bucket=blob_settings.s3_bucket,
            Key="imaging/z.dcm.blob",
            Body=bytes(damaged),
            StorageClass=blob_settings.s3_cold_storage_class,
        )
    with pytest.raises(BlobCorrupted):
        storage.copy_to_cold("imaging/z.dcm")


def test_s3_cold_tier_is_a_storage_class(blob_settings: Settings, raw: Raw) -> None:
    if blob_settings.storage_backend != "s3":
        pytest.skip("S3 storage classes")
    settings = blob_settings.model_copy(update={"s3_cold_storage_class": "GLACIER_IR"})
    store = open_storage(settings)
    store.put("imaging/s.dcm", b"s" * 3000)
    head = raw.client.head_object(Bucket=settings.s3_bucket, Key="imaging/s.dcm.blob")
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    store.copy_to_cold("imaging/s.dcm")
    assert store.tier("imaging/s.dcm") == "cold"
    head = raw.client.head_object(Bucket=settings.s3_bucket, Key="imaging/s.dcm.blob")
    assert head["StorageClass"] == "GLACIER_IR"
    meta = raw.client.head_object(Bucket=settings.s3_bucket, Key="imaging/s.dcm.meta.json")
    assert meta.get("StorageClass", "STANDARD") == "STANDARD"  # the small meta stays
    assert store.get("imaging/s.dcm") == b"s" * 3000
    store.release_warm("imaging/s.dcm")  # one object: nothing to delete
    assert store.get("imaging/s.dcm") == b"s" * 3000


def test_s3_cold_copy_request() -> None:
    from enrs.kit.storage.s3 import S3BlobStorage

    settings = Settings(storage_backend="s3", s3_bucket="arch", s3_cold_storage_class="ONEZONE_IA")
    store = S3BlobStorage.from_settings(settings, MasterKeyring(Path("/nonexistent/keys.json")))
    assert store.cold_copy_request("imaging/k.dcm") == {
        "Bucket": "arch",
        "Key": "imaging/k.dcm.blob",
        "CopySource": {"Bucket": "arch", "Key": "imaging/k.dcm.blob"},
        "StorageClass": "ONEZONE_IA",
        "MetadataDirective": "COPY",
    }
    with pytest.raises(ValueError, match="s3_cold_storage_class"):
        Settings(s3_cold_storage_class="GLACIER")  # needs a restore before a read: refused
