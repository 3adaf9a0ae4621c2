"""Rendered images of stored instances (WADO-RS *Retrieve Rendered Resources*, PS3.18 9.5 and
8.3.5): one frame as an 8-bit PNG or JPEG (Pillow encodes both).

The pixel data is decoded by pydicom (numpy): the uncompressed transfer syntaxes, deflate and
RLE itself; JPEG (baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K through Pillow and
the pylibjpeg plugins (libjpeg, OpenJPEG). A syntax none of them decodes (JPEG XL, MPEG video…)
or pixel data that does not decode is :class:`NotRenderable`. The Modality LUT (Rescale Slope /
Intercept) is applied, then the first VOI window (Window Center / Width) when present, else the
frame's range is stretched to 0-255; MONOCHROME1 is inverted; colour frames (RGB, YBR) are
given as RGB.
"""

from __future__ import annotations

import warnings
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array

from enrs.imaging.encoding import read_file
from enrs.kit.errors import NotAcceptable, NotFound

PNG, JPEG = "image/png", "image/jpeg"

MEDIA_TYPES = (JPEG, PNG)  # the default first


class NotRenderable(NotAcceptable):
    """The instance has no image this archive can render (no pixel data, a compressed syntax
    without its decoder, an unsupported photometric interpretation): 406."""


def frame(ds: Dataset, number: int) -> np.ndarray[Any, Any]:
    """Frame ``number`` (from 1) as 8-bit grey (2-D) or RGB (3-D) values."""
    if "PixelData" not in ds:
        raise NotRenderable("the instance has no pixel data")
    frames = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= number <= frames:
        raise NotFound(f"the instance has {frames} frame(s), not frame {number}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # That frame alone decoded: a viewer asks for each frame of a multi-frame image.
            pixels = ds.pixel_array if frames == 1 else pixel_array(ds, index=number - 1)
    except Exception as exc:  # a missing decoder, a broken pixel data
        raise NotRenderable(f"the pixel data cannot be decoded: {exc}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        return _grey(ds, pixels, invert=photometric == "MONOCHROME1")
    if photometric == "RGB" or photometric.startswith("YBR"):  # pydicom gives YBR as RGB
        return _to_8bit(pixels.astype(np.float64), *_range(pixels))
    raise NotRenderable(f"photometric interpretation {photometric} is not rendered")


def _range(values: np.ndarray[Any, Any]) -> tuple[float, float]:
    return float(values.min()), float(values.max())


def _grey(ds: Dataset, pixels: np.ndarray[Any, Any], *, invert: bool) -> np.ndarray[Any, Any]:
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        out = _to_8bit(values, low, high)  # PS3.3 C.11.2.1.2.1 (LINEAR)
    elif "VOILUTSequence" in ds:
        voi = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        out = _to_8bit(voi, *_range(voi))
    else:
        out = _to_8bit(values, *_range(values))
    return 255 - out if invert else out


def _first(value: Any) -> float:
    try:
        return float(value[0]) if not isinstance(value, str | int | float) else float(value)
    except TypeError:
        return float(value)


def _to_8bit(values: np.ndarray[Any, Any], low: float, high: float) -> np.ndarray[Any, Any]:
    if high <= low:
        return np.where(values > low, 255, 0).astype(np.uint8)
    scaled = (values - low) / (high - low) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray[Any, Any], media_type: str) -> bytes:
    """8-bit grey (rows x columns) or RGB (rows x columns x 3) ``pixels`` as ``media_type``."""
    out = BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if media_type == PNG:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def render(file: bytes, number: int, media_type: str) -> bytes:
    """Frame ``number`` of the DICOM file ``file`` as ``media_type`` (PNG or JPEG)."""
    pixels = frame(read_file(file), number)
    return encode(pixels, media_type)
