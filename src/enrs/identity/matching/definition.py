"""The comparisons of the matching model, each level's rule written once.

A comparison lists its levels in order; a pair of identities takes the first level whose
condition holds, and its label is a key of the comparison's m/u table in the model JSON. The
conditions read the features of both identities (``birth_name.l``, ``birth_name.r``), which are
the normalised columns of the registry and values derived from them, each defined once below.

From this one definition are rendered (``rules.py``): the Python scorer real-time matching
runs (``scorer.py``: the probed identity's features computed once, each stored row's as its
levels need them), and the DuckDB SQL of the bulk jobs (``sql_levels.py``: Splink's levels,
and the registry frame's columns). ``tests/identity/test_sql_levels.py`` checks, pair by pair,
that both renderings give the same labels.

Adding a comparison: its features (a new registry column needs ``repository.Candidate`` to
read it), a :class:`~rules.Comparison` in :data:`COMPARISONS`, and its levels' m and u in the
model JSON.
"""

from __future__ import annotations

from enrs.identity.matching.rules import (
    Comparison,
    Expr,
    Feature,
    Level,
    Side,
    abs_diff,
    contains,
    date_column,
    day,
    derived,
    either_empty,
    either_null,
    else_level,
    eq,
    first,
    first_name_births,
    gt,
    is_in,
    jaro_winkler_at_least,
    join,
    le,
    left,
    length,
    lt,
    make_date,
    month,
    ne,
    one_edit,
    prefix_either,
    present,
    same,
    sort,
    split,
    starts_with,
    subset_either,
    text_column,
    when,
    words,
    year,
    yyyymmdd,
)

# -- the registry's columns, normalised (``identity.traits.normalize_name``) ---------------------
# ``row``: the attribute of a stored row (``repository.Candidate``, ``scorer.Stored``).
birth_name = text_column("birth_name", row="n_birth_name")
used_name = text_column("used_name", row="n_used_name")
given = text_column("given", row="n_given_names")  # the birth first names, joined with "|"
birth_date = date_column("birth_date", row="birth_date")
sex = text_column("sex", row="sex")  # M, F, or anything else for unknown
birth_place = text_column("birth_place", row="birth_place")  # INSEE COG code
postal_code = text_column("postal_code", row="postal_code")
# French phonetic keys (FONEM, ``identity.traits.phonetic``) of the birth name and of the first
# birth first name, and the address, city, phone and e-mail as compared (``identity.traits``).
birth_name_phonetic = text_column("birth_name_phonetic", row="p_birth_name")
given_phonetic = text_column("given_phonetic", row="p_first_given")
address = text_column("address", row="n_address")
city = text_column("city", row="n_city")
phone = text_column("phone", row="n_phone")
email = text_column("email", row="n_email")
birth_order = text_column("birth_order", row="birth_order")  # of a multiple birth

COLUMNS = (
    birth_name,
    used_name,
    given,
    birth_date,
    sex,
    birth_place,
    postal_code,
    birth_name_phonetic,
    given_phonetic,
    address,
    city,
    phone,
    email,
    birth_order,
)

# -- derived, per identity -----------------------------------------------------------------------
# ``frame=True``: a column of the registry frame (``registry_frame.py``), which blocking rules
# and Splink read by name.
given_names = derived("given_names", split(given, "|"), frame=True)
first_given = derived("first_given", first(given_names), frame=True)
given_tokens = derived("given_tokens", words(join(given_names, " ")), frame=True)
first_given_words = derived("first_given_words", words(first_given))
# How many were born in France with that first name (INSEE, 1900–2021): 0 if not a first name
first_given_births = derived("first_given_births", first_name_births(first_given), frame=True)
birth_name_words = derived("birth_name_words", words(birth_name))
birth_ymd = derived("birth_ymd", yyyymmdd(birth_date), frame=True)
birth_year = derived("birth_year", year(birth_date), frame=True)
birth_month = derived("birth_month", month(birth_date))
birth_day = derived("birth_day", day(birth_date))
# Overseas departments have three digits (971 Guadeloupe … 976 Mayotte).
birth_department = derived(
    "birth_department",
    when(starts_with(birth_place, "97"), left(birth_place, 3), left(birth_place, 2)),
    frame=True,
)
# The birth date with day and month swapped, when that is a date (a blocking key).
birth_date_swapped = derived(
    "birth_date_swapped",
    when(
        le(birth_day, 12) & ne(birth_day, birth_month),
        make_date(birth_year, birth_day, birth_month),
        None,
    ),
    frame=True,
)

FEATURES: tuple[Feature, ...] = (
    *COLUMNS,
    given_names,
    first_given,
    given_tokens,
    first_given_words,
    first_given_births,
    birth_name_words,
    birth_ymd,
    birth_year,
    birth_month,
    birth_day,
    birth_department,
    birth_date_swapped,
)

# -- the levels ------------------------------------------------------------------------------------

NAMES = present(birth_name)
GIVENS = present(first_given)

