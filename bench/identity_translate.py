"""What translating the demographic record costs a PDQ or PDQm answer, per identity returned.

    .venv/bin/python -m bench.identity_translate [--records 20000] [--seed 7] [--json F]

Records are built from the generator's identities (bench/identity_data.py) as a facility's
ADT would feed them: PID-5 (birth name with the list of first names, a used name for one in
three), PID-11 (home and birth place), PID-13 (the phone, a mobile for one in two), PID-15 and
PID-16 for one in two, PID-24/25 for one in fifty, a PD1 (GP with RPPS) for two in three and
an NK1 for one in two. The FHIR form of each is its translation, stored as ITI-104 would store
it. Each record is kept as the ``identity_source.record`` column holds it (JSON text).

Four readings, each timed record by record (``perf_counter_ns``):

- PDQ as fed (baseline): PID fields and PD1/NK1 of an ADT-fed record (``record.v2_view``: the
  JSON read);
- PDQ translated: the same of an ITI-104-fed record (JSON read + FHIR → v2);
- PDQm as fed (baseline): the FHIR elements of an ITI-104-fed record;
- PDQm translated: the FHIR elements of an ADT-fed record (JSON read + v2 → FHIR).

Printed per reading: records/s, p50/p95/p99 µs per record, the peak memory allocated while
reading them all (tracemalloc, in a separate pass), and the ratio of p50 to its baseline's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from bench._load import percentiles
from bench.identity_data import SourceRecord, generate
from enrs.identity import record, translate
from enrs.kit.hl7v2 import STANDARD

Reading = Callable[[str], Any]


def v2_record(rec: SourceRecord, rng: random.Random) -> dict[str, Any]:
    esc = STANDARD.escape
    given = [esc(g) for g in rec.given_names]
    names = [f"{esc(rec.birth_name)}^{given[0]}^{' '.join(given)}^^^^L"]
    if rec.used_name or rng.random() < 1 / 3:
        names.append(f"{esc(rec.used_name or rec.birth_name)}^{given[0]}^^^^^D")
    fields = {"5": "~".join(names)}
    home = f"{esc(rec.address_line)}^^{esc(rec.city)}^^{rec.postal_code}^FRA^H"
    fields["11"] = home + (f"~^^^^^^BDL^^{rec.birth_place}" if rec.birth_place else "")
    phones = [f"^PRN^PH^^^^^^^^^{rec.phone}"] if rec.phone else []
    if rng.random() < 0.5:
        phones.append(f"^PRN^CP^^^^^^^^^0696{rng.randrange(10**6):06d}")
    if phones:
        fields["13"] = "~".join(phones)
    if rng.random() < 0.5:
        fields["15"] = "fr^Français^ISO639"
        fields["16"] = rng.choice("MSDWC")
    if rng.random() < 0.02:
        fields["24"], fields["25"] = "Y", str(rng.randint(1, 2))
    segments = []
    if rng.random() < 2 / 3:
        rpps = f"810{rng.randrange(10**9):09d}"
        segments.append(f"PD1||||{rpps}^MARIE^Lise^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    if rng.random() < 0.5:
        segments.append(
            f"NK1|1|{esc(rec.birth_name)}^Paul|SPO^Conjoint^HL70063|{home}"
            f"|^PRN^CP^^^^^^^^^0696{rng.randrange(10**6):06d}||N^^HL70131"
        )
    return {"v2": {"PID": fields, "segments": segments}}


def columns(n: int, seed: int) -> tuple[list[str], list[str]]:
    """The record columns of ``n`` identities, fed over HL7 v2 and (translated) over FHIR."""
    rng = random.Random(seed)
    v2_cols: list[str] = []
    fhir_cols: list[str] = []
    for rec in generate(max(1, n // 2), seed=seed):
        if len(v2_cols) == n:
            break
        fed = v2_record(rec, rng)
        pid = {int(k): v for k, v in fed["v2"]["PID"].items()}
        elements = translate.v2_to_fhir(pid, fed["v2"]["segments"])
        v2_cols.append(record.dump(fed) or "")
        fhir_cols.append(record.dump({"fhir": elements}) or "")
    return v2_cols, fhir_cols


def timed(reading: Reading, cols: Sequence[str]) -> dict[str, float]:
    for column in cols[:500]:  # warm-up
        reading(column)
    spent: list[int] = []
    start = time.perf_counter()
    for column in cols:
        t0 = time.perf_counter_ns()
        reading(column)
        spent.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    kept = [reading(column) for column in cols]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del kept
    p50, p95, p99 = percentiles(spent, (50, 95, 99))
    return {
        "records": len(cols),
        "per_s": len(cols) / elapsed,
        "p50_us": p50 / 1000,
        "p95_us": p95 / 1000,
        "p99_us": p99 / 1000,
        "peak_mb": peak / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    v2_cols, fhir_cols = columns(args.records, args.seed)
    size = (
        sum(len(c) for c in v2_cols) / len(v2_cols),
        sum(len(c) for c in fhir_cols) / len(fhir_cols),
    )
    print(f"{len(v2_cols)} records; column {size[0]:.0f} B (HL7 v2), {size[1]:.0f} B (FHIR)")
    readings = {
        "PDQ as fed (baseline)": (record.v2_view, v2_cols),
        "PDQ translated from FHIR": (record.v2_view, fhir_cols),
        "PDQm as fed (baseline)": (record.fhir_elements, fhir_cols),
        "PDQm translated from HL7 v2": (record.fhir_elements, v2_cols),
    }
    figures = {name: timed(reading, cols) for name, (reading, cols) in readings.items()}
    print(
        f"{'reading':30} {'rec/s':>9} {'p50 µs':>7} {'p95 µs':>7} {'p99 µs':>7}",
        f"{'peak MB':>8} ratio",
    )
    for name, f in figures.items():
        base = figures[
            "PDQ as fed (baseline)" if name.startswith("PDQ ") else "PDQm as fed (baseline)"
        ]
        ratio = f["p50_us"] / base["p50_us"]
        f["ratio_p50"] = ratio
        print(
            f"{name:30} {f['per_s']:9.0f} {f['p50_us']:7.1f} {f['p95_us']:7.1f} "
            f"{f['p99_us']:7.1f} {f['peak_mb']:8.1f} {ratio:5.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
