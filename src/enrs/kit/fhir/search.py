"""A declarative, safe FHIR search engine over SQLAlchemy 2 ``Select`` statements.

FHIR R4 search.html. A resource module declares a :class:`SearchSpec`: which search
parameters exist, their FHIR type, and the column (or the callable building a boolean
clause) each one maps to, plus the sort keys. :func:`parse_search` validates a request's
query items against it (names, modifiers, values, and the result parameters ``_count``,
``_offset``, ``_sort``, ``_total``, ``_include``, ``_revinclude``) and :func:`apply_search`
turns the result into ``WHERE`` / ``ORDER BY`` / ``LIMIT`` / ``OFFSET``. Clients never
supply SQL fragments or column names; every value is a bound parameter.

Combination rules (search.html#combining): comma-separated values of one parameter are
OR-ed, repeated parameters are AND-ed. Unknown parameters are ignored and reported in
:attr:`ParsedSearch.ignored` (so the Bundle ``self`` link echoes only the parameters used),
unless the client sent ``Prefer: handling=strict``; unsupported modifiers are always
refused (search.html#modifiers). ``_format`` and ``_pretty`` are presentation parameters
handled elsewhere and silently skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from enrs.kit.db import substring_first
from enrs.kit.errors import BadRequest
from enrs.kit.fhir.search_params import (
    ColumnLike,
    SearchParam,
    Shape,
    as_column,
)
from enrs.kit.fhir.search_values import (
    SearchValue,
    parse_date,
    parse_number,
    parse_reference,
    parse_string,
    parse_token,
    parse_uri,
    split_unescaped,
)

__all__ = [
    "ParsedParam",
    "ParsedSearch",
    "SearchParam",
    "SearchSpec",
    "SearchStatements",
    "apply_search",
    "count_stmt",
    "parse_search",
    "split_page",
]

T = TypeVar("T")

RESULT_PARAMS = frozenset({"_count", "_offset", "_sort", "_total", "_include", "_revinclude"})
PRESENTATION_PARAMS = frozenset({"_format", "_pretty"})
TOTAL_MODES = ("none", "estimate", "accurate")


@dataclass(frozen=True, eq=False)
class SearchSpec:
    """What one resource type can be searched and sorted on.

    ``sorts`` maps ``_sort`` keys to columns; ``default_sort`` (e.g. ``"-_lastUpdated"``)
    applies without ``_sort``; ``tiebreaker`` (the primary key) makes paging stable.
    ``index_sorts`` maps a parameter to the sort key of the index serving it: without
    ``_sort``, a search using that parameter (no modifier, or ``:exact``) is sorted by that
    key, so a common prefix reads its first page from the index in order instead of
    fetching every match to sort them by the tiebreaker.
    ``includes`` / ``revincludes`` allow-list ``_include`` / ``_revinclude`` values (the
    service resolves them). ``timezone`` interprets date values written without an offset
    (search.html#date: "the server's local time zone").
    """

    resource_type: str
    params: Mapping[str, SearchParam]
    sorts: Mapping[str, ColumnLike] = field(default_factory=dict)
    default_sort: str | Sequence[str] = ()
    index_sorts: Mapping[str, str] = field(default_factory=dict)
    tiebreaker: ColumnLike | None = None
    includes: frozenset[str] = frozenset()
    revincludes: frozenset[str] = frozenset()
    default_count: int = 20
    max_count: int = 100
    max_offset: int = 100_000
    default_total: str = "accurate"
    timezone: tzinfo = UTC

    def __post_init__(self) -> None:
        for name in self.params:
            if name in RESULT_PARAMS | PRESENTATION_PARAMS or not name or ":" in name:
                raise ValueError(f"{name!r} cannot be a search parameter name")
        if self.default_total not in TOTAL_MODES:
            raise ValueError(f"default_total must be one of {TOTAL_MODES}")
        if not 0 < self.default_count <= self.max_count:
            raise ValueError("default_count must be between 1 and max_count")
        for key in [*_sort_keys(self.default_sort), *self.index_sorts.values()]:
            if key.removeprefix("-") not in self.sorts:
                raise ValueError(f"default sort key {key!r} is not in sorts")


@dataclass(frozen=True, slots=True)
class ParsedParam:
    """One search parameter occurrence: ``name``, ``modifier`` and its OR-ed values."""

    name: str
    modifier: str | None
    raw: str
    values: tuple[SearchValue | None, ...]


@dataclass(frozen=True, slots=True)
class _Shaped:
    """One parameter occurrence whose values all have a :class:`Shape`: its clause (the
    values OR-ed, negated under ``:not``) written over any values of those shapes."""

    name: str
    shapes: tuple[Shape, ...]
    negate: bool

    @property
    def key(self) -> Hashable:
        return self.name, self.negate, tuple(s.key for s in self.shapes)

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(v for s in self.shapes for v in s.values)

    def build(self, values: Sequence[Any]) -> ColumnElement[bool]:
        clauses, at = [], 0
        for shape in self.shapes:
            clauses.append(shape.build(values[at : at + len(shape.values)]))
            at += len(shape.values)
        clause = clauses[0] if len(clauses) == 1 else sa.or_(*clauses)
        return _negate(clause) if self.negate else clause


@dataclass(frozen=True, eq=False)
class ParsedSearch:
    """A validated search request, ready for :func:`apply_search` and the Bundle links.

    ``parts`` holds one condition per parameter occurrence: a clause, or its values' shapes
    (written into :attr:`clauses` only when asked, and once per shape by
    :class:`SearchStatements`). ``sort_keys`` are the ``_sort`` keys ``order_by`` came from."""

    spec: SearchSpec
    params: tuple[ParsedParam, ...]
    parts: tuple[ColumnElement[bool] | _Shaped, ...]
    order_by: tuple[UnaryExpression[Any], ...]
    sort_keys: tuple[str, ...]
    count: int
    offset: int
    total: str
    includes: tuple[str, ...]
    revincludes: tuple[str, ...]
    used: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]

    @cached_property
    def clauses(self) -> tuple[ColumnElement[bool], ...]:
        """The search's conditions, one per parameter occurrence, with their values in them."""
        return tuple(p.build(p.values) if isinstance(p, _Shaped) else p for p in self.parts)

    @property
    def shape(self) -> Hashable | None:
        """What the SQL of this search depends on, when every condition has a shape (a
        statement of that shape then serves any values: :class:`SearchStatements`)."""
        if not all(isinstance(p, _Shaped) for p in self.parts):
            return None
        keys = tuple(p.key for p in self.parts if isinstance(p, _Shaped))
        return keys, self.sort_keys

    @property
    def want_total(self) -> bool:
        """Whether ``Bundle.total`` should be computed (``_total`` is not ``none``)."""
        return self.total != "none"

    def query_items(self, offset: int | None = None) -> list[tuple[str, str]]:
        """The parameters to echo in a Bundle link, with ``_count`` and ``_offset``."""
        items = list(self.used)
        items.append(("_count", str(self.count)))
        offset = self.offset if offset is None else offset
        if offset:
            items.append(("_offset", str(offset)))
        return items

    def query_string(self, offset: int | None = None) -> str:
        """:meth:`query_items` percent-encoded (``|`` as ``%7C``, space as ``%20``)."""
        return "&".join(
            f"{quote(k, safe=':')}={quote(v, safe=':/,')}" for k, v in self.query_items(offset)
        )


def _bad(name: str, raw: str, reason: str) -> BadRequest:
    return BadRequest(f"Invalid value {raw!r} for search parameter {name!r}: {reason}")


def _parse_int(name: str, raw: str, maximum: int, *, clamp: bool = False) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise _bad(name, raw, "expected a non-negative integer")
    value = int(raw) if len(raw) <= 18 else maximum + 1
    if value > maximum:
        if clamp:
            return maximum
        raise _bad(name, raw, f"must not exceed {maximum}")
    return value


def _sort_keys(raw: str | Sequence[str]) -> list[str]:
    keys = split_unescaped(raw, ",") if isinstance(raw, str) else list(raw)
    return [k.strip() for k in keys]


def _parse_sort(spec: SearchSpec, keys: Sequence[str], raw: str) -> list[UnaryExpression[Any]]:
    """``_sort=key,-key`` (search.html#sort): ``-`` sorts descending; NULLs sort last."""
    order: list[UnaryExpression[Any]] = []
    for key in keys:
        name = key.removeprefix("-")
        if name not in spec.sorts:
            allowed = ", ".join(sorted(spec.sorts)) or "none"
            raise _bad("_sort", raw, f"cannot sort on {name!r} (supported: {allowed})")
        col = as_column(spec.sorts[name])
        order.append((col.desc() if key.startswith("-") else col.asc()).nulls_last())
    return order


def _negate(clause: ColumnElement[bool]) -> ColumnElement[bool]:
    # NOT over SQL NULL is NULL; CASE makes rows whose value is missing match :not.
    return sa.case((clause, 0), else_=1) == 1


def _parse_values(
    spec: SearchSpec,
    param: SearchParam,
    name: str,
    modifier: str | None,
    raw: str,
    base_url: str | None,
) -> tuple[tuple[SearchValue | None, ...], ColumnElement[bool] | _Shaped]:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(f"{name}:missing", raw, "expected true or false")
        if raw == "true":
            return (), sa.and_(*(c.is_(None) for c in param.missing))
        return (), sa.or_(*(c.is_not(None) for c in param.missing))
    values: list[SearchValue | None] = []
    clauses: list[ColumnElement[bool]] = []
    shapes: list[Shape] = []
    for piece in split_unescaped(raw, ","):
        try:
            value: SearchValue | None
            if param.type == "string":
                value = parse_string(piece, modifier)
            elif param.type == "token":
                value = parse_token(piece)
            elif param.type == "date":
                value = parse_date(piece, spec.timezone)
            elif param.type == "reference":
                value = parse_reference(piece, modifier, param.targets, base_url)
            elif param.type == "number":
                value = parse_number(piece)
            else:
                value = parse_uri(piece, modifier)
            if param.shape is not None and value is not None:
                shapes.append(param.shape(value))
            else:
                clauses.append(sa.false() if value is None else param.match(value))
        except ValueError as exc:
            label = f"{name}:{modifier}" if modifier else name
            raise _bad(label, piece, f"{exc} ({param.type} parameter)") from None
        values.append(value)
    if not clauses:
        return tuple(values), _Shaped(name, tuple(shapes), modifier == "not")
    clauses += [s.clause() for s in shapes]
    clause = clauses[0] if len(clauses) == 1 else sa.or_(*clauses)
    return tuple(values), _negate(clause) if modifier == "not" else clause


def parse_search(
    spec: SearchSpec,
    query_items: Sequence[tuple[str, str]],
    *,
    strict: bool,
    base_url: str | None = None,
) -> ParsedSearch:
    """Validate ``query_items`` (decoded, in request order) against ``spec``.

    Raises :class:`BadRequest` naming the parameter and value for a malformed value, an
    unsupported modifier, an unknown ``_sort`` key, a repeated result parameter, or (when
    ``strict``) an unknown parameter. ``base_url`` lets reference values written as absolute
    URLs of this server match. ``_count`` above ``spec.max_count`` is clamped
    (search.html#count); ``_count=0`` asks for the total only.
    """
    parts: list[ColumnElement[bool] | _Shaped] = []
    params: list[ParsedParam] = []
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    seen: set[str] = set()
    count, offset, total = spec.default_count, 0, spec.default_total
    order: list[UnaryExpression[Any]] | None = None
    sort_keys: list[str] = []
    includes: list[str] = []
    revincludes: list[str] = []

    def unknown(name: str, reason: str) -> None:
        if strict:
            raise BadRequest(f"{reason} (Prefer: handling=strict)")
        if name not in ignored:
            ignored.append(name)

    for name, raw in query_items:
        base, _, modifier = name.partition(":")
        if base in PRESENTATION_PARAMS or raw == "":
            continue  # empty parameters are ignored (search.html#errors)
        if name in RESULT_PARAMS and name not in ("_include", "_revinclude"):
            if name in seen:
                raise BadRequest(f"Search parameter {name!r} may be given only once")
            seen.add(name)
        if name == "_count":
            count = _parse_int(name, raw, spec.max_count, clamp=True)
            continue
        if name == "_offset":
            offset = _parse_int(name, raw, spec.max_offset)
            continue
        if name == "_sort":
            sort_keys = _sort_keys(raw)
            order = _parse_sort(spec, sort_keys, raw)
        elif name == "_total":
            if raw not in TOTAL_MODES:
                raise _bad(name, raw, f"expected one of {', '.join(TOTAL_MODES)}")
            total = raw
        elif name in ("_include", "_revinclude"):
            allowed = spec.includes if name == "_include" else spec.revincludes
            if raw not in allowed:
                unknown(
                    f"{name}={raw}", f"{name}={raw!r} is not supported for {spec.resource_type}"
                )
                continue
            (includes if name == "_include" else revincludes).append(raw)
        else:
            param = spec.params.get(base)
            if param is None:
                supported = ", ".join(sorted(spec.params)) or "none"
                unknown(
                    name,
                    f"Unknown search parameter {name!r} for {spec.resource_type} "
                    f"(supported: {supported})",
                )
                continue
            mod = modifier or None
            if mod is not None and mod not in param.modifiers:
                allowed_mods = ", ".join(sorted(param.modifiers)) or "none"
                raise BadRequest(
                    f"Modifier ':{mod}' is not supported on search parameter {base!r} "
                    f"(supported: {allowed_mods})"
                )
            values, part = _parse_values(spec, param, base, mod, raw, base_url)
            params.append(ParsedParam(base, mod, raw, values))
            parts.append(part)
        used.append((name, raw))

    if order is None:
        natural = [
            spec.index_sorts[p.name]
            for p in params
            if p.name in spec.index_sorts and p.modifier in (None, "exact")
        ]
        if natural or spec.default_sort:
            sort_keys = _sort_keys(natural[0] if natural else spec.default_sort)
        order = _parse_sort(spec, sort_keys, ",".join(sort_keys))
    if spec.tiebreaker is not None:
        order.append(as_column(spec.tiebreaker).asc())
    return ParsedSearch(
        spec=spec,
        params=tuple(params),
        parts=tuple(parts),
        order_by=tuple(order),
        sort_keys=tuple(sort_keys),
        count=count,
        offset=offset,
        total=total,
        includes=tuple(includes),
        revincludes=tuple(revincludes),
        used=tuple(used),
        ignored=tuple(ignored),
    )


def apply_search(stmt: Select[Any], parsed: ParsedSearch, dialect: str = "") -> Select[Any]:
    """Add the search's WHERE, ORDER BY, OFFSET and ``LIMIT count + 1`` to ``stmt``.

    The extra row tells whether a next page exists; see :func:`split_page`. Parameters on
    joined tables should use ``match`` callables with ``EXISTS`` so rows are not duplicated.
    Given the database's ``dialect``, a substring search on SQLite reads its FTS table first
    (:func:`~enrs.kit.db.substring_first`).
    """
    clauses, order = list(parsed.clauses), list(parsed.order_by)
    if dialect == "sqlite":
        stmt, clauses, order = substring_first(stmt, clauses, order)
    return (
        stmt.where(*clauses)
        .order_by(None)
        .order_by(*order)
        .offset(parsed.offset)
        .limit(parsed.count + 1 if parsed.count else 0)
    )


class SearchStatements:
    """The search statements over one base statement, each built once per shape.

    Building a search's statement, and SQLAlchemy's cache key of it, cost as much as running
    it on an indexed table. A search whose every condition has a :class:`Shape`
    (:attr:`ParsedSearch.shape`) is run as a statement of its shape, built at its first use
    with a bind parameter per value and kept (the ``size`` shapes built last), with this
    request's values; any other search is built as :func:`apply_search` builds it. Keep one per base
    statement, at module level: ``base`` is built once."""

    def __init__(self, base: Select[Any], size: int = 256) -> None:
        self.base, self._size = base, size
        self._built: dict[tuple[SearchSpec, Hashable], Select[Any]] = {}
        self._lock = threading.Lock()

    def search(self, parsed: ParsedSearch, dialect: str = "") -> tuple[Select[Any], dict[str, Any]]:
        """The statement of ``parsed`` (as :func:`apply_search`'s) and the values to run it
        with."""
        shape = parsed.shape
        if shape is None:
            return apply_search(self.base, parsed, dialect), {}
        parts = [p for p in parsed.parts if isinstance(p, _Shaped)]
        values = [v for p in parts for v in p.values]
        params = {f"search_{i}": v for i, v in enumerate(values)}
        params["search_offset"] = parsed.offset
        params["search_limit"] = parsed.count + 1 if parsed.count else 0
        key = (parsed.spec, shape)  # the spec itself: its builders, sorts and tiebreaker
        with self._lock:
            stmt = self._built.get(key)
        if stmt is None:
            stmt = self._build(parts, parsed.order_by)
            with self._lock:
                if len(self._built) >= self._size:
                    del self._built[next(iter(self._built))]
                self._built[key] = stmt
        return stmt, params

    def _build(
        self, parts: Sequence[_Shaped], order: Sequence[UnaryExpression[Any]]
    ) -> Select[Any]:
        at, clauses = 0, []
        for part in parts:
            n = len(part.values)
            clauses.append(part.build([sa.bindparam(f"search_{i}") for i in range(at, at + n)]))
            at += n
        return (
            self.base.where(*clauses)
            .order_by(None)
            .order_by(*order)
            .offset(sa.bindparam("search_offset"))
            .limit(sa.bindparam("search_limit"))
        )


def count_stmt(stmt: Select[Any], parsed: ParsedSearch) -> Select[int]:
    """``SELECT count(*)`` of the rows matching the search (for ``Bundle.total``)."""
    filtered = stmt.where(*parsed.clauses).order_by(None).subquery()
    return sa.select(sa.func.count()).select_from(filtered)


def split_page(rows: Sequence[T], parsed: ParsedSearch) -> tuple[list[T], bool]:
    """Cut the ``count + 1`` rows fetched by :func:`apply_search`: ``(page, has_next)``."""
    return list(rows[: parsed.count]), 0 < parsed.count < len(rows)


def search_total(
    session: Session, stmt: Select[Any], parsed: ParsedSearch, page: Sequence[Any], has_next: bool
) -> int | None:
    """``Bundle.total`` (``None`` under ``_total=none``): known without a query when the page is
    the last one and holds rows, or is the first one (``offset`` + its rows), else counted
    (:func:`count_stmt`)."""
    if not parsed.want_total:
        return None
    if parsed.count > 0 and not has_next and (page or parsed.offset == 0):
        return parsed.offset + len(page)
    total: int | None = session.scalar(count_stmt(stmt, parsed))
    return total
