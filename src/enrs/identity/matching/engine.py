"""The matcher seam: score a pair of identities with the model. ``EmbeddedMatcher`` scores in
Python with the model's weights (real time, one identity against its blocked candidates); a
scale-out engine (Splink on DuckDB or Spark) implements the same interface for bulk work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from enrs.identity.matching.compare import LEVELS, PairScore, Traits
from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.probe import Probe, Stored, traits_of_row

__all__ = ["EmbeddedMatcher", "Matcher", "PairScore", "ReloadingMatcher", "matcher_for"]

log = logging.getLogger(__name__)


class Matcher(Protocol):
    @property
    def model(self) -> MatchModel: ...

    def score(self, a: Traits, b: Traits) -> PairScore: ...

    def score_rows(self, a: Traits, rows: Sequence[Stored]) -> list[PairScore]: ...


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
        self._plan = [(name, LEVELS[name], weights) for name, weights in self._weights.items()]
        self._requires = list(model.auto_link_requires.items())
        self._probe_ok = set(self._weights) == set(LEVELS) and all(
            "swapped" in self._weights[n] and "exact" in self._weights[n] for n in ("name", "given")
        )

    def _direct(self, a: Traits, b: Traits) -> PairScore:
        levels: dict[str, str] = {}
        weight = 0.0
        for name, level_of, weights in self._plan:
            label = levels[name] = level_of(a, b)
            weight += weights[label]
        allowed = all(levels.get(name) in labels for name, labels in self._requires)
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
            allowed = all(levels.get(n) in labels for n, labels in self._requires)
            return PairScore(weight, levels, allowed)
        return direct

    def score_rows(self, a: Traits, rows: Sequence[Stored]) -> list[PairScore]:
        """``a`` scored against each stored identity of ``rows``: what :meth:`score` gives,
        through a :class:`~enrs.identity.matching.probe.Probe` when the model has every
        comparison the probe knows."""
        if not rows:
            return []
        if self._probe_ok:
            probe = Probe(a, self._weights, self.model.auto_link_requires)
            return [probe.score(row) for row in rows]
        return [self.score(a, traits_of_row(row)) for row in rows]


class ReloadingMatcher:
    """An ``EmbeddedMatcher`` over a model file that follows the file: when its modification
    time changes (looked at, at most every ``check_every`` seconds, when the model is read —
    deciders read ``model`` before scoring), the new version is loaded; a file that does not
    load is logged and the model in use kept. How ``ENRS_IDENTITY_MODEL`` is reloaded without
    restarting ``enrs serve``."""

    def __init__(
        self,
        path: Path,
        *,
        check_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.check_every, self._clock = path, check_every, clock
        self._stamp = self._mtime()
        self._inner = EmbeddedMatcher(MatchModel.load(path))
        self._next_check = clock() + check_every

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def refresh(self) -> bool:
        """Reload now if the file changed; ``True`` when a new model is in use."""
        self._next_check = self._clock() + self.check_every
        stamp = self._mtime()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            inner = EmbeddedMatcher(MatchModel.load(self.path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "matching model %s not reloaded, keeping %s: %s",
                self.path,
                self._inner.model.version,
                exc,
            )
            return False
        log.info(
            "matching model %s reloaded: %s -> %s",
            self.path,
            self._inner.model.version,
            inner.model.version,
        )
        self._inner = inner
        return True

    @property
    def model(self) -> MatchModel:
        if self._clock() >= self._next_check:
            self.refresh()
        return self._inner.model

    def score(self, a: Traits, b: Traits) -> PairScore:
        return self._inner.score(a, b)

    def score_rows(self, a: Traits, rows: Sequence[Stored]) -> list[PairScore]:
        return self._inner.score_rows(a, rows)


def matcher_for(path: Path | None) -> Matcher:
    """The built-in model, or the file ``path`` followed by a ``ReloadingMatcher``."""
    if path is None:
        return EmbeddedMatcher(MatchModel.load())
    return ReloadingMatcher(path)
