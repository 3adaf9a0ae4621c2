"""Comparison levels of the matching model, computed on normalised traits.

Each function returns the label of the first level that holds, in the order the model lists
them; the labels are the keys of the m/u table in the model JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler


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

    def swapped(self) -> Traits:
        """Family and given names swapped (a frequent entry error)."""
        return replace(self, birth_name=self.first_given, given_names=(self.birth_name,))


@dataclass(frozen=True)
class PairScore:
    """Sum of the levels' match weights; ``levels`` says which level each comparison took."""

    weight: float
    levels: dict[str, str]
    auto_link_allowed: bool

    @property
    def probability(self) -> float:
        return float(1.0 / (1.0 + 2.0 ** (-self.weight)))


def _jw(a: str, b: str) -> float:
    return float(JaroWinkler.similarity(a, b))


def close_spelling(a: str, b: str) -> bool:
    """Jaro-Winkler ≥ 0.92, or one letter typed wrong, missing, added or two swapped
    (Damerau-Levenshtein distance 1: ``PERON`` / ``PEXON``, ``WEBER`` / ``WBER``, which
    Jaro-Winkler scores below 0.92 on short names)."""
    return _jw(a, b) >= 0.92 or DamerauLevenshtein.distance(a, b, score_cutoff=1) == 1


def name_level(a: Traits, b: Traits) -> str:
    """``jaro_winkler``: a close spelling (:func:`close_spelling`) of the birth name. Twins,
    siblings and homonyms share the birth name, so a typo in it does not make them look alike
    (a typo in the first name does: see :func:`given_level`)."""
    if not a.birth_name or not b.birth_name:
        return "else"
    if a.birth_name == b.birth_name:
        return "exact"
    used = {a.used_name, b.used_name} - {""}
    if (
        a.birth_name == b.used_name
        or a.used_name == b.birth_name
        or (a.used_name and a.used_name == b.used_name)
    ):
        return "used_name" if used else "else"
    if close_spelling(a.birth_name, b.birth_name):
        return "jaro_winkler"
    ta, tb = set(a.birth_name.split()), set(b.birth_name.split())
    if ta and tb and (ta <= tb or tb <= ta):
        return "token"
    return "else"


def given_level(a: Traits, b: Traits) -> str:
    """``exact``: same first birth first name; ``in_list``: one list of first names is the
    other truncated (``JEAN`` / ``JEAN PIERRE``, ``MARIE`` / ``MARIE ROSE``) or the same list in
    another order; ``reordered``:
    the first name of one is another first name of the other (``PASCAL`` / ``HENRI ANDRE
    PASCAL``) — twins are named like that, so it is never enough for an automatic link."""
    fa, fb = a.first_given, b.first_given
    if not fa or not fb:
        return "else"
    if fa == fb:
        return "exact"
    ta = " ".join(a.given_names).split()
    tb = " ".join(b.given_names).split()
    short, long = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    if long[: len(short)] == short or (len(ta) > 1 and sorted(ta) == sorted(tb)):
        return "in_list"
    fa_t, fb_t = fa.split(), fb.split()
    short_t, long_t = (fa_t, fb_t) if len(fa_t) <= len(fb_t) else (fb_t, fa_t)
    if long_t[: len(short_t)] == short_t:  # JEAN for JEAN-PIERRE
        return "in_list"
    if fa in b.given_names or fb in a.given_names:
        return "reordered"
    if _jw(fa, fb) >= 0.90:
        return "jaro_winkler"
    return "else"


# A birth date typed with one digit wrong or two digits swapped counts as a typo only when
# the years are less than this apart: a parent and a child of the same first name born on the
# same day of the year (1958 and 1985, or 1988) are further apart, and must not be linked.
TYPO_YEARS_APART = 15


def date_typo(ymd_a: str, ymd_b: str, years_apart: int) -> bool:
    """Two dates as ``YYYYMMDD``: one digit wrong or two adjacent digits swapped
    (Damerau-Levenshtein 1: ``19870412`` / ``19780412``), less than
    :data:`TYPO_YEARS_APART` years apart."""
    return (
        years_apart < TYPO_YEARS_APART
        and DamerauLevenshtein.distance(ymd_a, ymd_b, score_cutoff=1) == 1
    )


def birth_date_level(a: Traits, b: Traits) -> str:
    """``one_digit``: :func:`date_typo`, or the year off by one with the same day and month."""
    da, db = a.birth_date, b.birth_date
    if da is None or db is None:
        return "null"
    if da == db:
        return "exact"
    if da.year == db.year and da.month == db.day and da.day == db.month:
        return "day_month_swapped"
    if da.year == db.year and ((da.month, da.day) == (1, 1) or (db.month, db.day) == (1, 1)):
        return "jan_first"
    apart = abs(da.year - db.year)
    if date_typo(da.strftime("%Y%m%d"), db.strftime("%Y%m%d"), apart) or (
        apart == 1 and (da.month, da.day) == (db.month, db.day)
    ):
        return "one_digit"
    return "else"


def sex_level(a: Traits, b: Traits) -> str:
    if a.sex not in ("M", "F") or b.sex not in ("M", "F"):
        return "null"
    return "exact" if a.sex == b.sex else "else"


def _department(code: str) -> str:
    return code[:3] if code.startswith("97") else code[:2]


def birth_place_level(a: Traits, b: Traits) -> str:
    if not a.birth_place or not b.birth_place:
        return "null"
    if a.birth_place == b.birth_place:
        return "exact"
    if _department(a.birth_place) == _department(b.birth_place):
        return "same_department"
    return "else"


def postal_code_level(a: Traits, b: Traits) -> str:
    if not a.postal_code or not b.postal_code:
        return "null"
    return "exact" if a.postal_code == b.postal_code else "else"


LEVELS = {
    "name": name_level,
    "given": given_level,
    "birth_date": birth_date_level,
    "sex": sex_level,
    "birth_place": birth_place_level,
    "postal_code": postal_code_level,
}
