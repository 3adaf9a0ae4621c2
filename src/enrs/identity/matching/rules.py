"""The small language the comparisons are written in (``definition.py``), and its two
renderings: Python source (the real-time scorer, ``scorer.py``) and DuckDB SQL (Splink's levels
and the registry frame's columns, ``sql_levels.py``).

An expression is a tree of :class:`Call` nodes over literals and features. A *feature* is a
value of one identity: a :class:`Column` of the registry, or a :class:`Derived` value computed
from other features of the same identity. A level's condition reads the features of both sides
of a pair: ``birth_name.l`` and ``birth_name.r`` (:class:`Ref`).

Values, the same in both renderings:

- text is never missing: a missing text column is ``''`` (Python reads ``None`` as ``''``, the
  frame coalesces), so "unknown" is ``eq(x, '')``;
- a date column may be NULL / ``None``, and so is every feature derived from it. A level may
  read such a feature only after a null level of its comparison tested the column on both
  sides (``either_null``): the two languages' NULLs differ, the levels never meet one
  (checked by :class:`Comparison`);
- lists are Python lists and DuckDB ``VARCHAR[]``; sets (:func:`subset_either`) are lists in SQL.

Each operation is one :class:`Op`: a Python template and a SQL template, ``{0}``, ``{1}``… the
rendered arguments. Adding an operation (a phonetic key, say) is one more ``Op`` with its two
templates; the renderings and their agreement test cover it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from enrs.identity.matching import first_names

Side = Literal["l", "r"]
Value = str | int | float | None


class Expr:
    """A node of an expression. ``&``, ``|`` and ``~`` build AND, OR and NOT."""

    def __and__(self, other: Expr) -> Expr:
        return _flat(AND, self, other)

    def __or__(self, other: Expr) -> Expr:
        return _flat(OR, self, other)

    def __invert__(self) -> Expr:
        return Call(NOT, (self,))


@dataclass(frozen=True, eq=False)
class Op:
    """An operation: ``py`` and ``sql`` templates. ``ordered``: in the Python template, the
    first occurrence of each argument is evaluated before its later ones (so a compound
    argument used twice can be computed once, at its first occurrence)."""

    name: str
    py: str
    sql: str
    ordered: bool = True


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    value: Value | tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Call(Expr):
    op: Op
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class Feature(Expr):
    """A value of one identity. Inside a feature's own expression, a feature stands for the
    same identity's value; in a level's condition, ``.l`` and ``.r`` name a side."""

    name: str

    @property
    def nullable(self) -> bool:
        raise NotImplementedError

    def on(self, side: Side) -> Ref:
        return Ref(self, side)

    @property
    def l(self) -> Ref:  # noqa: E743 - the left side of a pair, as Splink's ``_l``
        return Ref(self, "l")

    @property
    def r(self) -> Ref:
        return Ref(self, "r")


@dataclass(frozen=True, eq=False)
class Column(Feature):
    """A normalised column of the registry. ``row``: its attribute on a stored row
    (``repository.Candidate``, the name ``SourceIdentity`` gives it); ``kind``: ``text`` (a
    string, ``''`` when missing) or ``date`` (NULL when missing)."""

    row: str = ""
    kind: Literal["text", "date"] = "text"

    @property
    def text(self) -> bool:
        return self.kind == "text"

    @property
    def nullable(self) -> bool:
        return not self.text


@dataclass(frozen=True, eq=False)
class Derived(Feature):
    """A feature computed from others of the same identity. ``frame``: a column of the
    registry frame (blocking rules and Splink read it by name); otherwise its SQL is written
    into each level that reads it."""

    expr: Expr = field(default_factory=lambda: Lit(None))
    frame: bool = False

    @property
    def nullable(self) -> bool:
        return any(f.nullable for f in direct_features(self.expr))


@dataclass(frozen=True, eq=False)
class Ref(Expr):
    feature: Feature
    side: Side


# -- operations -------------------------------------------------------------------------------

AND = Op("and", "", "")
OR = Op("or", "", "")
NOT = Op("not", "(not {0})", "(NOT {0})")
EQ = Op("eq", "({0} == {1})", "({0} = {1})")
NE = Op("ne", "({0} != {1})", "({0} <> {1})")
LT = Op("lt", "({0} < {1})", "({0} < {1})")
LE = Op("le", "({0} <= {1})", "({0} <= {1})")
GT = Op("gt", "({0} > {1})", "({0} > {1})")
IN = Op("in", "({0} in {1})", "({0} IN {1})")
IS_NULL = Op("is_null", "({0} is None)", "({0} IS NULL)")
WHEN = Op("when", "({1} if {0} else {2})", "CASE WHEN {0} THEN {1} ELSE {2} END", ordered=False)
ABS_DIFF = Op("abs_diff", "abs({0} - {1})", "abs({0} - {1})")
JARO_WINKLER_AT_LEAST = Op(
    "jaro_winkler_at_least", "(_jw({0}, {1}) >= {2})", "(jaro_winkler_similarity({0}, {1}) >= {2})"
)
ONE_EDIT = Op(
    "one_edit", "(_dl({0}, {1}, score_cutoff=1) == 1)", "(damerau_levenshtein({0}, {1}) = 1)"
)
STARTS_WITH = Op("starts_with", "{0}.startswith({1})", "starts_with({0}, {1})")
LEFT = Op("left", "{0}[:{1}]", "left({0}, {1})")
SPLIT = Op(
    "split",
    "({0}.split({1}) if {0} else [])",
    "CASE WHEN {0} = '' THEN []::VARCHAR[] ELSE string_split({0}, {1}) END",
    ordered=False,
)
WORDS = Op("words", "{0}.split()", "list_filter(string_split({0}, ' '), lambda t: t <> '')")
JOIN = Op("join", "{1}.join({0})", "array_to_string({0}, {1})")
FIRST = Op("first", "({0}[0] if {0} else '')", "coalesce(({0})[1], '')", ordered=False)
LENGTH = Op("length", "len({0})", "len({0})")
SORTED = Op("sorted", "sorted({0})", "list_sort({0})")
AS_SET = Op("as_set", "set({0})", "{0}")
SUBSET_EITHER = Op(
    "subset_either",
    "({0} <= {1} or {1} <= {0})",
    "(list_has_all({1}, {0}) OR list_has_all({0}, {1}))",
)
PREFIX_EITHER = Op(
    "prefix_either",
    "({1}[:len({0})] == {0} or {0}[:len({1})] == {1})",
    "(list_slice({1}, 1, len({0})) = {0} OR list_slice({0}, 1, len({1})) = {1})",
)
CONTAINS = Op("contains", "({1} in {0})", "list_contains({0}, {1})")
YEAR = Op("year", "{0}.year", "year({0})")
MONTH = Op("month", "{0}.month", "month({0})")
DAY = Op("day", "{0}.day", "day({0})")
YYYYMMDD = Op("yyyymmdd", "{0}.isoformat().replace('-', '')", "strftime({0}, '%Y%m%d')")
MAKE_DATE = Op("make_date", "_date({0}, {1}, {2})", "make_date({0}, {1}, {2})")
FIRST_NAME_BIRTHS = Op("first_name_births", "_births({0})", "enrs_first_name_births({0})")

# What the Python templates call, in the namespace the scorer is compiled in.
PY_HELPERS: dict[str, object] = {
    "_date": date,
    "_jw": JaroWinkler.similarity,
    "_dl": DamerauLevenshtein.distance,
    "_births": first_names.births,
}

# The functions of ours the SQL templates call, registered on each DuckDB connection that
# evaluates them (``sql_levels.register_functions``): name, Python function, its one VARCHAR
# argument, and its return type (a DuckDB type name).
SQL_FUNCTIONS: tuple[tuple[str, Callable[[str], object], str], ...] = (
    ("enrs_first_name_births", first_names.births, "BIGINT"),
)


def _lit(x: Expr | Value) -> Expr:
    return x if isinstance(x, Expr) else Lit(x)


def _flat(op: Op, a: Expr, b: Expr) -> Expr:
    args: list[Expr] = []
    for x in (a, b):
        args.extend(x.args if isinstance(x, Call) and x.op is op else (x,))
    return Call(op, tuple(args))


def _call(op: Op, *args: Expr | Value) -> Call:
    return Call(op, tuple(_lit(a) for a in args))


# -- the vocabulary of definition.py -------------------------------------------------------------


def text_column(name: str, row: str) -> Column:
    return Column(name, row=row, kind="text")


def date_column(name: str, row: str) -> Column:
    return Column(name, row=row, kind="date")


def derived(name: str, expr: Expr, *, frame: bool = False) -> Derived:
    return Derived(name, expr=expr, frame=frame)


def eq(a: Expr | Value, b: Expr | Value) -> Expr:
    return _call(EQ, a, b)


def ne(a: Expr | Value, b: Expr | Value) -> Expr:
    return _call(NE, a, b)


def lt(a: Expr | Value, b: Expr | Value) -> Expr:
    return _call(LT, a, b)


def le(a: Expr | Value, b: Expr | Value) -> Expr:
    return _call(LE, a, b)


def gt(a: Expr | Value, b: Expr | Value) -> Expr:
    return _call(GT, a, b)


def is_in(a: Expr, values: tuple[str, ...]) -> Expr:
    return Call(IN, (a, Lit(values)))


def is_null(a: Expr) -> Expr:
    return Call(IS_NULL, (a,))


def when(condition: Expr, then: Expr | Value, otherwise: Expr | Value) -> Expr:
    return _call(WHEN, condition, then, otherwise)


def abs_diff(a: Expr, b: Expr) -> Expr:
    return _call(ABS_DIFF, a, b)


def jaro_winkler_at_least(a: Expr, b: Expr, threshold: float) -> Expr:
    """Jaro-Winkler similarity (prefix scale 0.1) of two strings ≥ ``threshold``."""
    return _call(JARO_WINKLER_AT_LEAST, a, b, threshold)


def one_edit(a: Expr, b: Expr) -> Expr:
    """Damerau-Levenshtein distance exactly 1: one character wrong, missing or added, or two
    adjacent characters swapped."""
    return _call(ONE_EDIT, a, b)


def starts_with(a: Expr, prefix: str) -> Expr:
    return _call(STARTS_WITH, a, prefix)


def left(a: Expr, n: int) -> Expr:
    return _call(LEFT, a, n)


def split(a: Expr, sep: str) -> Expr:
    """The parts of ``a`` between ``sep``; an empty list for ``''``."""
    return _call(SPLIT, a, sep)


def words(a: Expr) -> Expr:
    """The words of ``a`` (split on spaces, no empty word; names are normalised: single
    spaces, where Python's ``split()`` and DuckDB's filtered ``string_split`` agree)."""
    return _call(WORDS, a)


def join(items: Expr, sep: str) -> Expr:
    return _call(JOIN, items, sep)


def first(items: Expr) -> Expr:
    """The first item of a list of strings, ``''`` when it is empty."""
    return _call(FIRST, items)


def length(items: Expr) -> Expr:
    return _call(LENGTH, items)


def sort(items: Expr) -> Expr:
    return _call(SORTED, items)


def subset_either(a: Expr, b: Expr) -> Expr:
    """The items of one list are all among the other's."""
    return Call(SUBSET_EITHER, (Call(AS_SET, (a,)), Call(AS_SET, (b,))))


