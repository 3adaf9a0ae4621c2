"""A stored instance read in parts: its attributes, or some of its frames, without the rest.

A viewer opening a study asks for every instance's metadata, then for the frames it shows, one
request each. Read whole, each of those requests would fetch and decrypt the instance's whole
blob: a 300-frame tomosynthesis or cine instance of hundreds of MB for one frame of 1 or 2 MB,
a CT study's 150 MB for its metadata. The blob storage seals blobs in segments and reads parts
of them (:meth:`enrs.kit.storage.BlobStorage.reader`); this module reads through a
:class:`BlobFile` what pydicom needs:

- :func:`layout`: the file meta and the data set up to the pixel data (pydicom's
  ``stop_before_pixels``), and where the pixel data element's value starts and ends;
- :func:`metadata`: those attributes, and those after the pixel data (PS3.5 7.1: a data set
  may go on after it, e.g. Data Set Trailing Padding), as pydicom reads the whole file;
- :func:`frames`: frames as stored: native ones cut at their offset (PS3.5 8.1.1),
  encapsulated ones found by pydicom's :func:`~pydicom.encaps.get_frame` from the Basic or
  Extended Offset Table or the fragments' item headers, reading only the frames' fragments;
- :func:`one_frame`: a file of the attributes and one frame, for rendering, decoding or
  encoding that frame.

A file in Deflated Explicit VR Little Endian (its data set compressed whole) is read whole.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from enrs.imaging.encoding import read_file
from enrs.kit.storage import BlobReader

# The pixel data elements a data set's top level may end with (PS3.5 A.1 … A.4).
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
LONG_VRS |= {b"UR", b"UT", b"UV"}


class BlobFile(io.RawIOBase):
    """A blob as a read-only, seekable binary file: each read fetches and decrypts only the
    segments it touches (the reader keeps the last ones)."""

    def __init__(self, reader: BlobReader) -> None:
        super().__init__()
        self._reader, self._at = reader, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._reader.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._at = base + offset
        return self._at

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._reader.size - self._at if size is None or size < 0 else size
        data = self._reader.read(self._at, wanted)
        self._at += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_file(reader: BlobReader) -> BinaryIO:
    """``reader``'s blob as a binary file. Not wrapped in an ``io.BufferedReader``: pydicom
    takes one for a file on disk, by its name; the reader keeps the last segments it
    decrypted, so pydicom's many small reads decrypt each segment once."""
    return BlobFile(reader)  # type: ignore[return-value]


@dataclass(frozen=True)
class Layout:
    """A stored file's attributes before its pixel data, and where the pixel data lies:
    ``tag`` is ``None`` when it has none; ``length`` is ``None`` when the value's length is
    undefined (encapsulated pixel data); ``end`` is where the element ends."""

    dataset: Dataset
    tag: int | None
    value_at: int
    length: int | None
    end: int
    inflated: bytes | None = None  # a deflated file's pixel data, read with the whole file


