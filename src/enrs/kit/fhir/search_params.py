"""SQL clauses for FHIR search values, and :class:`SearchParam` definitions.

FHIR R4 search.html, "Search Parameter Types": string, token, date, reference, number and
uri matching rules, and the prefix semantics of search.html#prefix. The ``*_clause``
functions are public so that a service mapping a parameter with a callable (for instance an
``EXISTS`` over an identifier table) reuses exactly the same semantics. Clauses are built
with SQLAlchemy operators and bound parameters only; no SQL text is ever assembled.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from enrs.kit.db import Prefix
from enrs.kit.fhir.search_values import (
    DateValue,
    NumberValue,
    ParamType,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

ColumnLike = ColumnElement[Any] | QueryableAttribute[Any]
Matcher = Callable[[Any], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class Shape:
    """One value's clause, written once for every value of the same shape.

    ``key`` is what the clause's SQL depends on (a prefix, a modifier, whether the value is
    empty), ``values`` are what it binds, in order, and ``build`` writes the clause over any
    values of that shape: the values themselves (:meth:`clause`), or one bind parameter each,
    so that a search statement is built once per shape and executed with each request's
    values (:class:`enrs.kit.fhir.search.SearchStatements`). ``build`` may depend on ``key``
    and on the parameter's columns, never on ``values``; it must not write a
    :class:`enrs.kit.db.Substring` (read by value on SQLite)."""

    key: Hashable
    values: tuple[Any, ...]
    build: Callable[[Sequence[Any]], ColumnElement[bool]]

    def clause(self) -> ColumnElement[bool]:
        """The clause with this value in it."""
        return self.build(self.values)


Shaper = Callable[[Any], Shape]
NOTHING = Shape("nothing", (), lambda _: sa.false())
"""The shape of a value that matches no row (e.g. a name that folds to nothing)."""


def escape_like(text: str) -> str:
    """``text`` for a ``LIKE`` pattern with ``ESCAPE '/'`` (``%``, ``_`` and ``/`` taken
    literally), as SQLAlchemy's ``autoescape`` does to a literal; for a value bound later."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def normalize_text(text: str) -> str:
    """Case- and accent-folded form of ``text`` (``"Hélène Œ"`` -> ``"helene oe"``).

    Store it in a shadow column and declare that column as ``normalized`` on a string
    parameter to get portable accent-insensitive matching on SQLite and PostgreSQL.
    """
    text = text.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()


def as_column(column: ColumnLike) -> ColumnElement[Any]:
    """The SQL column expression behind a mapped attribute or a Core column."""
    if isinstance(column, QueryableAttribute):
        return column.expression
    return column


def _base_type(column: ColumnElement[Any]) -> TypeEngine[Any]:
    kind: TypeEngine[Any] = column.type
    while isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    return kind


