"""Matching quality of the identity server on a labelled data set (bench/identity_data.py):
precision and recall of automatic links, the cell's queue, false links by hard-negative kind,
missed links by error kind; plus the in-process feed latency.

    .venv/bin/python -m bench.identity_quality [--persons 5000] [--seed 1] [--postgres] [--json F]

Every record goes through ``identity.service.feed`` in its own transaction, in arrival order,
as the MLLP and FHIR feeds do. The baseline in the same run is the *exact-traits* rule (same
normalised birth name, first given name, birth date and sex), the rule many facilities use.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.http_baseline import temporary_postgres
from bench.identity_data import SourceRecord, generate, negative_pairs, pairs_truth
from enrs.identity import service
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import IdentityTask, SourceIdentity
from enrs.identity.schemas import SourceIdentityIn, Telecom
from enrs.identity.traits import normalize_name
from enrs.kit.db import Database
from enrs.kit.migrate import upgrade_head
from enrs.settings import PLACEHOLDER_OID_ROOT

CONFIG = IdentityConfig(PLACEHOLDER_OID_ROOT)  # the generated INS are real-looking NIRs

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def to_input(rec: SourceRecord) -> SourceIdentityIn:
    return SourceIdentityIn(
        authority=rec.authority,
        ipp=rec.ipp,
        birth_name=rec.birth_name,
        used_name=rec.used_name,
        given_names=list(rec.given_names),
        birth_date=rec.birth_date,
        sex=rec.sex,  # type: ignore[arg-type]
        birth_place=rec.birth_place,
        address_line=rec.address_line,
        postal_code=rec.postal_code,
        city=rec.city,
        telecom=[Telecom(system="phone", value=rec.phone)] if rec.phone else [],
        ins=rec.ins,
        ins_system=rec.ins_system,
        status=rec.status,  # type: ignore[arg-type]
        attributes=rec.attributes,
    )


def _pairs(groups: dict[Any, list[int]]) -> set[tuple[int, int]]:
    return {pair for idx in groups.values() for pair in combinations(sorted(idx), 2)}


def exact_rule_pairs(records: Sequence[SourceRecord]) -> set[tuple[int, int]]:
    groups: dict[tuple[str, str, Any, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        key = (normalize_name(r.birth_name), normalize_name(r.given_names[0]), r.birth_date, r.sex)
        groups[key].append(i)
    return _pairs(groups)


def score(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    tp = len(pred & truth)
    return {
        "predicted_pairs": len(pred),
        "true_pairs": len(truth),
        "true_positives": tp,
        "false_positives": len(pred - truth),
        "precision": tp / len(pred) if pred else 1.0,
        "recall": tp / len(truth) if truth else 1.0,
    }


def run(records: list[SourceRecord], database_url: str, model: MatchModel) -> dict[str, Any]:
    upgrade_head(database_url)
    db = Database(database_url)
    matcher = EmbeddedMatcher(model)
    latencies: list[float] = []
    methods: Counter[str] = Counter()
    tracemalloc.start()
    started = time.perf_counter()
    for rec in records:
        data = to_input(rec)
        t0 = time.perf_counter()
        with db.transaction() as session:
            result = service.feed(session, matcher, data, actor="bench", config=CONFIG)
        latencies.append(time.perf_counter() - t0)
        methods[result.link_method] += 1
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with db.transaction() as session:
        where = {
            (s.authority, s.ipp): s.patient_id for s in session.scalars(select(SourceIdentity))
        }
        tasks = list(session.scalars(select(IdentityTask).where(IdentityTask.status == "OPEN")))
        source_key = {s.id: (s.authority, s.ipp) for s in session.scalars(select(SourceIdentity))}
    db.dispose()
    index = {(r.authority, r.ipp): i for i, r in enumerate(records)}
    groups: dict[int, list[int]] = defaultdict(list)
    for key, patient in where.items():
        groups[patient].append(index[key])
    truth = pairs_truth(records)
    predicted = _pairs(groups)
    false_links = predicted - truth
    by_kind: Counter[str] = Counter()
    negatives = negative_pairs(records)
    for pair in false_links:
        kind = next((k for k, pairs in negatives.items() if pair in pairs), "other")
        by_kind[kind] += 1
    missed: Counter[str] = Counter()
    for i, j in truth - predicted:
        if (records[i].attributes | records[j].attributes) & {"DOUT", "FICT"}:
            missed["douteuse/fictive: never automatic, by rule"] += 1
            continue
        if records[i].authority == records[j].authority:
            missed["two IPPs of one facility: never automatic, by rule"] += 1
            continue
        for err in records[j].errors or records[i].errors or ("(no error)",):
            missed[err] += 1
    true_tasks = sum(
        1
        for t in tasks
        if any(
            records[index[source_key[t.source_id]]].person_id == records[k].person_id
            for k in groups.get(t.other_patient_id, [])
        )
    )
    eligible = {
        (i, j)
        for i, j in truth
        if not (records[i].attributes | records[j].attributes) & {"DOUT", "FICT"}
    }
    other_facility = {(i, j) for i, j in eligible if records[i].authority != records[j].authority}
    proposed = {  # the pairs the cell is shown: a task's identity and the other patient's ones
        (min(a, b), max(a, b))
        for t in tasks
        for a in [index[source_key[t.source_id]]]
        for b in groups.get(t.other_patient_id, [])
        if a != b
    }
    seen = (predicted | proposed) & truth
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "records": len(records),
        "persons": len({r.person_id for r in records}),
        "enrs": score(predicted, truth),
        "enrs_excluding_douteuse_fictive": score(
            predicted & eligible | (predicted - truth), eligible
        ),
        "enrs_excluding_rule_exclusions": score(
            predicted & other_facility | (predicted - truth), other_facility
        ),
        "baseline_exact_traits": score(exact_rule_pairs(records), truth),
        "true_pairs_within_one_facility": sum(
            1 for i, j in truth if records[i].authority == records[j].authority
        ),
        "link_methods": dict(methods),
        "false_links_by_kind": dict(by_kind),
        "missed_links_by_error": dict(missed.most_common()),
        "queue": {"open_tasks": len(tasks), "tasks_that_are_true_matches": true_tasks},
        "linked_or_proposed_recall": len(seen) / len(truth) if truth else 1.0,
        "feed": {
            "records_per_s": len(records) / elapsed,
            "p50_ms": statistics.median(lat_ms),
            "p95_ms": lat_ms[int(len(lat_ms) * 0.95)],
            "peak_python_mb": peak / 2**20,
        },
        "model_version": model.version,
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"records {report['records']}  persons {report['persons']}  model {report['model_version']}"
    )
    print(f"{'rule':32} {'pred pairs':>10} {'FP':>6} {'precision':>9} {'recall':>7}")
    names = ("enrs", "enrs_excluding_douteuse_fictive", "enrs_excluding_rule_exclusions")
    for name in (*names, "baseline_exact_traits"):
        s = report[name]
        print(
            f"{name:32} {s['predicted_pairs']:>10} {s['false_positives']:>6} "
            f"{s['precision']:>9.4f} {s['recall']:>7.4f}"
        )
    print(
        "rule exclusions: douteuse/fictive identities, and pairs of two IPPs of one facility "
        f"({report['true_pairs_within_one_facility']} of the true pairs)"
    )
    print("link methods:", report["link_methods"])
    print("false automatic links by kind:", report["false_links_by_kind"] or "none")
    print("missed links by error of the later record:", report["missed_links_by_error"])
    q = report["queue"]
    print(
        f"cell's queue: {q['open_tasks']} open tasks, {q['tasks_that_are_true_matches']} "
        f"of them true matches"
    )
    print(
        "recall of linked or proposed to the cell: "
        f"{report['linked_or_proposed_recall']:.4f} of the true pairs"
    )
    f = report["feed"]
    print(
        f"feed in process: {f['records_per_s']:.0f} records/s, p50 {f['p50_ms']:.2f} ms, "
        f"p95 {f['p95_ms']:.2f} ms, peak Python memory {f['peak_python_mb']:.0f} MB"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    records = list(generate(args.persons, seed=args.seed))
    model = MatchModel.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.postgres:
            report = run(records, f"sqlite:///{tmp}/quality.db", model)
        else:
            with temporary_postgres(PG_ADMIN, prefix="enrs_quality") as url:
                report = run(records, url, model)
    report["backend"] = "postgresql" if args.postgres else "sqlite"
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