# Family and given names swapped (a frequent entry error): the first name of one is the birth
# name of the other and the other way round. Both comparisons take the level "swapped" (the
# given one only when the birth names differ: identical names are "exact").
SWAPPED = NAMES & GIVENS & eq(first_given.l, birth_name.r) & eq(birth_name.l, first_given.r)


def close(a: Expr, b: Expr) -> Expr:
    """Jaro-Winkler ≥ 0.92, or one letter typed wrong, missing, added or two swapped
    (Damerau-Levenshtein distance 1: ``PERON`` / ``PEXON``, ``WEBER`` / ``WBER``, which
    Jaro-Winkler scores below 0.92 on short names)."""
    return jaro_winkler_at_least(a, b, 0.92) | one_edit(a, b)


def close_spelling(f: Feature) -> Expr:
    """:func:`close` on both sides of ``f``."""
    return close(f.l, f.r)


# Swapped, and one of the two names with a typo (``DELACY ERIN`` / ``ERIN DELCAY``). (The
# cheap equality first in each term: most pairs stop there.)
SWAPPED_CLOSE = (
    NAMES
    & GIVENS
    & (
        (eq(first_given.l, birth_name.r) & close(birth_name.l, first_given.r))
        | (eq(birth_name.l, first_given.r) & close(first_given.l, birth_name.r))
    )
)


NAME = Comparison(
    "name",
    "Birth name (used names and family/given swap tolerated)",
    (
        Level("exact", NAMES & same(birth_name)),
        Level("swapped", SWAPPED),
        Level("swapped_close", SWAPPED_CLOSE),
        # the birth name of one is the used name of the other, or both use the same name
        Level(
            "used_name",
            NAMES
            & (
                eq(birth_name.l, used_name.r)
                | eq(used_name.l, birth_name.r)
                | (ne(used_name.l, "") & same(used_name))
            ),
        ),
        # a close spelling of the birth name (only there: twins, siblings and homonyms share
        # the birth name, so a typo in it does not make them look alike; a typo in the first
        # name does, see GIVEN's "jaro_winkler")
        Level("jaro_winkler", NAMES & close_spelling(birth_name)),
        # the words of one birth name are among the other's (``MARTIN`` / ``MARTIN DUPONT``)
        Level("token", NAMES & subset_either(birth_name_words.l, birth_name_words.r)),
        # the same French phonetic key (``GAUTHIER`` / ``GOTIE``): evidence for the cell only
        Level("phonetic", NAMES & present(birth_name_phonetic) & same(birth_name_phonetic)),
        else_level(),
    ),
)

# A first name given to fewer than this many people born in France since 1900 (INSEE) is
# rare: sharing it is stronger evidence (MARIE: 2.26 million, MATHYS: 27 826, MADDALEN: 36).
RARE_FIRST_NAME = 2_000
# A first name that INSEE does not list, one letter off one it lists at least this often, is a
# typo of it (``INCOLAS`` / ``NICOLAS``); two first names it lists are two first names, however
# close (``MATHIS`` / ``MATHYS``: twins are named like that).
KNOWN_FIRST_NAME = 100


def _typo_of(side: Side, other: Side) -> Expr:
    return eq(first_given_births.on(side), 0) & gt(first_given_births.on(other), KNOWN_FIRST_NAME)


GIVEN = Comparison(
    "given",
    "First birth first name against the other's list",
    (
        Level("swapped", SWAPPED & ne(birth_name.l, birth_name.r)),
        Level("swapped_close", SWAPPED_CLOSE & ne(birth_name.l, birth_name.r)),
        # same first birth first name, a rare one (but not one INSEE does not know: it may be
        # common where the list does not look, Mayotte's names, a foreign country's)
        Level(
            "exact_rare",
            GIVENS
            & same(first_given)
            & gt(first_given_births.l, 0)
            & lt(first_given_births.l, RARE_FIRST_NAME),
        ),
        # same first birth first name
        Level("exact", GIVENS & same(first_given)),
        # one list of first names is the other truncated (``JEAN`` / ``JEAN PIERRE``,
        # ``MARIE`` / ``MARIE ROSE``), or the same list in another order; or one first name
        # is the start of the other (``JEAN`` for ``JEAN PIERRE``)
        Level(
            "in_list",
            GIVENS
            & (
                prefix_either(given_tokens.l, given_tokens.r)
                | (gt(length(given_tokens.l), 1) & eq(sort(given_tokens.l), sort(given_tokens.r)))
                | prefix_either(first_given_words.l, first_given_words.r)
            ),
        ),
        # the first name of one is another first name of the other (``PASCAL`` / ``HENRI
        # ANDRE PASCAL``): twins are named like that, so it is never enough for an automatic
        # link
        Level(
            "reordered",
            GIVENS
            & (contains(given_names.r, first_given.l) | contains(given_names.l, first_given.r)),
        ),
        # a typo: one letter off a listed first name, and not a first name itself
        Level(
            "typo",
            GIVENS & (_typo_of("l", "r") | _typo_of("r", "l")) & close_spelling(first_given),
        ),
        Level("jaro_winkler", GIVENS & jaro_winkler_at_least(first_given.l, first_given.r, 0.90)),
        Level("phonetic", GIVENS & present(given_phonetic) & same(given_phonetic)),
        else_level(),
    ),
)