def prefix_clause(column: ColumnLike, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range an index on the column serves in order
    (:class:`enrs.kit.db.Prefix`)."""
    return Prefix(as_column(column), prefix)


def string_clause(
    value: StringValue, columns: Sequence[ColumnLike], normalized: Sequence[ColumnLike] = ()
) -> ColumnElement[bool]:
    """search.html#string: starts-with (default), ``:contains`` or ``:exact``, OR over columns.

    Default and ``:contains`` compare :func:`normalize_text` forms against ``normalized``
    columns when given (case- and accent-insensitive everywhere); otherwise they use
    ``ILIKE`` semantics (Unicode case-insensitive on PostgreSQL, ASCII-only on SQLite).
    LIKE wildcards in the value are escaped.
    """
    if value.modifier == "exact" or not normalized:
        return string_shape(value, columns).clause()
    folded = normalize_text(value.text)
    norm = [as_column(c) for c in normalized]
    if value.modifier == "contains":
        return sa.or_(*(c.contains(folded, autoescape=True) for c in norm))
    return sa.or_(*(prefix_clause(c, folded) for c in norm))


def string_shape(value: StringValue, columns: Sequence[ColumnLike]) -> Shape:
    """:func:`string_clause` over columns without a normalized form, as a :class:`Shape`."""
    cols = [as_column(c) for c in columns]
    if value.modifier == "exact":
        return Shape("exact", (value.text,), lambda v: sa.or_(*(c == v[0] for c in cols)))
    like = escape_like(value.text)
    if value.modifier == "contains":
        return Shape(
            "contains", (like,), lambda v: sa.or_(*(c.icontains(v[0], escape="/") for c in cols))
        )
    return Shape(
        "starts", (like,), lambda v: sa.or_(*(c.istartswith(v[0], escape="/") for c in cols))
    )


def token_clause(
    value: TokenValue,
    code: ColumnLike,
    system: ColumnLike | None = None,
    fixed_system: str | None = None,
) -> ColumnElement[bool]:
    """search.html#token: ``code``, ``system|code``, ``|code``, ``system|``.

    ``system`` is the column holding the code system; ``fixed_system`` the one system all
    codes of the column belong to (e.g. ``http://hl7.org/fhir/administrative-gender``).
    A ``Boolean`` column takes the codes ``true`` / ``false``.
    """
    code_col = as_column(code)
    if isinstance(_base_type(code_col), sa.Boolean) and value.code not in (None, "true", "false"):
        raise ValueError("expected true or false")
    conditions: list[ColumnElement[bool]] = []
    if value.system is not None:
        if system is not None:
            sys_col = as_column(system)
            conditions.append(sys_col.is_(None) if value.system == "" else sys_col == value.system)
        elif value.system != (fixed_system or ""):
            return sa.false()
    if value.code is None:
        conditions.append(code_col.is_not(None))
    elif isinstance(_base_type(code_col), sa.Boolean):
        conditions.append(code_col.is_(sa.true() if value.code == "true" else sa.false()))
    else:
        conditions.append(code_col == value.code)
    return sa.and_(*conditions)


def _approx(value: DateValue) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    spread_low = abs(now - value.lower) * 0.1
    spread_high = abs(now - value.upper) * 0.1
    return value.lower - spread_low, value.upper + spread_high


def _range_clause(
    prefix: str, col: ColumnElement[Any], lo: object, hi: object
) -> ColumnElement[bool]:
    """Point target ``col`` against the search range ``[lo, hi)`` (search.html#prefix)."""
    if prefix in ("eq", "ap"):
        return sa.and_(col >= lo, col < hi)
    if prefix == "ne":
        return sa.or_(col < lo, col >= hi)
    if prefix in ("gt", "sa"):
        return col >= hi
    if prefix in ("lt", "eb"):
        return col < lo
    if prefix == "ge":
        return col >= lo
    return col < hi  # le


def _ceil_day(moment: datetime) -> date:
    day = moment.date()
    return day if moment.time() == datetime.min.time() else day + timedelta(days=1)


def date_clause(
    value: DateValue, column: ColumnLike, end: ColumnLike | None = None
) -> ColumnElement[bool]:
    """search.html#date: compare the value's range with the target's range per prefix.

    * ``DateTime`` column: the target is an instant (compared in UTC; naive columns are
      assumed to hold UTC);
    * ``Date`` column: the target is the whole day ``[d, d+1)``;
    * ``DateTime`` ``column`` + ``end``: the target is the period ``[column, end]``, a NULL
      bound being open (Period.start / Period.end).
    """
    return date_shape(value, column, end).clause()


def date_shape(value: DateValue, column: ColumnLike, end: ColumnLike | None = None) -> Shape:
    """:func:`date_clause` as a :class:`Shape`: its prefix, and the bounds it binds."""
    col = as_column(column)
    kind = _base_type(col)
    prefix = value.prefix
    lower, upper = _approx(value) if prefix == "ap" else (value.lower, value.upper)
    if isinstance(kind, sa.DateTime):
        naive = not kind.timezone
        lo_utc, hi_utc = lower.astimezone(UTC), upper.astimezone(UTC)
        lo = lo_utc.replace(tzinfo=None) if naive else lo_utc
        hi = hi_utc.replace(tzinfo=None) if naive else hi_utc
        if end is None:
            return Shape(prefix, (lo, hi), lambda v: _range_clause(prefix, col, v[0], v[1]))
        end_col = as_column(end)
        return Shape(prefix, (lo, hi), lambda v: _period_clause(prefix, col, end_col, v[0], v[1]))
    if not isinstance(kind, sa.Date) or end is not None:
        raise TypeError(f"date search needs a Date or DateTime column, not {kind!r}")
    # Wall-clock days of the value's bounds; the target day is [d, d+1).
    lo_floor, lo_ceil = lower.date(), _ceil_day(lower)
    hi_floor, hi_ceil = upper.date(), _ceil_day(upper)
    bounds: dict[str, tuple[date, date]] = {
        "eq": (lo_ceil, hi_floor),
        "ap": (lo_ceil, hi_floor),
        "ne": (lo_ceil, hi_floor),
        "gt": (lo_ceil, hi_floor),
        "lt": (lo_ceil, hi_floor),
        "ge": (min(lo_ceil, hi_floor), hi_floor),
        "le": (lo_ceil, max(lo_ceil, hi_floor)),
        "sa": (lo_ceil, hi_ceil),
        "eb": (lo_floor, hi_floor),
    }
    return Shape(prefix, bounds[prefix], lambda v: _range_clause(prefix, col, v[0], v[1]))


def _period_clause(
    prefix: str, start: ColumnElement[Any], end: ColumnElement[Any], lo: object, hi: object
) -> ColumnElement[bool]:
    contained = sa.and_(start >= lo, end < hi)
    above = sa.or_(end.is_(None), end >= hi)
    below = sa.or_(start.is_(None), start < lo)
    clauses: dict[str, ColumnElement[bool]] = {
        "eq": contained,
        "ap": contained,
        "ne": sa.or_(start.is_(None), end.is_(None), start < lo, end >= hi),
        "gt": above,
        "lt": below,
        "ge": sa.or_(above, contained),
        "le": sa.or_(below, contained),
        "sa": start >= hi,
        "eb": end < lo,
    }
    # A resource without any period never matches, whatever the prefix.
    return sa.and_(sa.or_(start.is_not(None), end.is_not(None)), clauses[prefix])


def reference_clause(
    value: ReferenceValue | None, column: ColumnLike, type_column: ColumnLike | None = None
) -> ColumnElement[bool]:
    """search.html#reference: match the id column (and the type column when there is one)."""
    if value is None:
        return sa.false()
    col = as_column(column)
    ident: object = value.id
    if isinstance(_base_type(col), sa.Integer):
        if not value.id.isdigit():
            return sa.false()
        ident = int(value.id)
    clause = col == ident
    if type_column is not None and value.type is not None:
        clause = sa.and_(as_column(type_column) == value.type, clause)
    return clause


def number_clause(value: NumberValue, column: ColumnLike) -> ColumnElement[bool]:
    """search.html#number: ``eq``/``ne`` use the implicit precision range, ``ap`` is ±10%."""
    col = as_column(column)
    kind = _base_type(col)

    def bind(number: Decimal) -> object:
        if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float):
            return number
        return float(number)

    exact = bind(value.value)
    if value.prefix in ("eq", "ne"):
        return _range_clause(value.prefix, col, bind(value.lower), bind(value.upper))
    if value.prefix == "ap":
        spread = abs(value.value) / 10
        return sa.and_(col >= bind(value.value - spread), col <= bind(value.value + spread))
    if value.prefix in ("gt", "sa"):
        return col > exact
    if value.prefix in ("lt", "eb"):
        return col < exact
    return col >= exact if value.prefix == "ge" else col <= exact


def uri_clause(value: UriValue, column: ColumnLike) -> ColumnElement[bool]:
    """search.html#uri: exact match, or prefix match with ``:below``."""
    col = as_column(column)
    if value.below:
        return col.startswith(value.uri, autoescape=True)
    return col == value.uri


# -------------------------------------------------------------------------- parameters


def _shaped(shape: Shaper | None) -> Matcher | None:
    """The matcher writing ``shape``'s clause with the value in it."""
    return None if shape is None else (lambda v: shape(v).clause())


_TYPE_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains"}),
    "token": frozenset({"not"}),
    "uri": frozenset({"below"}),
}


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter: its FHIR type and how a single value becomes a SQL clause.

    Build it with the typed factories (:meth:`string`, :meth:`token`, :meth:`date`,
    :meth:`reference`, :meth:`number`, :meth:`uri`), mapping either onto columns or onto
    ``match``, a callable receiving one parsed value (:class:`TokenValue`, ...) and returning
    a boolean clause, typically an ``EXISTS`` built with the public ``*_clause`` helpers.
    Column-mapped parameters also accept ``:missing=true|false``. A parameter given by
    ``shape`` instead of ``match`` (a callable returning a value's :class:`Shape`; ``date``
    parameters on a column have one) lets a search of it be built once per shape.
    """

    type: ParamType
    match: Matcher
    missing: tuple[ColumnElement[Any], ...] = ()
    targets: tuple[str, ...] = ()
    doc: str = ""
    definition: str | None = None
    shape: Shaper | None = None

    @property
    def modifiers(self) -> frozenset[str]:
        """The modifiers this parameter accepts (search.html#modifiers)."""
        mods = set(_TYPE_MODIFIERS.get(self.type, ())) | set(self.targets)
        if self.missing:
            mods.add("missing")
        return frozenset(mods)

    @classmethod
    def _build(
        cls,
        kind: ParamType,
        column: ColumnLike | None,
        match: Matcher | None,
        default: Callable[[ColumnLike], Matcher],
        doc: str,
        definition: str | None,
        targets: tuple[str, ...] = (),
        shape: Shaper | None = None,
    ) -> SearchParam:
        match = match or _shaped(shape)
        if match is None:
            if column is None:
                raise ValueError(f"a {kind} search parameter needs a column or a match callable")
            match = default(column)
        missing = (as_column(column),) if column is not None else ()
        return cls(kind, match, missing, targets, doc, definition, shape)

    @classmethod
    def string(
        cls,
        *columns: ColumnLike,
        normalized: Sequence[ColumnLike] = (),
        match: Callable[[StringValue], ColumnElement[bool]] | None = None,
        shape: Callable[[StringValue], Shape] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``string`` parameter over one or more columns (OR-ed); see :func:`string_clause`."""
        if match is None and shape is None and not columns:
            raise ValueError("a string search parameter needs a column or a match callable")
        norm = tuple(normalized)
        if match is None and shape is None and not norm:
            shape = lambda v: string_shape(v, columns)  # noqa: E731
        matcher = match or _shaped(shape) or (lambda v: string_clause(v, columns, norm))
        missing = tuple(as_column(c) for c in columns)
        return cls("string", matcher, missing, (), doc, definition, shape)

    @classmethod
    def token(
        cls,
        code: ColumnLike | None = None,
        *,
        system: ColumnLike | None = None,
        fixed_system: str | None = None,
        match: Callable[[TokenValue], ColumnElement[bool]] | None = None,
        shape: Callable[[TokenValue], Shape] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``token`` parameter on a code column (+ system column); see :func:`token_clause`."""
        return cls._build(
            "token",
            code,
            match,
            lambda c: lambda v: token_clause(v, c, system, fixed_system),
            doc,
            definition,
            shape=shape,
        )

    @classmethod
    def date(
        cls,
        column: ColumnLike | None = None,
        *,
        end: ColumnLike | None = None,
        match: Callable[[DateValue], ColumnElement[bool]] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``date`` parameter on a Date/DateTime column or a period; see :func:`date_clause`."""
        shape = None if match or column is None else (lambda v: date_shape(v, column, end))
        return cls._build(
            "date", column, match, lambda c: lambda v: date_clause(v, c, end), doc, definition,
            shape=shape,
        )  # fmt: skip

    @classmethod
    def reference(
        cls,
        column: ColumnLike | None = None,
        *,
        targets: Sequence[str],
        type_column: ColumnLike | None = None,
        match: Callable[[ReferenceValue], ColumnElement[bool]] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``reference`` parameter to ``targets`` types; see :func:`reference_clause`."""
        if not targets:
            raise ValueError("a reference search parameter needs at least one target type")
        return cls._build(
            "reference",
            column,
            match,
            lambda c: lambda v: reference_clause(v, c, type_column),
            doc,
            definition,
            tuple(targets),
        )

    @classmethod
    def number(
        cls,
        column: ColumnLike | None = None,
        *,
        match: Callable[[NumberValue], ColumnElement[bool]] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``number`` parameter; see :func:`number_clause`."""
        return cls._build(
            "number", column, match, lambda c: lambda v: number_clause(v, c), doc, definition
        )

    @classmethod
    def uri(
        cls,
        column: ColumnLike | None = None,
        *,
        match: Callable[[UriValue], ColumnElement[bool]] | None = None,
        doc: str = "",
        definition: str | None = None,
    ) -> SearchParam:
        """A ``uri`` parameter (exact, or ``:below`` prefix); see :func:`uri_clause`."""
        return cls._build(
            "uri", column, match, lambda c: lambda v: uri_clause(v, c), doc, definition
        )
