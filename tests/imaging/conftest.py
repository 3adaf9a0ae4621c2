"""The imaging archive's DICOM listener served from a thread of the test process on a free port,
for DCMTK's real ``echoscu`` and ``storescu`` to talk to; test data sets built with pydicom
(synthetic: no real patient)."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from enrs.identity.config import IdentityConfig
from enrs.imaging import service
from enrs.imaging.dicom import Archive, DicomListener
from enrs.kit.audit.writer import AuditWriter
from enrs.kit.db import Database
from enrs.kit.storage import BlobStorage, open_storage
from enrs.settings import Settings

AET = "ENRS"

if shutil.which("storescu") is None:  # `make test-deps` installs Debian's dcmtk
    pytest.fail("DCMTK's storescu is not installed (apt-get install dcmtk)", pytrace=False)


@dataclass
class Archived:
    db: Database
    storage: BlobStorage
    port: int
    config: IdentityConfig
    listener: DicomListener

    def register(self, aet: str, *, store: bool = True, **options: Any) -> None:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 104)
        with self.db.transaction() as session:
            service.add_peer(session, aet, store=store, retrieve=False, **options)

    def storescu(
        self, *files: Path, aet: str = "MODALITY", options: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """DCMTK's storescu sending ``files`` as ``aet`` (by default it proposes the
        uncompressed transfer syntaxes; ``options`` such as ``-xr`` propose others)."""
        return subprocess.run(
            ["storescu", "-v", *options, "-aet", aet, "-aec", AET, "127.0.0.1", str(self.port),
             *map(str, files)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def echoscu(self, aet: str = "MODALITY") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["echoscu", "-v", "-aet", aet, "-aec", AET, "127.0.0.1", str(self.port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archived]:
    db = Database(settings.database_url)
    storage = open_storage(settings)
    audit = AuditWriter(db)
    config = IdentityConfig.from_settings(settings)
    listener = DicomListener(Archive(db, storage, audit, config), host="127.0.0.1", port=0, aet=AET)
    listener.start()
    try:
        yield Archived(db, storage, listener.port, config, listener)
    finally:
        listener.stop()
        audit.close()
        db.dispose()


def ct_dataset(
    *,
    patient_id: str | None = "IPP-0001",
    issuer: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    seed: int = 1,
    size: int = 128,
) -> Dataset:
    """A synthetic CT image (``size`` × ``size``, 16 bits; pixels from ``seed``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    if patient_id is not None:
        ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.PatientName = "TEST^SYNTHETIC"
    ds.PatientBirthDate = "19610409"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC0001"
    ds.StudyDate = "20261205"
    ds.StudyTime = "101500"
    ds.StudyDescription = "TDM THORAX"
    ds.Modality = "CT"
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = bytes(b & 0x0F if i % 2 else b for i, b in enumerate(
        random.Random(seed).randbytes(size * size * 2)))  # fmt: skip
    return ds


def smooth_ct(seed: int = 1, size: int = 32, **options: Any) -> Dataset:
    """:func:`ct_dataset` whose pixel values (a gradient, 12 bits) compress as an image's do
    (random ones do not)."""
    ds = ct_dataset(seed=seed, size=size, **options)
    values = [(r * 16 + c * 8 + seed) % 4096 for r in range(size) for c in range(size)]
    ds.PixelData = b"".join(v.to_bytes(2, "little") for v in values)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


# Lossless syntaxes, with what encodes a file in each (DCMTK's encoders; JPEG 2000, which DCMTK
# does not write, by pydicom's OpenJPEG plugin) and storescu's option proposing it.
JPEG_LOSSLESS, JPEG_LS, RLE, J2K = (
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.90",
)  # fmt: skip
ENCODERS = {JPEG_LOSSLESS: "dcmcjpeg", JPEG_LS: "dcmcjpls", RLE: "dcmcrle"}
PROPOSE = {JPEG_LOSSLESS: "-xs", JPEG_LS: "-xt", RLE: "-xr", J2K: "-xv"}


def compressed(path: Path, syntax: str) -> Path:
    """The DICOM file ``path`` encoded in the lossless ``syntax``, beside it."""
    out = path.with_name(f"{path.stem}-{syntax}.dcm")
    if syntax == J2K:
        ds = dcmread(path)
        ds.compress(syntax, generate_instance_uid=False)
        return write(ds, out)
    subprocess.run([ENCODERS[syntax], str(path), str(out)], check=True, timeout=60)
    return out


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file, after its file meta information."""
    from enrs.imaging.encoding import dataset_of

    return dataset_of(path.read_bytes())
