"""One identity scored against many stored ones, fast: the levels of :mod:`compare` inlined,
with what depends on the probed identity alone worked out once.

Real-time matching scores each identity received against its tens of blocked candidates, read
as bare columns (``repository.Candidate``): building a ``Traits`` per candidate and calling six
level functions cost more than the comparisons themselves. :meth:`Probe.score` gives exactly
what ``EmbeddedMatcher.score(probe, traits_of(row))`` gives - the same labels, weight and
auto-link verdict (a test checks it on every pair of a generated set) - several times faster.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Protocol

from rapidfuzz.distance import JaroWinkler

from enrs.identity.matching.compare import (
    LEVELS,
    PairScore,
    Traits,
    close_spelling,
    date_typo,
)

_jw = JaroWinkler.similarity


class Stored(Protocol):
    """The normalised columns of a stored identity (``n_given_names``: joined with ``|``)."""

    @property
    def n_birth_name(self) -> str: ...
    @property
    def n_used_name(self) -> str: ...
    @property
    def n_given_names(self) -> str: ...
    @property
    def birth_date(self) -> date | None: ...
    @property
    def sex(self) -> str: ...
    @property
    def birth_place(self) -> str | None: ...
    @property
    def postal_code(self) -> str | None: ...


def traits_of_row(row: Stored) -> Traits:
    """The traits levels compare (the INS is not one of them)."""
    given = tuple(row.n_given_names.split("|")) if row.n_given_names else ()
    return Traits(
        row.n_birth_name,
        row.n_used_name,
        given,
        row.birth_date,
        row.sex,
        row.birth_place,
        row.postal_code,
    )


def _department(code: str) -> str:
    return code[:3] if code.startswith("97") else code[:2]


class Probe:
    """``a`` ready to be scored with the model's ``weights`` (comparison → level → weight,
    all of :data:`compare.LEVELS`) and auto-link ``requires`` (comparison → allowed levels)."""

    def __init__(
        self,
        a: Traits,
        weights: Mapping[str, Mapping[str, float]],
        requires: Mapping[str, frozenset[str]],
    ) -> None:
        if set(weights) != set(LEVELS):
            raise ValueError("a probe scores every comparison of compare.LEVELS")
        self.a = a
        self.w_name, self.w_given = weights["name"], weights["given"]
        self.w_date, self.w_sex = weights["birth_date"], weights["sex"]
        self.w_place, self.w_postal = weights["birth_place"], weights["postal_code"]
        self.requires = list(requires.items())
        self.swap_delta = (
            weights["name"]["swapped"]
            + weights["given"]["swapped"]
            - weights["name"]["exact"]
            - weights["given"]["exact"]
        )
        self.first = a.given_names[0] if a.given_names else ""
        self.first_tokens = self.first.split()
        self.tokens = " ".join(a.given_names).split()
        self.sorted_tokens = sorted(self.tokens)
        self.name_tokens = set(a.birth_name.split())
        self.ymd = a.birth_date.strftime("%Y%m%d") if a.birth_date else ""
        self.sex_known = a.sex in ("M", "F")
        self.department = _department(a.birth_place) if a.birth_place else ""

    def _name(self, name: str, used: str) -> str:
        a = self.a
        if not a.birth_name or not name:
            return "else"
        if a.birth_name == name:
            return "exact"
        if a.birth_name == used or a.used_name == name or (a.used_name and a.used_name == used):
            return "used_name" if (a.used_name or used) else "else"
        if close_spelling(a.birth_name, name):
            return "jaro_winkler"
        tb = set(name.split())
        ta = self.name_tokens
        if ta and tb and (ta <= tb or tb <= ta):
            return "token"
        return "else"

    def _given(self, given: tuple[str, ...]) -> str:
        fa = self.first
        fb = given[0]
        if not fa or not fb:
            return "else"
        if fa == fb:
            return "exact"
        ta, tb = self.tokens, " ".join(given).split()
        short, long = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
        if long[: len(short)] == short or (len(ta) > 1 and self.sorted_tokens == sorted(tb)):
            return "in_list"
        fa_t, fb_t = self.first_tokens, fb.split()
        short_t, long_t = (fa_t, fb_t) if len(fa_t) <= len(fb_t) else (fb_t, fa_t)
        if long_t[: len(short_t)] == short_t:
            return "in_list"
        if fa in given or fb in self.a.given_names:
            return "reordered"
        if _jw(fa, fb) >= 0.90:
            return "jaro_winkler"
        return "else"

    def _date(self, db: date | None) -> str:
        da = self.a.birth_date
        if da is None or db is None:
            return "null"
        if da == db:
            return "exact"
        if da.year == db.year:
            if da.month == db.day and da.day == db.month:
                return "day_month_swapped"
            if (da.month, da.day) == (1, 1) or (db.month, db.day) == (1, 1):
                return "jan_first"
        apart = abs(da.year - db.year)
        if date_typo(self.ymd, db.strftime("%Y%m%d"), apart) or (
            apart == 1 and (da.month, da.day) == (db.month, db.day)
        ):
            return "one_digit"
        return "else"

    def score(self, row: Stored) -> PairScore:
        """``a`` and ``row`` scored."""
        a = self.a
        name = row.n_birth_name
        given = tuple(row.n_given_names.split("|")) if row.n_given_names else ("",)
        name_l = self._name(name, row.n_used_name)
        given_l = self._given(given)
        date_l = self._date(row.birth_date)
        sex = row.sex
        sex_l = "exact" if a.sex == sex else "else"
        if not self.sex_known or sex not in ("M", "F"):
            sex_l = "null"
        place = row.birth_place
        if not a.birth_place or not place:
            place_l = "null"
        elif a.birth_place == place:
            place_l = "exact"
        else:
            place_l = "same_department" if self.department == _department(place) else "else"
        postal = row.postal_code
        if not a.postal_code or not postal:
            postal_l = "null"
        else:
            postal_l = "exact" if a.postal_code == postal else "else"
        weight = (
            self.w_name[name_l]
            + self.w_given[given_l]
            + self.w_date[date_l]
            + self.w_sex[sex_l]
            + self.w_place[place_l]
            + self.w_postal[postal_l]
        )
        # Family and given names swapped (as EmbeddedMatcher.score tries it).
        if (
            name_l != "exact"
            and self.first
            and self.first == name
            and a.birth_name
            and a.birth_name == given[0]
        ):
            name_l = given_l = "swapped"
            weight = (
                self.w_name["exact"]
                + self.w_given["exact"]
                + self.swap_delta
                + self.w_date[date_l]
                + self.w_sex[sex_l]
                + self.w_place[place_l]
                + self.w_postal[postal_l]
            )
        levels = {
            "name": name_l,
            "given": given_l,
            "birth_date": date_l,
            "sex": sex_l,
            "birth_place": place_l,
            "postal_code": postal_l,
        }
        allowed = all(levels[n] in labels for n, labels in self.requires)
        return PairScore(weight, levels, allowed)
