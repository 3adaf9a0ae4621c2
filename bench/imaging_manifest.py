"""Building a study's KOS manifest (:mod:`enrs.imaging.manifest`) for a large study, next to
pydicom reading the same manifest back in the same run.

    .venv/bin/python -m bench.imaging_manifest [--series 4] [--instances 500] [--rounds 5]

A study of ``--series`` × ``--instances`` CT instances (index rows made in memory, no
database) is listed in a KOS manifest: ``build_kos`` (the evidence sequence and the TID 2010
content items) then its encoding in Explicit VR Little Endian. The baseline is ``dcmread`` of
the encoded manifest (pydicom parsing every item). Printed: the manifest's size, milliseconds
per build and per read (best of ``--rounds``), and their ratio. The database part (the
study's instances read, the manifest archived and filed, one transaction) is not measured.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import CTImageStorage, generate_uid

from enrs.imaging.encoding import part10
from enrs.imaging.manifest import KOS_CLASS, Where, _encoded, build_kos
from enrs.imaging.models import Instance, Study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    study = Study(
        study_uid=generate_uid(), source_patient_id="IPP-1", source_issuer="1.2.250.1.999.1.1",
        patient_name="TEST^BENCH", patient_birth_date=date(1961, 4, 9), patient_sex="F",
        accession_number="ACC1", study_date=date(2026, 12, 5), study_description="TDM",
    )  # fmt: skip
    listed = [
        (Instance(sop_instance_uid=generate_uid(), sop_class_uid=CTImageStorage), series)
        for series in (generate_uid() for _ in range(args.series))
        for _ in range(args.instances)
    ]
    where = Where("ENRS", "https://enrs.example/dicomweb", "1.2.250.1.999.6")
    builds, reads, file = [], [], b""
    for _ in range(args.rounds):
        start = time.perf_counter()
        kos = build_kos(study, listed, where, datetime.now(UTC))
        data = _encoded(kos)
        builds.append(time.perf_counter() - start)
        file = part10(data, sop_class=KOS_CLASS, sop_instance=kos.SOPInstanceUID,
                      transfer_syntax="1.2.840.10008.1.2.1", source_aet="ENRS")  # fmt: skip
        start = time.perf_counter()
        back = dcmread(BytesIO(file))
        back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[-1]
        len(back.ContentSequence)
        reads.append(time.perf_counter() - start)
    build_ms, read_ms = min(builds) * 1000, min(reads) * 1000
    print(f"instances listed: {len(listed)}  manifest: {len(file) / 1024:.0f} KiB")
    print(f"build + encode: {build_ms:.1f} ms  ({len(listed) / (build_ms / 1000):,.0f} inst/s)")
    print(f"baseline dcmread: {read_ms:.1f} ms")
    print(f"ratio build/read: {build_ms / read_ms:.2f}")


if __name__ == "__main__":
    main()