def prefix_either(a: Expr, b: Expr) -> Expr:
    """One list is the start of the other."""
    return _call(PREFIX_EITHER, a, b)


def contains(items: Expr, item: Expr) -> Expr:
    return _call(CONTAINS, items, item)


def year(d: Expr) -> Expr:
    return _call(YEAR, d)


def month(d: Expr) -> Expr:
    return _call(MONTH, d)


def day(d: Expr) -> Expr:
    return _call(DAY, d)


def yyyymmdd(d: Expr) -> Expr:
    """The date as ``YYYYMMDD`` (the year on four digits)."""
    return _call(YYYYMMDD, d)


def make_date(y: Expr, m: Expr, d: Expr) -> Expr:
    return _call(MAKE_DATE, y, m, d)


def first_name_births(name: Expr) -> Expr:
    """Births in France with this (normalised) first name, INSEE 1900–2021; 0 for a name it
    does not list (``matching.first_names``)."""
    return _call(FIRST_NAME_BIRTHS, name)


def same(f: Feature) -> Expr:
    """Both sides have the same value."""
    return eq(f.l, f.r)


def present(f: Feature) -> Expr:
    """A text feature known (not ``''``) on both sides."""
    return ne(f.l, "") & ne(f.r, "")


def either_empty(f: Feature) -> Expr:
    return eq(f.l, "") | eq(f.r, "")


