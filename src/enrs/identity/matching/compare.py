"""What matching compares and what it gives: the traits of an identity, and the score of a
pair. The comparisons themselves are in ``definition.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from enrs.identity.traits import phonetic


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
    # complementary traits, as compared (``identity.traits.normalize_address`` …)
    address: str = ""
    city: str = ""
    phone: str = ""
    email: str = ""
    birth_order: str = ""  # of a multiple birth: "1", "2"…

    @property
    def first_given(self) -> str:
        return self.given_names[0] if self.given_names else ""

    @property
    def birth_name_phonetic(self) -> str:
        return phonetic(self.birth_name)

    @property
    def given_phonetic(self) -> str:
        return phonetic(self.first_given)


@dataclass(frozen=True)
class PairScore:
    """Sum of the levels' match weights; ``levels`` says which level each comparison took.
    ``strict_weight``: the sum over the strict traits only (the model's comparisons but its
    ``evidence_only`` ones), which the automatic-link threshold applies to."""

    weight: float
    levels: dict[str, str]
    auto_link_allowed: bool
    strict_weight: float = float("nan")

    def __post_init__(self) -> None:
        if self.strict_weight != self.strict_weight:  # not given: every comparison is strict
            object.__setattr__(self, "strict_weight", self.weight)

    @property
    def probability(self) -> float:
        return float(1.0 / (1.0 + 2.0 ** (-self.weight)))
