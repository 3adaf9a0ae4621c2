"""Instances kept compressed, given out decoded (:mod:`enrs.imaging.transcoding`) and rendered
(:mod:`enrs.imaging.rendering`): files encoded by DCMTK's own encoders (lossless JPEG, JPEG-LS,
RLE) and by OpenJPEG (JPEG 2000) decode to the original pixel values."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRBigEndian

from enrs.imaging import decoding, rendering
from enrs.imaging.transcoding import (
    EXPLICIT,
    CannotTranscode,
    NoSuchFrame,
    frames_in,
    to_explicit,
    to_syntax,
)
from enrs.kit.errors import NotFound
from tests.imaging.conftest import J2K, JPEG_LOSSLESS, JPEG_LS, RLE, compressed, smooth_ct, write


@pytest.fixture
def original(tmp_path: Path) -> Path:
    return write(smooth_ct(seed=7, size=64), tmp_path / "ct.dcm")


@pytest.mark.parametrize("syntax", [JPEG_LOSSLESS, JPEG_LS, RLE, J2K])
def test_a_lossless_instance_is_given_decoded(original: Path, syntax: str) -> None:
    path = compressed(original, syntax)
    content = path.read_bytes()
    assert dcmread(path).file_meta.TransferSyntaxUID == syntax
    assert len(content) < len(original.read_bytes())  # really compressed
    explicit = dcmread(BytesIO(to_explicit(content)))
    source = dcmread(original)
    assert explicit.file_meta.TransferSyntaxUID == EXPLICIT
    assert explicit.SOPInstanceUID == source.SOPInstanceUID
    assert explicit.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert "PixelData" in explicit and not explicit["PixelData"].is_undefined_length
    assert np.array_equal(explicit.pixel_array, source.pixel_array)
    assert explicit.PatientID == source.PatientID and explicit.StudyDate == source.StudyDate
    # and drawn as the original is
    wanted = rendering.render(original.read_bytes(), 1, rendering.PNG)
    assert rendering.render(content, 1, rendering.PNG) == wanted


def test_an_uncompressed_instance(original: Path, tmp_path: Path) -> None:
    content = original.read_bytes()
    assert to_explicit(content) is content  # already in the syntax: as it is
    implicit = dcmread(original)
    implicit.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    implicit_path = write(implicit, tmp_path / "implicit.dcm")
    again = dcmread(BytesIO(to_explicit(implicit_path.read_bytes())))
    assert again.file_meta.TransferSyntaxUID == EXPLICIT
    assert again == dcmread(original)


def test_no_pixel_data_under_a_compressed_syntax(tmp_path: Path) -> None:
    """A data set without pixel data received in a JPEG context (its elements are encoded in
    Explicit VR Little Endian all the same): given with the same values."""
    ds = smooth_ct(size=8)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = JPEG_LOSSLESS
    path = write(ds, tmp_path / "no-pixels.dcm")
    again = dcmread(BytesIO(to_explicit(path.read_bytes())))
    assert again.file_meta.TransferSyntaxUID == EXPLICIT
    assert again == dcmread(path)


@pytest.mark.parametrize("target", [JPEG_LS, J2K, RLE])
def test_an_instance_encoded_losslessly(original: Path, tmp_path: Path, target: str) -> None:
    """:func:`to_syntax`: an uncompressed instance (Explicit or Implicit VR) and one kept in
    another compressed syntax come out in ``target``, the same pixel values, SOP Instance UID
    and attributes; one kept in ``target`` as it is."""
    source = dcmread(original)
    implicit = dcmread(original)
    implicit.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    sources = [
        original,
        write(implicit, tmp_path / "implicit.dcm"),
        compressed(original, JPEG_LS if target != JPEG_LS else J2K),
    ]
    for path in sources:
        content = path.read_bytes()
        out = to_syntax(content, target)
        again = dcmread(BytesIO(out))
        assert again.file_meta.TransferSyntaxUID == target, path
        assert again.SOPInstanceUID == source.SOPInstanceUID
        assert again.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
        assert again["PixelData"].is_undefined_length  # encapsulated
        assert np.array_equal(again.pixel_array, source.pixel_array)
        assert again.PatientID == source.PatientID and again.StudyDate == source.StudyDate
        assert len(out) < len(original.read_bytes())
        assert to_syntax(out, target) is out  # kept in it: as it is
    assert to_syntax(original.read_bytes(), EXPLICIT) == original.read_bytes()


def _rgb_frames(rng: np.random.Generator) -> tuple[Any, np.ndarray[Any, Any]]:
    """An RGB 8-bit image of three 48 × 40 frames, and its values."""
    colour = smooth_ct(size=8)
    colour.Rows, colour.Columns, colour.NumberOfFrames = 48, 40, 3
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    colour.PlanarConfiguration = 0
    colour.BitsAllocated, colour.BitsStored, colour.HighBit = 8, 8, 7
    colour.PixelRepresentation = 0
    frames = (rng.integers(0, 60, (3, 48, 40, 3)) + np.arange(40)[None, None, :, None]).astype("u1")
    colour.PixelData = frames.tobytes()
    return colour, frames


@pytest.mark.parametrize("target", [JPEG_LS, J2K, RLE])
def test_signed_and_colour_multi_frame_pixels_encoded_losslessly(
    tmp_path: Path, target: str
) -> None:
    """Signed 16-bit values (a CT's air at -1000 and below) and an RGB 8-bit image of three
    frames come back from ``target`` with the same values; float pixel data, which only the
    native syntaxes carry, is not relabelled."""
    rng = np.random.default_rng(4)
    signed = smooth_ct(size=8)
    signed.Rows = signed.Columns = 64
    signed.BitsStored, signed.HighBit, signed.PixelRepresentation = 16, 15, 1
    values = np.clip(rng.normal(-500, 400, (64, 64)), -2000, 3000).astype("<i2")
    signed.PixelData = values.tobytes()
    colour, frames = _rgb_frames(rng)
    for ds, wanted in ((signed, values), (colour, frames)):
        content = write(ds, tmp_path / "source.dcm").read_bytes()
        again = dcmread(BytesIO(to_syntax(content, target)))
        assert again.file_meta.TransferSyntaxUID == target
        assert np.array_equal(again.pixel_array.reshape(wanted.shape), wanted)
        assert again.pixel_array.dtype == wanted.dtype
    parametric = smooth_ct(size=8)
    del parametric.PixelData
    parametric.FloatPixelData = np.zeros(64, "<f4").tobytes()
    content = write(parametric, tmp_path / "float.dcm").read_bytes()
    with pytest.raises(CannotTranscode, match="float pixel data"):
        to_syntax(content, target)


def _multi_frame(tmp_path: Path) -> tuple[bytes, bytes, list[bytes]]:
    """A 12-bit CT of three different frames (a gradient, turned, upside down), uncompressed,
    and a colour image of three RGB frames; the colour frames' bytes."""
    ct = smooth_ct(size=64)
    ct.NumberOfFrames = 3
    gradient = np.frombuffer(smooth_ct(seed=11, size=64).PixelData, "<u2").reshape(64, 64)
    ct.PixelData = b"".join(
        f.tobytes() for f in (gradient, gradient.T.copy(), gradient[::-1].copy())
    )
    rng = np.random.default_rng(5)
    colour, frames = _rgb_frames(rng)
    return (
        write(ct, tmp_path / "ct3.dcm").read_bytes(),
        write(colour, tmp_path / "rgb3.dcm").read_bytes(),
        [f.tobytes() for f in frames],
    )


@pytest.mark.parametrize("target", [JPEG_LS, J2K, RLE])
def test_frames_alone_are_those_of_the_whole_instance(tmp_path: Path, target: str) -> None:
    """:func:`frames_in` decodes or encodes the frames asked for, each alone: the same bytes
    as the instance encoded whole and cut (and as pydicom decodes those), in the order asked
    for; a kept-compressed instance's frames decoded alone are the native values; through
    the decoding pool the same; a frame the instance does not have, a lossy target: refused."""
    ct, colour, colour_frames = _multi_frame(tmp_path)
    for content in (ct, colour):
        whole = to_syntax(content, target)
        cut = list(generate_frames(dcmread(BytesIO(whole)).PixelData, number_of_frames=3))
        assert frames_in(content, [3, 1], target) == [cut[2], cut[0]]
        native = dcmread(BytesIO(content)).PixelData
        size = len(native) // 3
        thirds = [native[n * size : (n + 1) * size] for n in range(3)]
        assert frames_in(whole, [2, 3], EXPLICIT) == [thirds[1], thirds[2]]
        assert decoding.frames(whole, target, [2, 3], EXPLICIT) == [thirds[1], thirds[2]]
        assert decoding.frames(content, EXPLICIT, [1], target) == [cut[0]]
    assert frames_in(colour, [2], EXPLICIT) == [colour_frames[1]]
    with pytest.raises(NoSuchFrame):
        frames_in(ct, [4], target)
    with pytest.raises(NoSuchFrame):  # raised in the pool too
        decoding.frames(ct, EXPLICIT, [0], target)
    with pytest.raises(CannotTranscode):
        frames_in(ct, [1], "1.2.840.10008.1.2.4.91")


def test_a_frame_of_a_compressed_multi_frame_image_is_rendered_alone(tmp_path: Path) -> None:
    ct, _, _ = _multi_frame(tmp_path)
    kept = to_syntax(ct, JPEG_LS)
    for number in (1, 2, 3):
        wanted = rendering.render(ct, number, rendering.PNG)
        assert rendering.render(kept, number, rendering.PNG) == wanted
        assert decoding.rendered(kept, JPEG_LS, number, rendering.PNG) == wanted
    assert rendering.render(ct, 1, rendering.PNG) != rendering.render(ct, 2, rendering.PNG)
    with pytest.raises(NotFound):
        rendering.render(kept, 4, rendering.PNG)


def test_no_lossy_encoding_nor_unknown_syntax(original: Path, tmp_path: Path) -> None:
    content = original.read_bytes()
    for lossy in ("1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.81"):
        with pytest.raises(CannotTranscode, match="does not encode"):
            to_syntax(content, lossy)
    with pytest.raises(CannotTranscode):
        to_syntax(b"not a DICOM file" * 20, J2K)
    ds = smooth_ct(size=8)  # no pixel data: the same data set, relabelled
    del ds.PixelData
    path = write(ds, tmp_path / "no-pixels.dcm")
    again = dcmread(BytesIO(to_syntax(path.read_bytes(), RLE)))
    assert again.file_meta.TransferSyntaxUID == RLE and again == dcmread(path)
    big = tmp_path / "big.dcm"  # the retired Explicit VR Big Endian: not converted
    subprocess.run(["dcmconv", "+tb", str(original), str(big)], check=True, timeout=60)
    with pytest.raises(CannotTranscode):
        to_syntax(big.read_bytes(), J2K)


def test_what_cannot_be_decoded(original: Path, tmp_path: Path) -> None:
    with pytest.raises(CannotTranscode):
        to_explicit(b"not a DICOM file" * 20)
    # JPEG-LS pixel data whose fragment holds its start marker, then zeros
    broken = dcmread(compressed(original, JPEG_LS))
    start, end = broken.PixelData.index(b"\xff\xd8") + 2, len(broken.PixelData)
    broken.PixelData = broken.PixelData[:start] + b"\x00" * (end - start)
    broken_path = write(broken, tmp_path / "broken.dcm")
    with pytest.raises(CannotTranscode):
        to_explicit(broken_path.read_bytes())
    with pytest.raises(rendering.NotRenderable):
        rendering.render(broken_path.read_bytes(), 1, rendering.PNG)
    big = tmp_path / "big.dcm"  # the retired Explicit VR Big Endian (DCMTK's dcmconv): kept
    subprocess.run(["dcmconv", "+tb", str(original), str(big)], check=True, timeout=60)
    assert dcmread(big).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    with pytest.raises(CannotTranscode):
        to_explicit(big.read_bytes())


def test_compressed_instances_are_decoded_in_another_process(
    original: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:mod:`enrs.imaging.decoding`: the same answers as in the calling process, the decoders'
    own errors raised as they are, and a decoding process that dies gives a 503 error once,
    the next call a new pool."""
    content = compressed(original, J2K).read_bytes()
    before = set(decoding.SHARED_MEMORY.glob("enrs-decoded-*"))
    assert decoding.explicit(content, J2K) == to_explicit(content)
    png = rendering.render(content, 1, rendering.PNG)
    assert decoding.rendered(content, J2K, 1, rendering.PNG) == png
    plain = original.read_bytes()  # uncompressed: no decoder runs, handled in this process
    assert decoding.explicit(plain, EXPLICIT) is plain
    broken = bytearray(content)
    start = broken.index(b"\xff\x4f\xff\x51")  # the JPEG 2000 codestream's SOC and SIZ
    broken[start + 4 : start + 64] = b"\x00" * 60
    with pytest.raises(CannotTranscode):
        decoding.explicit(bytes(broken), J2K)
    with pytest.raises(rendering.NotRenderable):
        decoding.rendered(bytes(broken), J2K, 1, rendering.PNG)
    with pytest.raises(NotFound):  # raised in the pool: a frame this instance does not have
        decoding.rendered(content, J2K, 2, rendering.PNG)
    with pytest.raises(decoding.DecoderUnavailable):  # (run here, it would end the tests)
        decoding.off_process(os._exit, 1)  # as a decoder that crashes its process
    assert decoding.explicit(content, J2K) == to_explicit(content)
    plain_rle = to_syntax(plain, RLE)  # an encoding too runs in the pool: the same answer
    assert decoding.transcoded(plain, EXPLICIT, RLE) == plain_rle
    with pytest.raises(CannotTranscode):
        decoding.transcoded(plain, EXPLICIT, "1.2.840.10008.1.2.4.91")
    assert set(decoding.SHARED_MEMORY.glob("enrs-decoded-*")) == before  # none left
    monkeypatch.setattr(decoding, "SHARED_MEMORY", tmp_path / "no-such-folder")
    assert decoding.explicit(content, J2K) == to_explicit(content)  # then through the pipe


def test_the_pool_ends_with_its_serving_process(tmp_path: Path) -> None:
    """A serving process killed (SIGKILL: no exit hook runs) leaves no decoding process."""
    script = tmp_path / "serving.py"
    script.write_text(
        "import multiprocessing, time\n"
        "from enrs.imaging import decoding\n"
        "if __name__ == '__main__':\n"
        "    assert decoding.off_process(bytes, 3) == bytes(3)\n"
        "    print(*(p.pid for p in multiprocessing.active_children()), flush=True)\n"
        "    time.sleep(600)\n"
    )
    serving = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )  # (stderr: the resource tracker of the killed process reports what it cleans up)
    try:
        assert serving.stdout is not None
        pids = [int(pid) for pid in serving.stdout.readline().split()]
        assert pids and all(_alive(pid) for pid in pids)
    finally:
        serving.kill()
        serving.wait()
    deadline = time.monotonic() + 10 * decoding.PARENT_CHECK_S
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (not a zombie waiting for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