def layout(file: BinaryIO) -> Layout:
    """The :class:`Layout` of the DICOM file ``file`` (PS3.10), reading its header and, for
    encapsulated pixel data, its item headers only. Raises what pydicom raises for a file it
    cannot read, and ``ValueError`` for encapsulated pixel data whose items do not end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(file, stop_before_pixels=True)
    at = file.tell()  # pydicom stopped at the pixel data element's tag, or read to the end
    size = file.seek(0, io.SEEK_END)
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax == DeflatedExplicitVRLittleEndian:  # the data set is compressed: read it whole
        file.seek(0)
        whole = read_file(file.read())
        pixels = whole.get("PixelData")
        if pixels is None:
            return Layout(whole, None, size, 0, size)
        del whole.PixelData
        return Layout(whole, PIXEL_TAGS[0], 0, len(pixels), size, inflated=pixels)
    order = "<" if syntax.is_little_endian else ">"
    file.seek(at)
    head = file.read(8)
    if len(head) < 8:
        return Layout(ds, None, size, 0, size)
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        raise ValueError(f"the data set stops at ({group:04X},{element:04X})")
    if syntax.is_implicit_VR:
        (length,), value_at = struct.unpack(order + "I", head[4:8]), at + 8
    elif head[4:6] in LONG_VRS:
        (length,), value_at = struct.unpack(order + "I", file.read(4)), at + 12
    else:
        (length,), value_at = struct.unpack(order + "H", head[6:8]), at + 8
    if length != UNDEFINED:
        return Layout(ds, tag, value_at, length, value_at + length)
    return Layout(ds, tag, value_at, None, _items_end(file, value_at, order, size))


def _items_end(file: BinaryIO, at: int, order: str, size: int) -> int:
    """Where the items of an undefined-length value starting at ``at`` end: after their
    sequence delimiter, read by item headers alone."""
    while at + 8 <= size:
        file.seek(at)
        group, element, length = struct.unpack(order + "HHI", file.read(8))
        tag = group << 16 | element
        if tag == SEQUENCE_END:
            return at + 8
        if tag != ITEM or length == UNDEFINED:
            break
        at += 8 + length
    raise ValueError("the encapsulated pixel data has no sequence delimiter")


def metadata(file: BinaryIO) -> Dataset:
    """The DICOM file's attributes as pydicom reads the whole file, the pixel data's value
    left out (the metadata leave it out anyway): those before it, and those after."""
    found = layout(file)
    ds = found.dataset
    if found.inflated is None and found.end < file.seek(0, io.SEEK_END):
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        file.seek(found.end)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rest = read_dataset(file, syntax.is_implicit_VR, syntax.is_little_endian)
        for element in rest:
            ds[element.tag] = element
    return ds


class NoSuchFrame(LookupError):
    """A frame number the instance does not have."""


class NotCut(ValueError):
    """Pixel data that is not given frame by frame (none, big endian, bit-packed)."""


def frames(file: BinaryIO, numbers: list[int]) -> list[bytes]:
    """Frames ``numbers`` (from 1) of the DICOM file as stored: native pixel data cut at
    each frame's offset, an encapsulated frame's fragments joined. Raises :class:`NotCut`
    and :class:`NoSuchFrame`."""
    return _cut(layout(file), file, numbers)


def one_frame(file: BinaryIO, number: int) -> bytes:
    """A DICOM file (PS3.10) of the file's attributes with frame ``number`` (from 1) alone as
    its pixel data, in the same transfer syntax: what rendering, decoding or encoding that
    frame needs (they read the top-level attributes and the frame's pixels), without the
    other frames. Raises :class:`NotCut` and :class:`NoSuchFrame`."""
    found = layout(file)
    (frame,) = _cut(found, file, [number])
    ds = found.dataset
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    if found.length is None:
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = frame
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"  # PS3.5 8.2
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _cut(found: Layout, file: BinaryIO, numbers: list[int]) -> list[bytes]:
    ds = found.dataset
    if found.tag != PIXEL_TAGS[0]:
        raise NotCut("the instance has no pixel data")
    count = int(ds.get("NumberOfFrames") or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise NoSuchFrame(f"the instance has {count} frame(s), not frame {missing[0]}")
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if found.length is None:
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        cut = []
        for number in numbers:
            file.seek(found.value_at)
            cut.append(
                get_frame(file, number - 1, extended_offsets=offsets, number_of_frames=count)
            )
        return cut
    if not syntax.is_little_endian:
        raise NotCut("big endian pixel data is not returned as frames")
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
    bits *= int(ds.BitsAllocated)
    if bits % 8:
        raise NotCut("frames of bit-packed pixel data are not returned")
    size = bits // 8
    end = found.value_at + found.length  # a value shorter than its frames gives them short
    cut = []
    for start in (found.value_at + (n - 1) * size for n in numbers):
        if found.inflated is not None:
            cut.append(found.inflated[start : min(start + size, end)])
        else:
            file.seek(start)
            cut.append(file.read(max(0, min(size, end - start))))
    return cut
