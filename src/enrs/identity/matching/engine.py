"""The matcher seam: score a pair of identities with the model. ``EmbeddedMatcher`` scores in
Python with the model's weights (real time, one identity against its blocked candidates); a
scale-out engine (Splink on DuckDB or Spark) implements the same interface for bulk work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from enrs.identity.matching.compare import LEVELS, Traits
from enrs.identity.matching.model import MatchModel


@dataclass(frozen=True)
class PairScore:
    """Sum of the levels' match weights; ``levels`` says which level each comparison took."""

    weight: float
    levels: dict[str, str]
    auto_link_allowed: bool

    @property
    def probability(self) -> float:
        return float(1.0 / (1.0 + 2.0 ** (-self.weight)))


class Matcher(Protocol):
    model: MatchModel

    def score(self, a: Traits, b: Traits) -> PairScore: ...


class EmbeddedMatcher:
    """Fellegi–Sunter scoring in process, with the family/given-name swap tried too."""

    def __init__(self, model: MatchModel) -> None:
        self.model = model
        self._weights = {
            comp.name: {lvl.label: lvl.weight for lvl in comp.levels} for comp in model.comparisons
        }
        unknown = set(self._weights) - set(LEVELS)
        if unknown:
            raise ValueError(f"the model names comparisons the engine lacks: {sorted(unknown)}")

    def _direct(self, a: Traits, b: Traits) -> PairScore:
        levels = {name: LEVELS[name](a, b) for name in self._weights}
        weight = sum(self._weights[name][label] for name, label in levels.items())
        allowed = all(
            levels.get(name) in labels for name, labels in self.model.auto_link_requires.items()
        )
        return PairScore(weight, levels, allowed)

    def score(self, a: Traits, b: Traits) -> PairScore:
        direct = self._direct(a, b)
        # The swap can only reach "exact" names when a's first name is b's birth name.
        if direct.levels["name"] == "exact" or a.first_given != b.birth_name:
            return direct
        swapped = self._direct(a.swapped(), b)
        if swapped.levels["name"] == "exact" and swapped.levels["given"] == "exact":
            levels = {**swapped.levels, "name": "swapped", "given": "swapped"}
            weight = (
                swapped.weight
                - (self._weights["name"]["exact"] + self._weights["given"]["exact"])
                + self._weights["name"]["swapped"]
                + self._weights["given"]["swapped"]
            )
            allowed = all(
                levels.get(n) in labels for n, labels in self.model.auto_link_requires.items()
            )
            return PairScore(weight, levels, allowed)
        return direct
