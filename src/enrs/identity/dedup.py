"""``enrs identity dedup``: scan the whole registry for duplicates real-time matching missed
(an identity that arrived before its twin record was corrected, a model that changed, a
blocking key that missed) and put them in the cell's queue.

The registry is copied into DuckDB (``registry_frame``); Splink generates the candidate pairs
with the blocking keys of real-time matching (plus the same INS) and scores them with the
levels and weights real-time matching uses (``matching/sql_levels.py``, the model JSON). A pair
of identities of two different regional patients scoring at least the review threshold, or
sharing an INS, becomes one potential-duplicate task per pair of patients (its best pair),
unless the two carry different INS, the cell already has an open task for the two patients, or
it decided to keep them apart. Nothing is linked automatically: the scan only proposes.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from splink import DuckDBAPI, Linker
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.splink_model import gamma_labels, splink_settings
from enrs.identity.models import IdentityTask, RegionalPatient, SourceIdentity
from enrs.identity.registry_frame import load_registry
from enrs.kit.audit.trail import AuditEntry, write_entries
from enrs.kit.db import Database, utcnow
from enrs.settings import Settings

ACTOR = "enrs identity dedup"


@dataclass(frozen=True)
class Candidate:
    source_id: int  # the later identity: the task reads as if it had just arrived
    other_source_id: int
    patient_id: int
    other_patient_id: int
    weight: float
    levels: dict[str, str]


@dataclass
class DedupReport:
    identities: int = 0
    scored_pairs: int = 0  # pairs of different patients at or above the review threshold
    same_ins_pairs: int = 0
    patient_pairs: int = 0  # distinct pairs of patients among them
    already_open: int = 0
    kept_apart: int = 0
    tasks_created: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)


_BEST_PER_PATIENT_PAIR = """
SELECT id_l, id_r, patient_id_l, patient_id_r, match_weight, {gammas}
FROM {predictions}
WHERE patient_id_l <> patient_id_r
  AND NOT (ins_l <> '' AND ins_r <> '' AND ins_l <> ins_r)
QUALIFY row_number() OVER (
    PARTITION BY least(patient_id_l, patient_id_r), greatest(patient_id_l, patient_id_r)
    ORDER BY match_weight DESC, id_l, id_r) = 1