def either_null(f: Feature) -> Expr:
    return is_null(f.l) | is_null(f.r)


# -- comparisons ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Level:
    """A level of a comparison: ``condition`` over both sides; ``None`` for the last level
    (``ELSE``). ``null``: the level says a trait is unknown (Splink's null level: no m/u)."""

    label: str
    condition: Expr | None
    null: bool = False


def else_level() -> Level:
    return Level("else", None)


@dataclass(frozen=True, eq=False)
class Comparison:
    """Ordered levels: a pair takes the first whose condition holds; the last is ``ELSE``."""

    name: str
    description: str
    levels: tuple[Level, ...]

    def __post_init__(self) -> None:
        *tests, last = self.levels
        if last.condition is not None or any(lvl.condition is None for lvl in tests):
            raise ValueError(f"comparison {self.name!r}: ELSE must be its last level, once")
        if len({lvl.label for lvl in self.levels}) != len(self.levels):
            raise ValueError(f"comparison {self.name!r}: two levels with one label")
        guarded: set[Column] = set()
        for lvl in tests:
            assert lvl.condition is not None
            unguarded = nullable_columns(lvl.condition) - guarded
            if unguarded and not lvl.null:
                names = sorted(c.name for c in unguarded)
                raise ValueError(
                    f"{self.name}.{lvl.label} reads {names}, which may be NULL: "
                    "a null level testing them on both sides must come first"
                )
            guarded |= null_tested(lvl) if lvl.null else set()

    def guarded_after(self, index: int) -> set[Column]:
        """The columns known not NULL on both sides once the first ``index`` levels failed."""
        out: set[Column] = set()
        for lvl in self.levels[:index]:
            out |= null_tested(lvl)
        return out