# A birth date typed with one digit wrong or two digits swapped counts as a typo only when the
# years are less than this apart: a parent and a child of the same first name born on the same
# day of the year (1958 and 1985, or 1988) are further apart, and must not be linked.
TYPO_YEARS_APART = 15

YEARS_APART = abs_diff(birth_year.l, birth_year.r)


def jan_first(side: Side) -> Expr:
    """Born on 1 January: what is entered when only the year is known."""
    return eq(birth_month.on(side), 1) & eq(birth_day.on(side), 1)


BIRTH_DATE = Comparison(
    "birth_date",
    "Birth date, tolerant of day/month swap, 1 January, one digit",
    (
        Level("null", either_null(birth_date), null=True),
        Level("exact", same(birth_date)),
        Level(
            "day_month_swapped",
            same(birth_year) & eq(birth_month.l, birth_day.r) & eq(birth_day.l, birth_month.r),
        ),
        Level("jan_first", same(birth_year) & (jan_first("l") | jan_first("r"))),
        # one digit wrong or two adjacent digits swapped (Damerau-Levenshtein 1 on
        # ``YYYYMMDD``: ``19870412`` / ``19780412``) less than TYPO_YEARS_APART years apart;
        # or the year off by one with the same day and month
        Level(
            "one_digit",
            (lt(YEARS_APART, TYPO_YEARS_APART) & one_edit(birth_ymd.l, birth_ymd.r))
            | (eq(YEARS_APART, 1) & same(birth_month) & same(birth_day)),
        ),
        # two of year, month and day the same (the day and month under TYPO_YEARS_APART years
        # apart): one part entered wrong, as a whole. Evidence for the cell only.
        Level(
            "one_part",
            (same(birth_year) & (same(birth_month) | same(birth_day)))
            | (lt(YEARS_APART, TYPO_YEARS_APART) & same(birth_month) & same(birth_day)),
        ),
        else_level(),
    ),
)

# Twins, triplets: the order of birth tells them apart, when both facilities give it.
BIRTH_ORDER = Comparison(
    "birth_order",
    "Order of birth of a multiple birth",
    (
        Level("null", either_empty(birth_order), null=True),
        Level("exact", same(birth_order)),
        else_level(),
    ),
)

KNOWN_SEX = ("M", "F")

SEX = Comparison(
    "sex",
    "Sex",
    (
        Level("null", ~is_in(sex.l, KNOWN_SEX) | ~is_in(sex.r, KNOWN_SEX), null=True),
        Level("exact", same(sex)),
        else_level(),
    ),
)

BIRTH_PLACE = Comparison(
    "birth_place",
    "Birth place (INSEE COG code)",
    (
        Level("null", either_empty(birth_place), null=True),
        Level("exact", same(birth_place)),
        Level("same_department", same(birth_department)),
        else_level(),
    ),
)

# -- evidence for the cell: complementary traits, which never make a link automatic ------------
# (the model's ``evidence_only``: their weight counts towards the review threshold, not towards
# the automatic one; people move and change phones, families share them)


def _place_unknown(side: Side) -> Expr:
    return eq(postal_code.on(side), "") & eq(city.on(side), "")


SAME_PLACE = (present(postal_code) & same(postal_code)) | (present(city) & same(city))

RESIDENCE = Comparison(
    "residence",
    "Address: the street line within the same postal code or city",
    (
        Level("null", _place_unknown("l") | _place_unknown("r"), null=True),
        Level("same_address", present(address) & same(address) & SAME_PLACE),
        Level("close_address", present(address) & SAME_PLACE & close_spelling(address)),
        Level("same_place", SAME_PLACE),
        else_level(),
    ),
)

PHONE = Comparison(
    "phone",
    "Phone number (its last nine digits)",
    (
        Level("null", either_empty(phone), null=True),
        Level("exact", same(phone)),
        Level("one_digit", one_edit(phone.l, phone.r)),
        else_level(),
    ),
)

EMAIL = Comparison(
    "email",
    "E-mail address",
    (
        Level("null", either_empty(email), null=True),
        Level("exact", same(email)),
        else_level(),
    ),
)

COMPARISONS: tuple[Comparison, ...] = (
    NAME,
    GIVEN,
    BIRTH_DATE,
    SEX,
    BIRTH_PLACE,
    BIRTH_ORDER,
    RESIDENCE,
    PHONE,
    EMAIL,
)


def comparison(name: str, comparisons: tuple[Comparison, ...] = COMPARISONS) -> Comparison:
    for comp in comparisons:
        if comp.name == name:
            return comp
    raise KeyError(f"no comparison {name!r} in the matching definition")
