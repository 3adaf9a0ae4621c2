"""The matcher seam: score a pair of identities with the model. ``EmbeddedMatcher`` scores in
Python with the model's weights (real time, one identity against its blocked candidates); a
scale-out engine (Splink on DuckDB or Spark) implements the same interface for bulk work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from enrs.identity.matching.compare import PairScore, Traits
from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.scorer import Stored, compile_scorer, row_of

__all__ = ["EmbeddedMatcher", "Matcher", "PairScore", "ReloadingMatcher", "matcher_for"]

log = logging.getLogger(__name__)


class Matcher(Protocol):
    @property
    def model(self) -> MatchModel: ...

    def score(self, a: Traits, b: Traits) -> PairScore: ...

    def score_rows(self, a: Traits, rows: Sequence[Stored]) -> list[PairScore]: ...


class EmbeddedMatcher:
    """Fellegi–Sunter scoring in process: the levels of ``definition.py`` with the model's
    weights, compiled into one Python function (``scorer.py``) when the model is loaded."""

    def __init__(self, model: MatchModel) -> None:
        self.model = model
        self._prepare = compile_scorer(model)

    def score(self, a: Traits, b: Traits) -> PairScore:
        return self._prepare(row_of(a))(row_of(b))

    def score_rows(self, a: Traits, rows: Sequence[Stored]) -> list[PairScore]:
        """``a`` scored against each stored identity of ``rows`` (what :meth:`score` gives),
        ``a``'s side of every level worked out once."""
        if not rows:
            return []
        return list(map(self._prepare(row_of(a)), rows))


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