def null_tested(level: Level) -> set[Column]:
    """Columns a null level tests with ``IS NULL`` on both sides (``either_null``)."""
    if not level.null or level.condition is None:
        return set()
    cond = level.condition
    terms = cond.args if isinstance(cond, Call) and cond.op is OR else (cond,)
    sides: dict[Column, set[str]] = {}
    for t in terms:
        if isinstance(t, Call) and t.op is IS_NULL and isinstance(t.args[0], Ref):
            ref = t.args[0]
            if isinstance(ref.feature, Column):
                sides.setdefault(ref.feature, set()).add(ref.side)
    return {c for c, s in sides.items() if s == {"l", "r"}}


# -- walking ----------------------------------------------------------------------------------


def walk(e: Expr) -> Iterator[Expr]:
    yield e
    if isinstance(e, Call):
        for a in e.args:
            yield from walk(a)


def direct_features(e: Expr) -> set[Feature]:
    """Features a feature's expression reads (side-less references)."""
    return {x for x in walk(e) if isinstance(x, Feature)}


def refs(e: Expr) -> set[tuple[Feature, Side]]:
    out: set[tuple[Feature, Side]] = set()
    for x in walk(e):
        if isinstance(x, Ref):
            out.add((x.feature, x.side))
        elif isinstance(x, Feature):
            raise ValueError(f"feature {x.name!r} without a side in a condition (use .l or .r)")
    return out


def closure(features: set[Feature]) -> list[Feature]:
    """``features`` and every feature they are derived from, each after what it reads."""
    order: list[Feature] = []

    def visit(f: Feature) -> None:
        if f in order:
            return
        if isinstance(f, Derived):
            for dep in sorted(direct_features(f.expr), key=lambda d: d.name):
                visit(dep)
        order.append(f)

    for f in sorted(features, key=lambda f: f.name):
        visit(f)
    return order


def roots(f: Feature) -> set[Column]:
    """The nullable columns ``f`` is computed from."""
    return {c for c in closure({f}) if isinstance(c, Column) and c.nullable}


def nullable_columns(e: Expr) -> set[Column]:
    out: set[Column] = set()
    for feature, _ in refs(e):
        out |= roots(feature)
    return out


# -- rendering --------------------------------------------------------------------------------


