"""A stored instance read in parts (:mod:`enrs.imaging.parts`): the metadata and the frames a
viewer asks for, read from the segments of the blob that hold them, are those of the whole
file; a damaged segment elsewhere in the blob does not stop them (the whole blob would have
been needed before), and still fails a read that needs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from enrs.imaging import parts
from enrs.imaging.encoding import read_file
from enrs.imaging.models import Instance
from enrs.imaging.rendering import PNG, render
from enrs.imaging.transcoding import EXPLICIT, frames_in
from enrs.kit.db import Database
from enrs.kit.storage import BlobCorrupted, BlobStorage, open_storage
from enrs.kit.storage.crypto import SEGMENT_BYTES, TAG_BYTES
from enrs.settings import Settings
from tests.documents.world import make_region
from tests.imaging.conftest import Archived, ct_dataset, write
from tests.imaging.web_world import Imaging, make_imaging
from tests.imaging.web_world import parts as multipart_parts

FRAMES, SIZE = 6, 200  # 200 x 200 x 16 bits: 80,000 bytes a frame, more than a segment


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[BlobStorage]:
    store = open_storage(Settings(data_dir=tmp_path, storage_backend="fs"))
    yield store
    store.close()


def _frames() -> list[bytes]:
    return [os.urandom(SIZE * SIZE * 2) for _ in range(FRAMES)]


def _native(ds: Dataset, frames: list[bytes]) -> Dataset:
    ds.NumberOfFrames, ds.PixelData = len(frames), b"".join(frames)
    return ds


def _encapsulated(ds: Dataset, frames: list[bytes], how: str) -> Dataset:
    """``frames`` as the fragments of a JPEG-LS instance (not decoded here: their bytes)."""
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.NumberOfFrames = len(frames)
    if how == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            frames
        )
    else:
        per_frame = 3 if how == "bot, 3 fragments a frame" else 1
        ds.PixelData = encapsulate(
            frames, fragments_per_frame=per_frame, has_bot=how != "no offset table"
        )
    ds["PixelData"].VR = "OB"
    return ds


def _case(name: str, frames: list[bytes]) -> Dataset:
    ds = ct_dataset(size=SIZE)
    if name == "native, trailing elements":
        ds = _native(ds, frames)
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 6)  # Data Set Trailing Padding
    elif name == "native, implicit VR":
        ds = _native(ds, frames)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif name == "native, deflated":
        ds = _native(ds, frames)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elif name == "no pixel data":
        del ds.PixelData
    else:
        ds = _encapsulated(ds, frames, name.removeprefix("encapsulated, "))
    return ds


CASES = [
    "native, trailing elements",
    "native, implicit VR",
    "native, deflated",
    "encapsulated, bot",
    "encapsulated, bot, 3 fragments a frame",
    "encapsulated, no offset table",
    "encapsulated, extended",
    "no pixel data",
]


@pytest.mark.parametrize("name", CASES)
def test_parts_are_those_of_the_whole_file(storage: BlobStorage, tmp_path: Path, name: str) -> None:
    frames = _frames()
    content = write(_case(name, frames), tmp_path / "file.dcm").read_bytes()
    storage.put("imaging/file", content, "application/dicom")
    whole = read_file(content)
    with storage.reader("imaging/file") as reader:
        got = parts.metadata(parts.open_file(reader))
        if "PixelData" not in whole:
            with pytest.raises(parts.NotCut):
                parts.frames(parts.open_file(reader), [1])
            cut = frames
        else:
            cut = parts.frames(parts.open_file(reader), [FRAMES, 1, 3])
            cut = [cut[1], frames[1], cut[2], frames[3], frames[4], cut[0]]
            for number in (2, 4, 5):
                (cut[number - 1],) = parts.frames(parts.open_file(reader), [number])
            with pytest.raises(parts.NoSuchFrame):
                parts.frames(parts.open_file(reader), [FRAMES + 1])
    if "PixelData" in whole:
        if whole.file_meta.TransferSyntaxUID.is_encapsulated:
            assert list(generate_frames(whole.PixelData, number_of_frames=FRAMES)) == frames
        del whole.PixelData
    assert got.file_meta == whole.file_meta
    assert got.to_json_dict() == whole.to_json_dict()
    assert cut == frames


def test_bit_packed_pixel_data_is_not_cut(storage: BlobStorage, tmp_path: Path) -> None:
    """Frames of 5 x 5 bits do not start on a byte: they are not cut (as before parts)."""
    ds = ct_dataset(size=5)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.NumberOfFrames, ds.PixelData = 2, b"\xaa" * 8
    storage.put("imaging/bits", write(ds, tmp_path / "bits.dcm").read_bytes())
    with storage.reader("imaging/bits") as reader, pytest.raises(parts.NotCut):
        parts.frames(parts.open_file(reader), [1])


@pytest.mark.parametrize("syntax", ["native", str(RLELossless), str(JPEGLSLossless)])
def test_one_frame_renders_and_decodes_as_in_the_whole_file(
    storage: BlobStorage, tmp_path: Path, syntax: str
) -> None:
    """A file of the attributes and one frame renders, decodes and encodes that frame as the
    whole file does (each frame's values differ: the wrong frame would show)."""
    ds = ct_dataset(size=48)
    values = [
        np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * (n + 1) % 4096 for n in range(4)
    ]
    ds.NumberOfFrames, ds.PixelData = 4, b"".join(v.tobytes() for v in values)
    ds.WindowCenter, ds.WindowWidth = 1000, 2000
    if syntax != "native":
        ds.compress(syntax, generate_instance_uid=False)
    content = write(ds, tmp_path / "f.dcm").read_bytes()
    storage.put("imaging/one", content)
    for number in (1, 3, 4):
        with storage.reader("imaging/one") as reader:
            one = parts.one_frame(parts.open_file(reader), number)
        assert len(one) < len(content)
        assert read_file(one).NumberOfFrames == 1
        assert render(one, 1, PNG) == render(content, number, PNG)
        assert frames_in(one, [1], EXPLICIT) == frames_in(content, [number], EXPLICIT)
        assert frames_in(one, [1], RLELossless) == frames_in(content, [number], RLELossless)
    with storage.reader("imaging/one") as reader, pytest.raises(parts.NoSuchFrame):
        parts.one_frame(parts.open_file(reader), 5)


def _damage(blob: Path, start: int, end: int) -> None:
    """Flip a byte of the first whole segment inside plaintext bytes ``[start, end)``."""
    index = -(-start // SEGMENT_BYTES)
    assert (index + 1) * SEGMENT_BYTES <= end, "no whole segment in the span"
    data = bytearray(blob.read_bytes())
    data[index * (SEGMENT_BYTES + TAG_BYTES) + 100] ^= 0x01
    blob.write_bytes(bytes(data))


def test_a_frame_is_read_without_the_rest_of_the_blob(storage: BlobStorage, tmp_path: Path) -> None:
    frames = _frames()
    content = write(_case("native, trailing elements", frames), tmp_path / "f.dcm").read_bytes()
    storage.put("imaging/f", content)
    with storage.reader("imaging/f") as reader:
        value_at = parts.layout(parts.open_file(reader)).value_at
    size = SIZE * SIZE * 2
    _damage(tmp_path / "blobs" / "imaging" / "f.blob", value_at + 4 * size, value_at + 5 * size)
    with storage.reader("imaging/f") as reader:
        assert parts.frames(parts.open_file(reader), [1, 4, 6]) == [frames[0], *frames[3::2]]
        assert parts.metadata(parts.open_file(reader)).SOPInstanceUID
        with pytest.raises(BlobCorrupted):
            parts.frames(parts.open_file(reader), [5])
    with pytest.raises(BlobCorrupted):
        storage.get("imaging/f")


# --- over WADO-RS, the instance stored by DCMTK's storescu -----------------------------------


@pytest.fixture
def imaging(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


def test_the_viewer_reads_a_frame_and_metadata_past_a_damaged_segment(
    imaging: Imaging, tmp_path: Path
) -> None:
    """WADO-RS frames and metadata read only what they give: with a segment of frame 5
    damaged on disk, frame 1 and the metadata are served; frame 5 and the whole instance
    fail (500) rather than give altered bytes."""
    from tests.documents.world import CHU_OID, IPP

    frames = _frames()
    ds = _native(ct_dataset(size=SIZE, patient_id=IPP, issuer=CHU_OID), frames)
    done = imaging.archive.storescu(write(ds, tmp_path / "multi.dcm"))
    assert done.returncode == 0 and "Success" in done.stderr + done.stdout, done.stderr
    with imaging.region.db.transaction(write=False) as session:
        key = session.query(Instance.blob_key).filter_by(sop_instance_uid=ds.SOPInstanceUID)
        blob_key = key.scalar()
    storage = imaging.archive.storage
    with storage.reader(blob_key) as reader:
        value_at = parts.layout(parts.open_file(reader)).value_at
    size = SIZE * SIZE * 2
    root = storage.root  # type: ignore[attr-defined]
    _damage(root / f"{blob_key}.blob", value_at + 4 * size, value_at + 5 * size)

    url = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    client = imaging.client
    octet = {**imaging.chu, "Accept": "multipart/related; type=application/octet-stream"}
    first = client.get(f"{url}/frames/1", headers=octet)
    assert first.status_code == 200, first.text
    assert [frame for _, frame in multipart_parts(first)] == [frames[0]]
    meta = client.get(f"{url}/metadata", headers=imaging.chu)
    assert meta.status_code == 200 and meta.json()[0]["00280008"]["Value"] == [FRAMES]
    png = {**imaging.chu, "Accept": "image/png"}
    rendered = client.get(f"{url}/frames/1/rendered", headers=png)
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    rle = client.get(
        f"{url}/frames/1",
        headers={**imaging.chu, "Accept": "multipart/related; type=image/dicom-rle"},
    )
    assert rle.status_code == 200, rle.text
    assert multipart_parts(rle)[0][0] == f"image/dicom-rle; transfer-syntax={RLELossless}"
    assert client.get(f"{url}/frames/5", headers=octet).status_code == 500
    assert client.get(f"{url}/frames/5/rendered", headers=png).status_code == 500
    assert client.get(url, headers=imaging.chu).status_code == 500
