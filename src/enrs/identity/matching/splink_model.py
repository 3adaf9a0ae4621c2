"""Between the ENRS model JSON and Splink: a Splink settings dictionary built from a
``MatchModel`` (the SQL levels of ``sql_levels.py`` with the model's m and u), and a new model
version built from the parameters Splink estimated.

Splink numbers a comparison's levels (its ``gamma_<comparison>`` column): -1 for the null
level, then from n - 1 for the first other level down to 0 for ``ELSE``.
"""

from __future__ import annotations

import math
from typing import Any

from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.sql_levels import BLOCKING_RULES, SQL_LEVELS

# Splink's match weight includes the prior log2(λ / (1 − λ)); with λ = 1/2 it is the plain
# sum of the levels' weights, the score real-time matching compares with the thresholds.
NEUTRAL_PRIOR = 0.5


def gamma_labels(comparison: str) -> dict[int, str]:
    """Splink's comparison vector value of each level label of one comparison."""
    levels = SQL_LEVELS[comparison]
    values: dict[int, str] = {}
    rank = sum(1 for lvl in levels if not lvl.is_null) - 1
    for lvl in levels:
        if lvl.is_null:
            values[-1] = lvl.label
        else:
            values[rank] = lvl.label
            rank -= 1
    return values


def splink_settings(
    model: MatchModel,
    *,
    blocking_rules: tuple[str, ...] = BLOCKING_RULES,
    probability_two_random_records_match: float = NEUTRAL_PRIOR,
    retain: tuple[str, ...] = ("patient_id", "ins", "attributes"),
    gammas: bool = False,
) -> dict[str, Any]:
    """``gammas``: keep each pair's ``gamma_<comparison>`` columns (the level it took; Splink
    keeps them with the compared columns)."""
    comparisons = []
    for comp in model.comparisons:
        sql = SQL_LEVELS.get(comp.name)
        if sql is None:
            raise ValueError(f"no SQL levels for comparison {comp.name!r}")
        if {lv.label for lv in sql} != {lv.label for lv in comp.levels}:
            raise ValueError(f"comparison {comp.name!r}: the model's levels differ from SQL's")
        levels: list[dict[str, Any]] = []
        for lvl in sql:
            entry: dict[str, Any] = {"sql_condition": lvl.condition, "label_for_charts": lvl.label}
            if lvl.is_null:
                entry["is_null_level"] = True
            else:
                entry["m_probability"] = comp.level(lvl.label).m
                entry["u_probability"] = comp.level(lvl.label).u
            levels.append(entry)
        comparisons.append({"output_column_name": comp.name, "comparison_levels": levels})
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "id",
        "probability_two_random_records_match": probability_two_random_records_match,
        "comparisons": comparisons,
        "blocking_rules_to_generate_predictions": [
            {"blocking_rule": rule, "sql_dialect": "duckdb"} for rule in blocking_rules
        ],
        "additional_columns_to_retain": list(retain),
        "retain_matching_columns": gammas,
        "retain_intermediate_calculation_columns": False,
    }


def _usable(value: Any) -> bool:
    return isinstance(value, int | float) and 0 < value <= 1 and math.isfinite(value)


def trained_model(
    base: dict[str, Any], trained: dict[str, Any], *, version: str, training: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """A new model JSON: ``base`` (thresholds, auto-link rules, null levels, descriptions)
    with the m and u Splink estimated. A level Splink could not estimate (never observed,
    or 0) keeps the base value; those levels are returned as ``comparison.level`` names."""
    estimates: dict[tuple[str, str], tuple[Any, Any]] = {}
    for comp in trained["comparisons"]:
        for lvl in comp["comparison_levels"]:
            if lvl.get("is_null_level"):
                continue
            key = (comp["output_column_name"], lvl["label_for_charts"])
            estimates[key] = (lvl.get("m_probability"), lvl.get("u_probability"))
    kept: list[str] = []
    comparisons = []
    for comp in base["comparisons"]:
        levels = []
        for lvl in comp["levels"]:
            m, u = estimates.get((comp["name"], lvl["label"]), (None, None))
            new = dict(lvl)
            if _usable(m) and _usable(u):
                # six significant digits: a tiny estimate stays above 0 (rounding to a number
                # of decimals would make it 0, which no model may hold)
                new["m"], new["u"] = float(f"{m:.6g}"), float(f"{u:.6g}")
            elif not any(s.is_null and s.label == lvl["label"] for s in SQL_LEVELS[comp["name"]]):
                kept.append(f"{comp['name']}.{lvl['label']}")
            levels.append(new)
        comparisons.append({**comp, "levels": levels})
    model = {
        **base,
        "version": version,
        "description": (
            f"Trained by `enrs identity train` from model {base['version']}: m and u "
            "estimated by Splink on the registry; thresholds and auto-link rules kept."
        ),
        "training": training,
        "comparisons": comparisons,
    }
    # The base's calibration maps the base's weights to probabilities: not the new ones'. The
    # trained model goes without (the uncalibrated posterior) until bench/identity_calibration.py
    # fits it again.
    model.pop("calibration", None)
    MatchModel.from_dict(model)  # refuse to write a model the server could not load
    return model, kept