"""

_SAME_INS = """
SELECT l.id, r.id, l.patient_id, r.patient_id
FROM identities l JOIN identities r ON l.ins = r.ins AND l.id < r.id
WHERE l.ins <> '' AND l.patient_id <> r.patient_id
"""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def find_candidates(
    con: duckdb.DuckDBPyConnection, model: MatchModel, report: DedupReport
) -> list[Candidate]:
    """Scored candidate pairs of the frame ``identities`` already in ``con``."""
    linker = Linker(
        DuckDBAPI(connection=con).register("identities"),
        splink_settings(model, gammas=True),
        log_level=logging.ERROR,
    )
    predictions = linker.inference.predict(
        threshold_match_weight=model.review, warning_mode="never"
    )
    names = [comp.name for comp in model.comparisons]
    labels = {name: gamma_labels(name) for name in names}
    sql = _BEST_PER_PATIENT_PAIR.format(
        gammas=", ".join(f"gamma_{n}" for n in names), predictions=predictions.physical_name
    )
    rows: dict[frozenset[int], Candidate] = {}
    across = con.table(predictions.physical_name).filter("patient_id_l <> patient_id_r")
    report.scored_pairs = len(across.project("id_l").fetchall())
    for id_l, id_r, p_l, p_r, weight, *gammas in con.execute(sql).fetchall():
        later, earlier = (id_r, id_l) if id_r > id_l else (id_l, id_r)
        p_later, p_earlier = (p_r, p_l) if id_r > id_l else (p_l, p_r)
        levels = {n: labels[n][int(g)] for n, g in zip(names, gammas, strict=True)}
        rows[frozenset((p_l, p_r))] = Candidate(
            later, earlier, p_later, p_earlier, float(weight), levels
        )
    predictions.drop_table_from_database_and_remove_from_cache()
    same_ins = con.execute(_SAME_INS).fetchall()
    report.same_ins_pairs = len(same_ins)
    for id_l, id_r, p_l, p_r in same_ins:
        key = frozenset((p_l, p_r))
        if key not in rows:  # same INS, traits too far apart to score: the cell must look
            rows[key] = Candidate(id_r, id_l, p_r, p_l, float("nan"), {"ins": "exact"})
    report.patient_pairs = len(rows)
    return sorted(rows.values(), key=lambda c: (-_weight_key(c.weight), c.source_id))


def _weight_key(weight: float) -> float:
    return float("inf") if weight != weight else weight  # same INS first


def _known_pairs(session: Session) -> tuple[set[frozenset[int]], set[frozenset[int]]]:
    """Pairs of patients with an open task, and pairs the cell kept apart."""
    stmt = (
        select(SourceIdentity.patient_id, IdentityTask.other_patient_id, IdentityTask.status)
        .join(SourceIdentity, SourceIdentity.id == IdentityTask.source_id)
        .where(or_(IdentityTask.status == "OPEN", IdentityTask.decision == "KEEP_APART"))
    )
    open_pairs: set[frozenset[int]] = set()
    apart: set[frozenset[int]] = set()
    for patient, other, status in session.execute(stmt):
        (open_pairs if status == "OPEN" else apart).add(frozenset((patient, other)))
    return open_pairs, apart


def _create_tasks(
    db: Database, candidates: Sequence[Candidate], report: DedupReport, model: MatchModel
) -> None:
    entries: list[AuditEntry] = []
    with db.transaction() as session:
        open_pairs, apart = _known_pairs(session)
        fresh: list[Candidate] = []
        for cand in candidates:
            key = frozenset((cand.patient_id, cand.other_patient_id))
            if key in open_pairs:
                report.already_open += 1
            elif key in apart:
                report.kept_apart += 1
            else:
                fresh.append(cand)
        rri = _rris(session, {p for c in fresh for p in (c.patient_id, c.other_patient_id)})
        now = utcnow()
        for cand in fresh:
            task = IdentityTask(
                kind="DUPLICATE",
                status="OPEN",
                source_id=cand.source_id,
                other_patient_id=cand.other_patient_id,
                other_source_id=cand.other_source_id,
                score=None if cand.weight != cand.weight else cand.weight,
                levels=json.dumps(cand.levels),
                created_at=now,
            )
            session.add(task)
            entries.append(
                AuditEntry(
                    category="batch",
                    interaction="identity-dedup",
                    action="C",
                    agent_kind="system",
                    agent_id=ACTOR,
                    patient_ref=f"Patient/{rri[cand.patient_id]}",
                    resource_type="Patient",
                    entity_ref=f"Patient/{rri[cand.other_patient_id]}",
                    detail=json.dumps({"model": model.version, "score": task.score}),
                )
            )
        report.tasks_created = len(fresh)
    entries.append(
        AuditEntry(
            category="batch",
            interaction="identity-dedup",
            action="E",
            agent_kind="system",
            agent_id=ACTOR,
            resource_type="Patient",
            detail=json.dumps(
                {
                    "model": model.version,
                    "identities": report.identities,
                    "patient_pairs": report.patient_pairs,
                    "tasks_created": report.tasks_created,
                }
            ),
        )
    )
    write_entries(db, entries)


def _rris(session: Session, patient_ids: set[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    ids = sorted(patient_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        stmt = select(RegionalPatient.id, RegionalPatient.rri).where(RegionalPatient.id.in_(chunk))
        for pid, rri in session.execute(stmt):
            found[pid] = rri
    return found


def dedup(
    db: Database,
    *,
    model_path: Path | None = None,
    dry_run: bool = False,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> DedupReport:
    model = MatchModel.load(model_path)
    report = DedupReport()
    started = time.perf_counter()
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    try:
        report.identities = load_registry(db, con)
        report.seconds["load"] = time.perf_counter() - started
        step = time.perf_counter()
        report.candidates = find_candidates(con, model, report)
        report.seconds["score"] = time.perf_counter() - step
    finally:
        con.close()
    if not dry_run:
        step = time.perf_counter()
        _create_tasks(db, report.candidates, report, model)
        report.seconds["tasks"] = time.perf_counter() - step
    report.seconds["total"] = time.perf_counter() - started
    report.peak_rss_mb = _peak_rss_mb()
    return report


def summary(report: DedupReport) -> dict[str, Any]:
    return {
        "identities": report.identities,
        "scored_pairs": report.scored_pairs,
        "same_ins_pairs": report.same_ins_pairs,
        "patient_pairs": report.patient_pairs,
        "already_open": report.already_open,
        "kept_apart": report.kept_apart,
        "tasks_created": report.tasks_created,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "peak_rss_mb": round(report.peak_rss_mb, 1),
    }


def _identity_names(settings: Settings, candidates: Sequence[Candidate]) -> dict[int, str]:
    """``authority|IPP (RRI …)`` of the source identities of ``candidates``: what the cell
    and the facilities know them by (not the internal ids)."""
    ids = {c.source_id for c in candidates} | {c.other_source_id for c in candidates}
    db = Database(settings.database_url)
    try:
        with db.transaction(write=False) as session:
            stmt = (
                select(
                    SourceIdentity.id,
                    SourceIdentity.authority,
                    SourceIdentity.ipp,
                    RegionalPatient.rri,
                )
                .join(RegionalPatient, RegionalPatient.id == SourceIdentity.patient_id)
                .where(SourceIdentity.id.in_(sorted(ids)))
            )
            return {
                sid: f"{auth}|{ipp} (RRI {rri})" for sid, auth, ipp, rri in session.execute(stmt)
            }
    finally:
        db.dispose()


def dedup_command(
    settings: Settings,
    *,
    dry_run: bool,
    as_json: bool,
    memory_limit: str | None,
    threads: int | None,
) -> Iterator[str]:
    """``enrs identity dedup``: scan, create the tasks, report."""
    db = Database(settings.database_url)
    try:
        report = dedup(
            db,
            model_path=settings.identity_model,
            dry_run=dry_run,
            memory_limit=memory_limit,
            threads=threads,
        )
    finally:
        db.dispose()
    if as_json:
        yield json.dumps(summary(report))
        return
    s = report.seconds
    yield (
        f"scanned {report.identities} identities in {s['total']:.1f} s (load {s['load']:.1f} s, "
        f"scoring {s['score']:.1f} s); peak memory {report.peak_rss_mb:.0f} MB"
    )
    yield (
        f"{report.scored_pairs} pairs of identities of different patients at or above the "
        f"review threshold, {report.same_ins_pairs} sharing an INS: "
        f"{report.patient_pairs} pairs of patients"
    )
    if dry_run:
        yield "dry run: no task created"
        shown = report.candidates[:20]
        if shown:
            names = _identity_names(settings, shown)
            yield "the first pairs, best first (facility's authority | IPP, regional RRI):"
        for cand in shown:
            levels = ", ".join(f"{k} {v}" for k, v in cand.levels.items())
            yield (
                f"  {names[cand.source_id]} ~ {names[cand.other_source_id]}: "
                f"weight {cand.weight:.1f} ({levels})"
            )
        return
    yield (
        f"{report.tasks_created} potential-duplicate tasks created; {report.already_open} "
        f"already in the queue, {report.kept_apart} kept apart by the cell"
    )
