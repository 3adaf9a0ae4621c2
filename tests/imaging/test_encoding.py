"""The framing check of received data sets: whole ones pass, any truncation is caught (pydicom
alone reads them without a word)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from enrs.imaging.encoding import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    Malformed,
    check_framing,
    dataset_of,
    parse,
    part10,
)
from tests.imaging.conftest import ct_dataset


def _encoded(ds: Dataset, syntax: str) -> bytes:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, syntax == ImplicitVRLittleEndian
    write_dataset(out, ds)
    return out.getvalue()


def _with_undefined_length_sequence() -> Dataset:
    ds = ct_dataset(size=16)
    item = Dataset()
    item.UniversalEntityID, item.UniversalEntityIDType = "1.2.250.1.71.4.2.2.1", "ISO"
    nested = Dataset()
    nested.CodeValue = "X"
    item.PurposeOfReferenceCodeSequence = Sequence([nested])
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([item])
    ds["IssuerOfPatientIDQualifiersSequence"].is_undefined_length = True
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    nested.is_undefined_length_sequence_item = True
    return ds


def _boundaries(ds: Dataset, syntax: str) -> set[int]:
    """Where each top-level element ends: a data set cut there is a whole, shorter one."""
    ends, prefix = set(), Dataset()
    for elem in ds:
        prefix.add(elem)
        ends.add(len(_encoded(prefix, syntax)))
    return ends


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_whole_data_sets_pass_and_every_cut_inside_an_element_fails(syntax: str) -> None:
    ds = _with_undefined_length_sequence()
    raw = _encoded(ds, syntax)
    assert b"\xfe\xff\xdd\xe0" in raw  # a sequence delimitation item: undefined lengths
    check_framing(raw, syntax)
    assert parse(raw, syntax).IssuerOfPatientIDQualifiersSequence[0].UniversalEntityIDType == "ISO"
    whole = _boundaries(ds, syntax)
    for cut in range(1, len(raw)):
        if cut in whole:
            check_framing(raw[:cut], syntax)
        else:
            with pytest.raises(Malformed):
                check_framing(raw[:cut], syntax)


def test_stray_bytes_and_misplaced_items_fail() -> None:
    raw = _encoded(ct_dataset(size=16), ExplicitVRLittleEndian)
    with pytest.raises(Malformed, match="header cut"):
        check_framing(raw + b"\x00\x00", ExplicitVRLittleEndian)
    with pytest.raises(Malformed, match="outside a sequence"):
        check_framing(raw + b"\xfe\xff\x00\xe0\x00\x00\x00\x00", ExplicitVRLittleEndian)
    with pytest.raises(Malformed, match="not a transfer syntax"):
        check_framing(raw, "1.2.3")


@pytest.mark.parametrize("source_aet", ["MODALITY", "ODD", ""])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45"])
def test_part10_file_meta_is_pydicoms_encoding(source_aet: str, sop_instance: str) -> None:
    """The file meta information the archive encodes itself is, byte for byte, what pydicom's
    writer makes of the same attributes (odd lengths padded), and the file reads back."""
    ds = ct_dataset(size=8)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    stream = out.getvalue()
    made = part10(
        stream,
        sop_class=ds.SOPClassUID,
        sop_instance=sop_instance,
        transfer_syntax=ExplicitVRLittleEndian,
        source_aet=source_aet,
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet
    reference = DicomBytesIO()
    write_file_meta_info(reference, meta, enforce_standard=True)
    assert made == b"\x00" * 128 + b"DICM" + reference.getvalue() + stream
    assert dataset_of(made) == stream
    read = dcmread(BytesIO(made))
    assert read.file_meta.MediaStorageSOPInstanceUID == sop_instance
    assert read.file_meta.get("SourceApplicationEntityTitle", "") == source_aet
    assert read.SOPInstanceUID == ds.SOPInstanceUID
