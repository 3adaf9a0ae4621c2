"""Instances given out in another transfer syntax when the caller cannot take them as kept.

The archive keeps every instance in the transfer syntax it was received in. A peer that did not
accept that syntax (a C-GET requestor or a C-MOVE destination proposing only the uncompressed
ones, a DICOMweb client asking for ``transfer-syntax=1.2.840.10008.1.2.1``) gets the data set in
Explicit VR Little Endian, the syntax every DICOM application supports (PS3.5 10.1, PS3.18
8.7.3.5.2): the pixel data decoded by pydicom's decoders, with the pylibjpeg plugins for
lossless JPEG, JPEG-LS and JPEG 2000 / HTJ2K, and pydicom itself for RLE and deflate.

The SOP Instance UID is kept: the pixel values are those the compressed data decode to, which
for a lossless syntax are the original ones; a lossy one (JPEG baseline, JPEG 2000) already
carries Lossy Image Compression "01", which pydicom keeps. Colour pixel data given as YBR by
the JPEG syntaxes comes out as RGB, its Photometric Interpretation changed to match.

A peer that takes only a compressed syntax (a C-MOVE destination or C-GET requestor proposing
JPEG-LS, JPEG 2000 or RLE alone, a DICOMweb client asking for one to save bandwidth) gets the
instance encoded in one of the **lossless** syntaxes of :data:`ENCODABLE` (:func:`to_syntax`):
the pixel data decoded if it is kept compressed, then encoded by pydicom's plugins (CharLS
through pyjpegls, OpenJPEG and pylibjpeg-rle through pylibjpeg), so the values are those kept
and the SOP Instance UID stays.
The archive never encodes to a lossy syntax: that would change the image a radiologist reads.
"""

from __future__ import annotations

import warnings
from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from enrs.imaging.encoding import read_file

EXPLICIT = ExplicitVRLittleEndian
# The compressed syntaxes the archive encodes to, in the order it offers them: lossless only.
ENCODABLE: tuple[UID, ...] = (JPEGLSLossless, JPEG2000Lossless, RLELossless)


class CannotTranscode(ValueError):
    """The data set cannot be given in the syntax asked for (no decoder for its pixel data,
    pixel data that does not decode or that the encoder does not take, or the retired Explicit
    VR Big Endian, which pydicom does not convert)."""


def to_explicit(content: bytes) -> bytes:
    """The DICOM file ``content`` (PS3.10) in Explicit VR Little Endian: itself when it is
    already, else its data set decoded and encoded again. Raises :class:`CannotTranscode`."""
    try:
        ds = read_file(content)
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if syntax == EXPLICIT:
            return content
        if syntax.is_compressed and "PixelData" in ds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.decompress(generate_instance_uid=False)
        else:  # Implicit VR, or no pixel data: the same values encoded again
            ds.file_meta.TransferSyntaxUID = EXPLICIT  # (big endian raises below)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # no decoder, broken pixel data, a value pydicom cannot encode
        raise CannotTranscode(f"the instance cannot be given in {EXPLICIT.name}: {exc}") from exc
    return out.getvalue()


def to_syntax(content: bytes, target: str) -> bytes:
    """The DICOM file ``content`` in ``target``: Explicit VR Little Endian
    (:func:`to_explicit`) or a syntax of :data:`ENCODABLE`; itself when it is kept in it.
    Raises :class:`CannotTranscode`, also for any other ``target``."""
    wanted = UID(target)
    if wanted == EXPLICIT:
        return to_explicit(content)
    if wanted not in ENCODABLE:
        raise CannotTranscode(f"the archive does not encode instances in {wanted.name}")
    try:
        ds = read_file(content)
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if syntax == wanted:
            return content
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
                raise ValueError("float pixel data is kept in the native syntaxes only")
            if "PixelData" not in ds:  # no pixel data: the data set in Explicit VR, relabelled
                if not syntax.is_little_endian:
                    raise ValueError(f"{syntax.name} is not converted")
                ds.file_meta.TransferSyntaxUID = wanted
            else:
                if syntax.is_compressed:
                    ds.decompress(generate_instance_uid=False)
                ds.compress(wanted, generate_instance_uid=False)
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # no decoder or encoder, broken pixel data, a value not encoded
        raise CannotTranscode(f"the instance cannot be given in {wanted.name}: {exc}") from exc
    return out.getvalue()


class NoSuchFrame(LookupError):
    """A frame number the instance does not have."""


# The Image Pixel module's description of the pixel data: what a frame alone is encoded with.
PIXEL_DESCRIPTION = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)


def frames_in(content: bytes, numbers: list[int], target: str) -> list[bytes]:
    """Frames ``numbers`` (from 1) of the DICOM file ``content`` in ``target``, each handled
    alone (a viewer asks for the frames of a multi-frame image one at a time: decoding or
    encoding them all for each would cost the whole image per frame): Explicit VR Little
    Endian gives a frame's native bytes, decoded when the pixel data is compressed; a syntax
    of :data:`ENCODABLE` gives the frame encoded on its own (its fragments, as in an
    encapsulated pixel data of that syntax). Raises :class:`NoSuchFrame`, and
    :class:`CannotTranscode` as :func:`to_syntax` does."""
    wanted = UID(target)
    if wanted != EXPLICIT and wanted not in ENCODABLE:
        raise CannotTranscode(f"the archive does not encode frames in {wanted.name}")
    ds = _readable(content, wanted)
    count = int(ds.get("NumberOfFrames") or 1)
    missing = [n for n in numbers if not 1 <= n <= count]
    if missing:
        raise NoSuchFrame(f"the instance has {count} frame(s), not frame {missing[0]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [_frame_in(ds, n, wanted) for n in numbers]
    except Exception as exc:  # no decoder or encoder, broken pixel data
        raise CannotTranscode(f"the frames cannot be given in {wanted.name}: {exc}") from exc


def _readable(content: bytes, wanted: UID) -> Dataset:
    try:
        ds = read_file(content)
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        if "PixelData" not in ds:
            raise ValueError("the instance has no pixel data")
        if not syntax.is_little_endian:
            raise ValueError(f"{syntax.name} is not converted")
        if int(ds.BitsAllocated) % 8:
            raise ValueError("bit-packed pixel data is not cut in frames")
    except Exception as exc:
        raise CannotTranscode(f"the frames cannot be given in {wanted.name}: {exc}") from exc
    return ds


def _frame_in(ds: Dataset, number: int, wanted: UID) -> bytes:
    """Frame ``number`` of ``ds`` in ``wanted`` (see :func:`frames_in`)."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    one = Dataset()
    one.file_meta = FileMetaDataset()
    one.file_meta.TransferSyntaxUID = EXPLICIT
    for keyword in PIXEL_DESCRIPTION:
        if keyword in ds:
            setattr(one, keyword, ds[keyword].value)
    if syntax.is_compressed:
        pixels = pixel_array(ds, index=number - 1)  # this frame only; YBR given as RGB
        if int(ds.SamplesPerPixel) == 3:
            one.PhotometricInterpretation, one.PlanarConfiguration = "RGB", 0
        native = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    else:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
        size *= int(ds.BitsAllocated) // 8
        native = bytes(ds.PixelData[(number - 1) * size : number * size])
    if wanted == EXPLICIT:
        return native
    one.PixelData = native
    one.compress(wanted, generate_instance_uid=False)
    return b"".join(generate_frames(one.PixelData, number_of_frames=1))
