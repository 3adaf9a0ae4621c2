"""WADO-RS (issue 16): instances stored through the real DICOM listener (DCMTK's storescu),
retrieved over DICOMweb from the real app: the files byte for byte, the DICOM JSON metadata,
rendered PNG images; the care-relationship rule (no relationship: 403, a care circle
membership: granted; an unknown patient: admins only) and the audit trail."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from enrs.identity import service as identity_service
from enrs.imaging.access import study_reader, visible_clause
from enrs.imaging.encoding import dataset_of
from enrs.imaging.models import Study
from enrs.kit.audit.models import AuditRecord
from enrs.kit.db import Database
from tests.conftest import Factory
from tests.documents.world import make_region
from tests.imaging.conftest import Archived, dataset_bytes
from tests.imaging.web_world import Imaging, make_imaging, parts, system_principal
from tests.support.portal import log_in

DICOM_JSON = "application/dicom+json"


@pytest.fixture
def imaging(
    app: FastAPI, client: TestClient, db: Database, tmp_path: Path, archive: Archived
) -> Imaging:
    return make_imaging(make_region(app, client, db, tmp_path), archive)


def _url(ds: object, tail: str = "") -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"  # type: ignore[attr-defined]
        f"/instances/{ds.SOPInstanceUID}{tail}"  # type: ignore[attr-defined]
    )


def _png_size(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, pixels) of an 8-bit grey PNG, decoded by Pillow."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    assert image.mode == "L"
    return image.width, image.height, image.tobytes()


def test_retrieve_byte_for_byte_metadata_and_rendered(imaging: Imaging, tmp_path: Path) -> None:
    path, ds = imaging.store(tmp_path, seed=3)
    second_path, second = imaging.store(
        tmp_path, study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, seed=4
    )
    client, chu = imaging.client, imaging.chu
    study = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=chu)
    assert study.status_code == 200, study.text
    assert study.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    found = parts(study)
    assert len(found) == 2
    datasets = {dataset_of(content) for _, content in found}
    assert datasets == {dataset_bytes(path), dataset_bytes(second_path)}
    assert all("transfer-syntax=1.2.840.10008.1.2.1" in kind for kind, _ in found)

    one = client.get(
        _url(ds),
        headers={**chu, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert one.status_code == 200, one.text
    ((_, content),) = parts(one)
    assert dataset_of(content) == dataset_bytes(path)
    series = client.get(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}", headers=chu
    )
    assert len(parts(series)) == 2

    meta = client.get(_url(ds, "/metadata"), headers={**chu, "Accept": DICOM_JSON})
    assert meta.status_code == 200 and meta.headers["content-type"] == DICOM_JSON
    (item,) = meta.json()
    assert item["0020000D"] == {"vr": "UI", "Value": [ds.StudyInstanceUID]}
    assert item["00080018"]["Value"] == [ds.SOPInstanceUID]
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "TEST^SYNTHETIC"}]}
    assert item["00280010"]["Value"] == [128]
    assert "7FE00010" not in item  # bulk data left out
    study_meta = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata", headers=chu)
    uids = {m["00080018"]["Value"][0] for m in study_meta.json()}
    assert uids == {ds.SOPInstanceUID, second.SOPInstanceUID}

    png = client.get(_url(ds, "/rendered"), headers={**chu, "Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    width, height, raw = _png_size(png.content)
    assert (width, height) == (128, 128) and len(raw) == 128 * 128
    frame = client.get(_url(ds, "/frames/1/rendered"), headers={**chu, "Accept": "image/png"})
    assert frame.content == png.content
    assert client.get(_url(ds, "/frames/2/rendered"), headers=chu).status_code == 404

    with imaging.region.db.transaction(write=False) as session:
        reads = session.scalars(
            select(AuditRecord).where(
                AuditRecord.category == "dicomweb",
                AuditRecord.entity_ref == f"ImagingStudy/{ds.StudyInstanceUID}",
            )
        ).all()
    assert len(reads) == 8
    assert {r.patient_ref for r in reads} == {f"Patient/{imaging.region.rri}"}
    assert {json.loads(r.detail)["retrieve"] for r in reads} == {
        "instances",
        "metadata",
        "rendered",
    }


def test_windowing_is_applied(imaging: Imaging, tmp_path: Path) -> None:
    """Stored values 0..4095 with a rescale of -1024: a window of 40 +/- 1 HU around 0 HU maps
    pixel 1024 to about the middle grey, everything below to black, above to white."""
    from tests.imaging.conftest import ct_dataset, write

    ds = ct_dataset(patient_id="800001", issuer="1.2.250.1.999.1.1", size=4)
    ds.PixelData = struct.pack("<16H", *([0] * 4 + [1024] * 4 + [1044] * 4 + [4095] * 4))
    ds.WindowCenter, ds.WindowWidth = 0, 41
    path = write(ds, tmp_path / "window.dcm")
    assert imaging.archive.storescu(path).returncode == 0
    png = imaging.client.get(_url(ds, "/rendered"), headers={**imaging.chu, "Accept": "image/png"})
    _, _, raw = _png_size(png.content)
    rows = [raw[r * 4 : r * 4 + 4] for r in range(4)]
    assert rows[0] == b"\x00" * 4 and rows[3] == b"\xff" * 4
    assert all(120 <= v <= 135 for v in rows[1]) and rows[2] == b"\xff" * 4


def test_jpeg_baseline_pixel_data_is_rendered(imaging: Imaging, tmp_path: Path) -> None:
    """An instance stored in JPEG Baseline (storescu proposes it with -xy) is decoded (Pillow,
    through pydicom) and rendered."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from tests.imaging.conftest import ct_dataset, write

    ds = ct_dataset(patient_id="800001", issuer="1.2.250.1.999.1.1", size=16)
    grey = Image.linear_gradient("L").resize((16, 16))  # 0 at the top, 255 at the bottom
    compressed = io.BytesIO()
    grey.save(compressed, format="JPEG", quality=95)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    del ds.RescaleIntercept, ds.RescaleSlope
    ds.PixelData = encapsulate([compressed.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    path = write(ds, tmp_path / "jpeg.dcm")
    done = imaging.archive.storescu(path, options=("-xy",))
    assert done.returncode == 0 and "Success" in done.stderr + done.stdout, done.stderr
    png = imaging.client.get(_url(ds, "/rendered"), headers={**imaging.chu, "Accept": "image/png"})
    assert png.status_code == 200, png.text
    width, height, raw = _png_size(png.content)
    assert (width, height) == (16, 16)
    assert raw[0] < 40 and raw[-1] > 215  # the gradient, stretched to the frame's range


def test_a_compressed_instance_as_stored_or_decoded(imaging: Imaging, tmp_path: Path) -> None:
    """An instance stored in JPEG-LS (encoded by DCMTK's dcmcjpls, sent by storescu -xt): as
    kept for ``transfer-syntax=*``; decoded, in Explicit VR Little Endian, for
    ``transfer-syntax=1.2.840.10008.1.2.1`` (the instance and its frames); encoded again in
    JPEG 2000 Lossless or RLE when asked for, the same pixel values; rendered as the
    uncompressed original is. Pixel data that does not decode: 406, and the archive serves on."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from tests.imaging.conftest import J2K, JPEG_LS, RLE, compressed, smooth_ct, write

    ds = smooth_ct(patient_id="800001", issuer="1.2.250.1.999.1.1")
    original = write(ds, tmp_path / "ct.dcm")
    path = compressed(original, JPEG_LS)
    done = imaging.archive.storescu(path, options=("-xt",))
    assert done.returncode == 0 and "Success" in done.stderr, done.stderr
    client, chu = imaging.client, imaging.chu
    dicom = 'multipart/related; type="application/dicom"; transfer-syntax='
    kept = client.get(_url(ds), headers={**chu, "Accept": dicom + "*"})
    ((kind, content),) = parts(kept)
    assert kind.endswith(f"transfer-syntax={JPEG_LS}")
    assert dataset_of(content) == dataset_bytes(path)
    explicit = client.get(_url(ds), headers={**chu, "Accept": dicom + "1.2.840.10008.1.2.1"})
    assert explicit.status_code == 200, explicit.text
    ((kind, content),) = parts(explicit)
    assert kind.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    decoded = dcmread(io.BytesIO(content))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert decoded.SOPInstanceUID == ds.SOPInstanceUID and decoded.PixelData == ds.PixelData
    assert client.get(_url(ds), headers={**chu, "Accept": dicom + "1.2.840.10008.1.2.4.50"}
                      ).status_code == 406  # fmt: skip
    for syntax in (J2K, RLE):  # encoded again, losslessly, for a client that asks for it
        encoded = client.get(_url(ds), headers={**chu, "Accept": dicom + syntax})
        assert encoded.status_code == 200, encoded.text
        ((kind, content),) = parts(encoded)
        assert kind.endswith(f"transfer-syntax={syntax}")
        again = dcmread(io.BytesIO(content))
        assert again.file_meta.TransferSyntaxUID == syntax
        assert again.SOPInstanceUID == ds.SOPInstanceUID
        assert again.pixel_array.tobytes() == ds.PixelData
    octet = 'multipart/related; type="application/octet-stream"; transfer-syntax='
    frames = client.get(_url(ds, "/frames/1"), headers={**chu, "Accept": octet + "*"})
    ((kind, frame),) = parts(frames)
    assert kind.endswith(f"transfer-syntax={JPEG_LS}") and frame[:2] == b"\xff\xd8"
    frames = client.get(
        _url(ds, "/frames/1"), headers={**chu, "Accept": octet + "1.2.840.10008.1.2.1"}
    )
    ((kind, frame),) = parts(frames)
    assert kind.endswith("transfer-syntax=1.2.840.10008.1.2.1") and frame == ds.PixelData
    png = client.get(_url(ds, "/rendered"), headers={**chu, "Accept": "image/png"})
    assert png.status_code == 200, png.text
    from enrs.imaging import rendering

    assert png.content == rendering.render(original.read_bytes(), 1, rendering.PNG)

    broken = dcmread(path)
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    start = broken.PixelData.index(b"\xff\xd8") + 2
    broken.PixelData = broken.PixelData[:start] + b"\x00" * (len(broken.PixelData) - start)
    broken_path = write(broken, tmp_path / "broken.dcm")
    assert imaging.archive.storescu(broken_path, options=("-xt",)).returncode == 0
    refused = client.get(_url(broken), headers={**chu, "Accept": dicom + "1.2.840.10008.1.2.1"})
    assert refused.status_code == 406 and "cannot be given" in refused.text
    assert client.get(_url(broken, "/rendered"), headers=chu).status_code == 406
    assert client.get(_url(broken), headers={**chu, "Accept": dicom + "*"}).status_code == 200
    assert client.get(_url(ds), headers={**chu, "Accept": dicom + "1.2.840.10008.1.2.1"}
                      ).status_code == 200  # fmt: skip


def _frames_decode(ds: object, syntax: str, frames: list[bytes]) -> bytes:
    """The pixel values of ``frames`` (compressed in ``syntax``), decoded by pydicom's
    plugins as a data set of ``ds``'s image attributes holding them."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate

    holder = Dataset()
    holder.file_meta = FileMetaDataset()
    holder.file_meta.TransferSyntaxUID = syntax
    image = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation")
    for keyword in (*image, "SamplesPerPixel", "PhotometricInterpretation"):
        setattr(holder, keyword, getattr(ds, keyword))
    holder.NumberOfFrames = len(frames)
    holder.PixelData = encapsulate(frames)
    holder["PixelData"].VR = "OB"
    return bytes(holder.pixel_array.astype("<u2").tobytes())


def test_frames_in_a_compressed_media_type(imaging: Imaging, tmp_path: Path) -> None:
    """Frames asked for in a compressed media type (PS3.18 Table 8.7.3-5): as stored when the
    instance is kept in one of its syntaxes, else encoded losslessly, one part a frame labelled
    ``image/jls; transfer-syntax=…``; each decodes to the stored values. A syntax the archive
    neither keeps nor encodes (near-lossless, lossy): 406, the next Accept range tried first."""
    from tests.imaging.conftest import J2K, JPEG_LS, RLE, compressed, smooth_ct, write

    patient = {"patient_id": "800001", "issuer": "1.2.250.1.999.1.1"}
    ds = smooth_ct(seed=5, **patient)  # two frames, kept uncompressed
    first, second = ds.PixelData, smooth_ct(seed=9).PixelData
    ds.NumberOfFrames, ds.PixelData = 2, first + second
    assert imaging.archive.storescu(write(ds, tmp_path / "two.dcm")).returncode == 0
    client, chu = imaging.client, imaging.chu
    related = "multipart/related; type="
    for media, syntax in (("image/jls", JPEG_LS), ("image/jp2", J2K), ("image/dicom-rle", RLE)):
        answer = client.get(_url(ds, "/frames/2,1"), headers={**chu, "Accept": related + media})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith(f'{related}"{media}"; boundary=')
        found = parts(answer)
        assert [kind for kind, _ in found] == [f"{media}; transfer-syntax={syntax}"] * 2
        assert _frames_decode(ds, syntax, [frame for _, frame in found]) == second + first
    named = client.get(
        _url(ds, "/frames/1"), headers={**chu, "Accept": f"{related}image/jls; transfer-syntax=*"}
    )
    assert parts(named)[0][0] == f"image/jls; transfer-syntax={JPEG_LS}"
    for refused in (
        "image/jls; transfer-syntax=1.2.840.10008.1.2.4.81",  # near-lossless: not encoded
        "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91",  # lossy: never encoded
        "image/jpeg",  # JPEG lossless: not encoded
        "image/jpx",
        "image/gif",
    ):
        answer = client.get(_url(ds, "/frames/1"), headers={**chu, "Accept": related + refused})
        assert answer.status_code == 406, refused
    fallback = f"{related}image/jpx, {related}image/dicom-rle;q=0.5"
    answer = client.get(_url(ds, "/frames/1"), headers={**chu, "Accept": fallback})
    assert parts(answer)[0][0] == f"image/dicom-rle; transfer-syntax={RLE}"

    # Kept in JPEG-LS: image/jls gives the stored fragments, image/jp2 encodes them again.
    single = smooth_ct(seed=7, **patient)
    path = compressed(write(single, tmp_path / "one.dcm"), JPEG_LS)
    assert imaging.archive.storescu(path, options=("-xt",)).returncode == 0
    octet = f"{related}application/octet-stream; transfer-syntax=*"
    ((_, stored),) = parts(client.get(_url(single, "/frames/1"), headers={**chu, "Accept": octet}))
    jls = client.get(_url(single, "/frames/1"), headers={**chu, "Accept": related + "image/jls"})
    assert parts(jls) == [(f"image/jls; transfer-syntax={JPEG_LS}", stored)]
    jp2 = client.get(_url(single, "/frames/1"), headers={**chu, "Accept": related + "image/jp2"})
    ((kind, frame),) = parts(jp2)
    assert kind == f"image/jp2; transfer-syntax={J2K}" and frame != stored
    assert _frames_decode(single, J2K, [frame]) == single.PixelData
    assert client.get(_url(single, "/frames/3"), headers={**chu, "Accept": related + "image/jls"}
                      ).status_code == 404  # fmt: skip


def test_negotiation_and_unknown_uids(imaging: Imaging, tmp_path: Path) -> None:
    _, ds = imaging.store(tmp_path)
    client, chu = imaging.client, imaging.chu
    assert client.get(_url(ds), headers={**chu, "Accept": "application/pdf"}).status_code == 406
    other_syntax = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    )
    assert client.get(_url(ds), headers={**chu, "Accept": other_syntax}).status_code == 406
    xml = 'multipart/related; type="application/dicom+xml"'
    assert client.get(_url(ds, "/metadata"), headers={**chu, "Accept": xml}).status_code == 406
    assert (
        client.get(_url(ds, "/rendered"), headers={**chu, "Accept": "image/gif"}).status_code == 406
    )
    jpeg = client.get(_url(ds, "/rendered"), headers={**chu, "Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"
    default = client.get(_url(ds, "/rendered"), headers=chu)
    assert default.headers["content-type"] == "image/jpeg"
    assert client.get("/dicomweb/studies/1.2.3.4", headers=chu).status_code == 404
    assert (
        client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/1.2.3", headers=chu).status_code
        == 404
    )
    assert client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}").status_code == 401
    no_scope = imaging.region.chu  # the document scopes, not ImagingStudy
    assert (
        client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}", headers=no_scope).status_code == 403
    )


def test_no_relationship_403_then_care_circle_grants(imaging: Imaging, tmp_path: Path) -> None:
    _, ds = imaging.store(tmp_path)
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}"
    denied = imaging.client.get(url, headers=imaging.clinic)
    assert denied.status_code == 403
    assert imaging.client.get(_url(ds, "/metadata"), headers=imaging.clinic).status_code == 403
    with imaging.region.db.transaction(write=False) as session:
        refusals = session.scalars(
            select(AuditRecord).where(
                AuditRecord.category == "dicomweb", AuditRecord.outcome != "0"
            )
        ).all()
    assert len(refusals) == 2
    assert {r.patient_ref for r in refusals} == {f"Patient/{imaging.region.rri}"}
    assert _clause_finds(imaging, imaging.clinic_id, ds.StudyInstanceUID) == []
    imaging.join_circle()
    assert imaging.client.get(url, headers=imaging.clinic).status_code == 200
    assert _clause_finds(imaging, imaging.clinic_id, ds.StudyInstanceUID) == [ds.StudyInstanceUID]


def _clause_finds(imaging: Imaging, client_id: str, study_uid: str) -> list[str]:
    """What a search (QIDO-RS) naming the patient finds for the client, by the SQL form."""
    with imaging.region.db.transaction(write=False) as session:
        patient = identity_service.patient_by_rri(session, imaging.region.rri)
        assert patient is not None
        who = study_reader(session, system_principal(client_id))
        stmt = select(Study.study_uid).where(visible_clause(session, who, patient))
        found = list(session.scalars(stmt.where(Study.study_uid == study_uid)))
        assert (
            list(session.scalars(select(Study.study_uid).where(visible_clause(session, who)))) == []
        )
        return found


def test_unknown_patient_is_read_by_admins_only(
    imaging: Imaging, tmp_path: Path, factory: Factory
) -> None:
    _, ds = imaging.store(tmp_path, patient_id="NOBODY", issuer="1.2.250.1.999.1.1")
    url = f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata"
    assert imaging.client.get(url, headers=imaging.chu).status_code == 403
    factory.user("cell", roles=("admin",))
    admin = TestClient(imaging.region.app)
    log_in(admin, "cell")
    answer = admin.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.json()[0]["00100020"]["Value"] == ["NOBODY"]
