"""``enrs identity train``: re-estimate the matching model's m and u on the registry itself
with Splink (DuckDB embedded), and write a new model version for the cell to review.

Steps (Splink's usual recipe, unsupervised):
1. the prior λ from deterministic rules (same INS; same names, first name and birth date);
2. u by random sampling of pairs (different persons, overwhelmingly);
3. m by expectation-maximisation on two blockings, each training what it does not block on:
   same birth date (trains names, first names, sex, places), then same birth name and first
   name (trains the birth date).
The levels are those of real-time matching (``matching/sql_levels.py``). Thresholds and the
levels an automatic link requires are kept from the base model: they are the cell's policy.
The model is written to a file; the server uses it once ``ENRS_IDENTITY_MODEL`` points at it
(and follows that file's later versions, see ``engine.ReloadingMatcher``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import splink
from splink import DuckDBAPI, Linker

from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel
from enrs.identity.matching.splink_model import splink_settings, trained_model
from enrs.identity.registry_frame import load_registry
from enrs.kit.audit.trail import AuditEntry, write_entries
from enrs.kit.db import Database
from enrs.settings import Settings

DETERMINISTIC_RULES = (
    "l.ins <> '' AND l.ins = r.ins",
    "l.birth_name <> '' AND l.birth_name = r.birth_name AND l.first_given = r.first_given"
    " AND l.birth_date = r.birth_date",
)
EM_BLOCKINGS = (
    "l.birth_date = r.birth_date",
    "l.birth_name <> '' AND l.birth_name = r.birth_name AND l.first_given = r.first_given",
)
MIN_IDENTITIES = 1000  # below this, estimates are noise


class TooFewIdentities(Exception):
    pass


@dataclass
class TrainReport:
    identities: int
    seconds: dict[str, float] = field(default_factory=dict)
    prior: float | None = None
    kept: list[str] = field(default_factory=list)
    changes: list[tuple[str, float, float]] = field(default_factory=list)  # level, old, new


def _weights(model: dict[str, Any]) -> dict[str, float]:
    loaded = MatchModel.from_dict(model)
    return {
        f"{comp.name}.{lvl.label}": lvl.weight for comp in loaded.comparisons for lvl in comp.levels
    }


def train(
    db: Database,
    *,
    base_path: Path | None = None,
    max_pairs: float = 5e6,
    seed: int = 42,
    recall: float = 0.8,
    memory_limit: str | None = None,
) -> tuple[dict[str, Any], TrainReport]:
    base = json.loads((base_path or DEFAULT_MODEL).read_text())
    base_model = MatchModel.from_dict(base)
    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    started = time.perf_counter()
    count = load_registry(db, con)
    report = TrainReport(identities=count)
    report.seconds["load"] = time.perf_counter() - started
    if count < MIN_IDENTITIES:
        raise TooFewIdentities(
            f"{count} identities in the registry; training needs at least {MIN_IDENTITIES}"
        )
    linker = Linker(
        DuckDBAPI(connection=con).register("identities"),
        splink_settings(base_model),
        log_level=logging.ERROR,
    )
    training = linker.training
    step = time.perf_counter()
    training.estimate_probability_two_random_records_match(list(DETERMINISTIC_RULES), recall)
    training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    report.seconds["u"] = time.perf_counter() - step
    step = time.perf_counter()
    for blocking in EM_BLOCKINGS:
        training.estimate_parameters_using_expectation_maximisation(blocking)
    report.seconds["em"] = time.perf_counter() - step
    trained = linker.misc.save_model_to_json()
    con.close()
    report.prior = float(trained["probability_two_random_records_match"])
    now = datetime.now(UTC)
    model, report.kept = trained_model(
        base,
        trained,
        version=now.strftime("%Y-%m-%d.trained-%H%M%S"),
        training={
            "library": f"splink {splink.__version__} (duckdb {duckdb.__version__})",
            "trained_at": now.isoformat(timespec="seconds"),
            "identities": count,
            "base_version": base["version"],
            "u_max_pairs": max_pairs,
            "seed": seed,
            "prior_recall": recall,
            "probability_two_random_records_match": report.prior,
            "em_blockings": list(EM_BLOCKINGS),
        },
    )
    old, new = _weights(base), _weights(model)
    report.changes = [(name, old[name], new[name]) for name in old]
    report.seconds["total"] = time.perf_counter() - started
    return model, report


def train_command(
    settings: Settings,
    *,
    output: Path | None,
    base: Path | None,
    max_pairs: float,
    seed: int,
    memory_limit: str | None,
) -> Iterator[str]:
    """``enrs identity train``: train, write the model file, audit the run, report."""
    db = Database(settings.database_url)
    try:
        model, report = train(
            db,
            base_path=base or settings.identity_model,
            max_pairs=max_pairs,
            seed=seed,
            memory_limit=memory_limit,
        )
        path = output or settings.data_dir / "identity-models" / f"model-{model['version']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n")
        write_entries(
            db,
            [
                AuditEntry(
                    category="batch",
                    interaction="identity-train",
                    action="E",
                    agent_kind="system",
                    agent_id="enrs identity train",
                    resource_type="Patient",
                    detail=json.dumps({"model": model["version"], "identities": report.identities}),
                )
            ],
        )
    finally:
        db.dispose()
    yield (
        f"trained on {report.identities} identities in {report.seconds['total']:.1f} s "
        f"(load {report.seconds['load']:.1f} s, u {report.seconds['u']:.1f} s, "
        f"EM {report.seconds['em']:.1f} s); prior λ = {report.prior:.3g}"
    )
    yield f"{'level':<32} {'weight before':>13} {'after':>7}"
    for name, before, after in report.changes:
        yield f"{name:<32} {before:>13.2f} {after:>7.2f}"
    if report.kept:
        yield "not estimated (base values kept): " + ", ".join(report.kept)
    yield f"model {model['version']} written to {path}"
    yield (
        f"review it, check it with bench/identity_quality.py --model {path}, then set "
        f"ENRS_IDENTITY_MODEL={path} (a server started with it follows that file)"
    )
