"""The comparison levels of ``compare.py`` written as SQL (DuckDB dialect), so that Splink can
train the model and scan the whole registry with exactly the levels real-time matching uses.

Both sides read one row per identity of the table built by ``identity.registry_frame``:
normalised names (empty string, never NULL), ``given_names`` and ``given_tokens`` as lists,
``birth_date`` (NULL when unknown) with ``birth_ymd`` and ``birth_date_swapped`` precomputed,
``birth_department``. Splink tries a comparison's levels in order and takes the first that
holds; the order below is the order of the tests in ``compare.py`` and
``engine.EmbeddedMatcher.score`` (the family/given swap is a level of both names here, as the
engine relabels both when it applies). ``tests/identity/test_sql_levels.py`` checks, pair by
pair, that SQL and Python give the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from enrs.identity.matching.compare import TYPO_YEARS_APART


@dataclass(frozen=True)
class SqlLevel:
    label: str
    condition: str  # "ELSE" for the last level
    is_null: bool = False


_NAMES = "birth_name_l <> '' AND birth_name_r <> ''"
_GIVENS = "first_given_l <> '' AND first_given_r <> ''"
_SWAP = f"{_NAMES} AND {_GIVENS} AND first_given_l = birth_name_r AND birth_name_l = first_given_r"
_TOKENS_L = "string_split(birth_name_l, ' ')"
_TOKENS_R = "string_split(birth_name_r, ' ')"
_FIRST_L = "string_split(first_given_l, ' ')"
_FIRST_R = "string_split(first_given_r, ' ')"


def _prefix(a: str, b: str) -> str:
    """One list is the start of the other."""
    return f"(list_slice({b}, 1, len({a})) = {a} OR list_slice({a}, 1, len({b})) = {b})"


_Y_L, _Y_R = "year(birth_date_l)", "year(birth_date_r)"
_M_L, _M_R = "month(birth_date_l)", "month(birth_date_r)"
_D_L, _D_R = "day(birth_date_l)", "day(birth_date_r)"

SQL_LEVELS: dict[str, tuple[SqlLevel, ...]] = {
    "name": (
        SqlLevel("exact", f"{_NAMES} AND birth_name_l = birth_name_r"),
        SqlLevel("swapped", _SWAP),
        SqlLevel(
            "used_name",
            f"{_NAMES} AND (birth_name_l = used_name_r OR used_name_l = birth_name_r"
            " OR (used_name_l <> '' AND used_name_l = used_name_r))",
        ),
        SqlLevel(
            "jaro_winkler",
            f"{_NAMES} AND (jaro_winkler_similarity(birth_name_l, birth_name_r) >= 0.92"
            " OR damerau_levenshtein(birth_name_l, birth_name_r) = 1)",
        ),
        SqlLevel(
            "token",
            f"{_NAMES} AND (list_has_all({_TOKENS_L}, {_TOKENS_R})"
            f" OR list_has_all({_TOKENS_R}, {_TOKENS_L}))",
        ),
        SqlLevel("else", "ELSE"),
    ),
    "given": (
        SqlLevel("swapped", f"{_SWAP} AND birth_name_l <> birth_name_r"),
        SqlLevel("exact", f"{_GIVENS} AND first_given_l = first_given_r"),
        SqlLevel(
            "in_list",
            f"{_GIVENS} AND ({_prefix('given_tokens_l', 'given_tokens_r')}"
            " OR (len(given_tokens_l) > 1"
            " AND list_sort(given_tokens_l) = list_sort(given_tokens_r))"
            f" OR {_prefix(_FIRST_L, _FIRST_R)})",
        ),
        SqlLevel(
            "reordered",
            f"{_GIVENS} AND (list_contains(given_names_r, first_given_l)"
            " OR list_contains(given_names_l, first_given_r))",
        ),
        SqlLevel(
            "jaro_winkler",
            f"{_GIVENS} AND jaro_winkler_similarity(first_given_l, first_given_r) >= 0.90",
        ),
        SqlLevel("else", "ELSE"),
    ),
    "birth_date": (
        SqlLevel("null", "birth_date_l IS NULL OR birth_date_r IS NULL", is_null=True),
        SqlLevel("exact", "birth_date_l = birth_date_r"),
        SqlLevel("day_month_swapped", f"{_Y_L} = {_Y_R} AND {_M_L} = {_D_R} AND {_D_L} = {_M_R}"),
        SqlLevel(
            "jan_first",
            f"{_Y_L} = {_Y_R} AND (({_M_L} = 1 AND {_D_L} = 1) OR ({_M_R} = 1 AND {_D_R} = 1))",
        ),
        SqlLevel(
            "one_digit",
            f"(damerau_levenshtein(birth_ymd_l, birth_ymd_r) = 1"
            f" AND abs({_Y_L} - {_Y_R}) < {TYPO_YEARS_APART})"
            f" OR (abs({_Y_L} - {_Y_R}) = 1 AND {_M_L} = {_M_R} AND {_D_L} = {_D_R})",
        ),
        SqlLevel("else", "ELSE"),
    ),
    "sex": (
        SqlLevel("null", "sex_l NOT IN ('M', 'F') OR sex_r NOT IN ('M', 'F')", is_null=True),
        SqlLevel("exact", "sex_l = sex_r"),
        SqlLevel("else", "ELSE"),
    ),
    "birth_place": (
        SqlLevel("null", "birth_place_l = '' OR birth_place_r = ''", is_null=True),
        SqlLevel("exact", "birth_place_l = birth_place_r"),
        SqlLevel("same_department", "birth_department_l = birth_department_r"),
        SqlLevel("else", "ELSE"),
    ),
    "postal_code": (
        SqlLevel("null", "postal_code_l = '' OR postal_code_r = ''", is_null=True),
        SqlLevel("exact", "postal_code_l = postal_code_r"),
        SqlLevel("else", "ELSE"),
    ),
}

# Candidate pairs for a registry-wide scan: the keys real-time blocking uses
# (``identity.repository.candidates``), written as Splink blocking rules; plus the same INS.
BLOCKING_RULES: tuple[str, ...] = (
    "l.birth_date = r.birth_date",
    "l.birth_date = r.birth_date_swapped",
    "l.birth_name = r.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.used_name <> '' AND l.used_name = r.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "r.used_name <> '' AND r.used_name = l.birth_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.used_name <> '' AND l.used_name = r.used_name AND abs(l.birth_year - r.birth_year) <= 1",
    "l.birth_name <> '' AND l.birth_name = r.birth_name AND l.first_given = r.first_given",
    "l.birth_name <> '' AND l.first_given = r.birth_name AND l.birth_name = r.first_given",
    "l.ins <> '' AND l.ins = r.ins",
)
