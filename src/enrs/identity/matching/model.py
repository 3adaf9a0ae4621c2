"""The matching model as data: comparisons with their levels' m and u probabilities, the
thresholds, and the levels an automatic link requires. Versioned JSON the cell can review;
``enrs identity train`` writes a new version (Splink's estimates mapped onto these levels)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path(__file__).with_name("default_model.json")


@dataclass(frozen=True)
class Level:
    label: str
    m: float
    u: float

    @property
    def weight(self) -> float:
        """log2 Bayes factor of this level (Fellegi–Sunter match weight)."""
        return math.log2(self.m / self.u)


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[Level, ...]

    def level(self, label: str) -> Level:
        for lvl in self.levels:
            if lvl.label == label:
                return lvl
        raise KeyError(f"comparison {self.name!r} has no level {label!r}")


@dataclass(frozen=True)
class MatchModel:
    name: str
    version: str
    comparisons: tuple[Comparison, ...]
    auto_link: float
    review: float
    auto_link_requires: dict[str, frozenset[str]]
    # Comparisons of complementary traits (address, phone…): their weight counts towards the
    # review threshold, never towards the automatic-link one. One may still stand in the way
    # of an automatic link through ``auto_link_requires`` (two orders of birth: twins).
    evidence_only: frozenset[str] = frozenset()
    # The probability of one person given a weight: logistic (slope, intercept) in the weight,
    # fitted on labelled candidate pairs (bench/identity_calibration.py). Without it, the
    # Fellegi-Sunter posterior with a prior of 1/2: slope ln 2, intercept 0.
    calibration: tuple[float, float] = (math.log(2), 0.0)

    def probability(self, weight: float) -> float:
        """The calibrated probability that a pair of this match weight is one person."""
        slope, intercept = self.calibration
        z = slope * weight + intercept
        if z < -700:
            return 0.0
        return float(1.0 / (1.0 + math.exp(-z)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatchModel:
        comparisons = tuple(
            Comparison(
                c["name"],
                tuple(Level(lv["label"], float(lv["m"]), float(lv["u"])) for lv in c["levels"]),
            )
            for c in data["comparisons"]
        )
        for comp in comparisons:
            for lvl in comp.levels:
                if not (0 < lvl.m <= 1 and 0 < lvl.u <= 1):
                    raise ValueError(f"{comp.name}.{lvl.label}: m and u must be in (0, 1]")
        model = cls(
            name=data["name"],
            version=data["version"],
            comparisons=comparisons,
            auto_link=float(data["thresholds"]["auto_link"]),
            review=float(data["thresholds"]["review"]),
            auto_link_requires={k: frozenset(v) for k, v in data["auto_link_requires"].items()},
            evidence_only=frozenset(data.get("evidence_only", ())),
        )
        names = {c.name for c in comparisons}
        if not model.evidence_only <= names:
            raise ValueError(
                f"evidence_only names unknown comparisons: {sorted(model.evidence_only - names)}"
            )
        if "calibration" in data:
            cal = data["calibration"]
            slope, intercept = float(cal["slope"]), float(cal["intercept"])
            if not slope > 0:
                raise ValueError("the calibration's slope must be positive")
            model = replace(model, calibration=(slope, intercept))
        if model.review > model.auto_link:
            raise ValueError("the review threshold must not exceed the auto-link threshold")
        return model

    @classmethod
    def load(cls, path: Path | None = None) -> MatchModel:
        return cls.from_dict(json.loads((path or DEFAULT_MODEL).read_text()))

    def comparison(self, name: str) -> Comparison:
        for comp in self.comparisons:
            if comp.name == name:
                return comp
        raise KeyError(name)
