"""What retrieval gives out of a study the identitovigilance cell corrected.

The archive keeps every data set exactly as it was received (:mod:`.correction` corrects the
index, never the stored bytes). A study the cell corrected must not leave with the identifier
it corrected away: WADO-RS (instances and metadata) and C-GET / C-MOVE write the study's
corrected Patient ID (0010,0020), its issuer (0010,0021, and the Issuer of Patient ID
Qualifiers Sequence when the issuer is an OID) and Accession Number (0008,0050) into each data
set on the way out, from the index. A study never corrected leaves byte for byte as received.
The pixel data, compressed or not, is copied as it is (the transfer syntax is kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from enrs.imaging import repository
from enrs.imaging.encoding import read_file
from enrs.imaging.models import Study

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class Identifiers:
    """A corrected study's identifiers, as its data sets are to carry them."""

    patient_id: str | None
    issuer: str | None
    accession_number: str | None


def corrected(session: Session, study: Study) -> Identifiers | None:
    """The identifiers to write into ``study``'s data sets, ``None`` when the cell never
    corrected it (they then leave as received)."""
    if not repository.last_correction_id(session, study.id):
        return None
    return Identifiers(study.source_patient_id, study.source_issuer, study.accession_number)


def rewrite(content: bytes, identifiers: Identifiers) -> bytes:
    """The DICOM file ``content`` with the corrected identifiers, in its own transfer syntax."""
    ds = correct(read_file(content), identifiers)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def correct(ds: Dataset, identifiers: Identifiers) -> Dataset:
    """``ds`` with the corrected identifiers written in (changed in place)."""
    _set(ds, "PatientID", identifiers.patient_id)
    _set(ds, "AccessionNumber", identifiers.accession_number)
    issuer = identifiers.issuer
    _set(ds, "IssuerOfPatientID", issuer)
    if "IssuerOfPatientIDQualifiersSequence" in ds:
        del ds.IssuerOfPatientIDQualifiersSequence
    if issuer is not None and _OID.match(issuer):
        qualifier = Dataset()
        qualifier.UniversalEntityID = issuer
        qualifier.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = [qualifier]
    return ds


def _set(ds: Dataset, keyword: str, value: str | None) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
