"""Instances given out in Explicit VR Little Endian when the caller cannot take them as kept.

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
"""

from __future__ import annotations

import warnings
from io import BytesIO

from pydicom.uid import UID, ExplicitVRLittleEndian

from enrs.imaging.encoding import read_file

EXPLICIT = ExplicitVRLittleEndian


class CannotTranscode(ValueError):
    """The data set cannot be given in Explicit VR Little Endian (no decoder for its pixel
    data, pixel data that does not decode, or the retired Explicit VR Big Endian, which
    pydicom does not convert)."""


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