def _sql_literal(v: Value | tuple[str, ...]) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, tuple):
        return "(" + ", ".join(_sql_literal(x) for x in v) + ")"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def render_sql(e: Expr, column: Callable[[Feature, Side | None], str], side: Side | None) -> str:
    """``e`` in DuckDB SQL. ``column(feature, side)`` names a feature's column, or returns its
    expression rendered; ``side`` is the side of side-less features (inside a feature)."""
    if isinstance(e, Lit):
        return _sql_literal(e.value)
    if isinstance(e, Ref):
        return column(e.feature, e.side)
    if isinstance(e, Feature):
        return column(e, side)
    assert isinstance(e, Call)
    args = [render_sql(a, column, side) for a in e.args]
    if e.op in (AND, OR):
        return "(" + f" {e.op.name.upper()} ".join(args) + ")"
    return e.op.sql.format(*args)


def key(e: Expr) -> object:
    """A hashable key of ``e``'s structure (two equal subexpressions, one key)."""
    if isinstance(e, Lit):
        return ("lit", e.value)
    if isinstance(e, Ref):
        return ("ref", id(e.feature), e.side)
    if isinstance(e, Feature):
        return ("feature", id(e))
    assert isinstance(e, Call)
    return (e.op.name, *(key(a) for a in e.args))


class PyRenderer:
    """Renders expressions as Python source. ``var(feature, side)``: the variable holding a
    feature, unless ``inline(feature, side)`` (a derived feature read once: its expression is
    written where it is read, so computed only if it is reached). With ``hoist``, a
    subexpression that reads only that side's features (none of them nullable) is computed
    once, beforehand: it becomes a variable ``_hN`` whose source :attr:`hoisted` lists."""

    def __init__(
        self,
        var: Callable[[Feature, Side], str],
        hoist: Side | None = None,
        inline: Callable[[Feature, Side], bool] = lambda f, s: False,
    ) -> None:
        self.var, self.hoist, self.inline = var, hoist, inline
        self.hoisted: list[tuple[str, str]] = []
        self._hoisted: dict[object, str] = {}
        self._temps = 0

    def render(self, e: Expr, side: Side | None = None) -> str:
        """``e``, a condition (``side`` None: hoisting applies) or a feature's expression
        rendered for ``side``."""
        return self._render(e, side, self.hoist is not None and side is None)[0]

    def _one_sided(self, e: Expr) -> bool:
        seen = refs(e)
        return bool(seen) and all(s == self.hoist and not f.nullable for f, s in seen)

    def _render(self, e: Expr, side: Side | None, hoisting: bool) -> tuple[str, bool]:
        """Source of ``e`` and whether it is atomic (a name or a literal)."""
        if isinstance(e, Lit):
            return repr(e.value), True
        if isinstance(e, Feature):
            if side is None:
                raise ValueError(f"feature {e.name!r} without a side")
            e = Ref(e, side)
        if isinstance(e, Ref):
            f = e.feature
            if isinstance(f, Derived) and self.inline(f, e.side):
                return self._render(f.expr, e.side, False)[0], False
            return self.var(f, e.side), True
        assert isinstance(e, Call)
        if hoisting and self._one_sided(e):
            k = key(e)
            if k not in self._hoisted:
                name = self._hoisted[k] = f"_h{len(self._hoisted)}"
                self.hoisted.append((name, self._render(e, side, False)[0]))
            return self._hoisted[k], True
        args = [self._render(a, side, hoisting) for a in e.args]
        if e.op in (AND, OR):
            return "(" + f" {e.op.name} ".join(t for t, _ in args) + ")", False
        return self._apply(e.op, args), False

    def _apply(self, op: Op, args: list[tuple[str, bool]]) -> str:
        """``op``'s template applied; a compound argument the template reads twice is
        computed once into a temporary: at its first occurrence (``:=``) when the template is
        ``ordered``, else before the template."""
        template, before = op.py, []
        for i, (text, atomic) in enumerate(args):
            slot = "{" + str(i) + "}"
            if template.count(slot) > 1 and not atomic:
                self._temps += 1
                name = f"_t{self._temps}"
                head, tail = template.split(slot, 1)
                if op.ordered:
                    template = f"{head}({name} := {slot}){tail.replace(slot, name)}"
                else:
                    before.append(f"({name} := {text})")
                    template = template.replace(slot, name)
        applied = template.format(*(t for t, _ in args))
        return f"({', '.join(before)}, {applied})[-1]" if before else applied
