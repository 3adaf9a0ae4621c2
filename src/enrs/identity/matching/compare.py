"""What matching compares and what it gives: the traits of an identity, and the score of a
pair. The comparisons themselves are in ``definition.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Traits:
    """The traits of one identity, normalised (see ``identity.traits.normalize_name``)."""

    birth_name: str
    used_name: str
    given_names: tuple[str, ...]
    birth_date: date | None
    sex: str
    birth_place: str | None
    postal_code: str | None
    ins: str | None = None

    @property
    def first_given(self) -> str:
        return self.given_names[0] if self.given_names else ""


@dataclass(frozen=True)
class PairScore:
    """Sum of the levels' match weights; ``levels`` says which level each comparison took."""

    weight: float
    levels: dict[str, str]
    auto_link_allowed: bool

    @property
    def probability(self) -> float:
        return float(1.0 / (1.0 + 2.0 ** (-self.weight)))
