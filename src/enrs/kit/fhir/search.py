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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
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


@dataclass(frozen=True, eq=False)
class ParsedSearch:
    """A validated search request, ready for :func:`apply_search` and the Bundle links."""

    spec: SearchSpec
    params: tuple[ParsedParam, ...]
    clauses: tuple[ColumnElement[bool], ...]
    order_by: tuple[UnaryExpression[Any], ...]
    count: int
    offset: int
    total: str
    includes: tuple[str, ...]
    revincludes: tuple[str, ...]
    used: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]

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


def _parse_sort(spec: SearchSpec, raw: str | Sequence[str]) -> list[UnaryExpression[Any]]:
    """``_sort=key,-key`` (search.html#sort): ``-`` sorts descending; NULLs sort last."""
    order: list[UnaryExpression[Any]] = []
    for key in _sort_keys(raw):
        name = key.removeprefix("-")
        if name not in spec.sorts:
            allowed = ", ".join(sorted(spec.sorts)) or "none"
            raise _bad("_sort", str(raw), f"cannot sort on {name!r} (supported: {allowed})")
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
) -> tuple[tuple[SearchValue | None, ...], ColumnElement[bool]]:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(f"{name}:missing", raw, "expected true or false")
        if raw == "true":
            return (), sa.and_(*(c.is_(None) for c in param.missing))
        return (), sa.or_(*(c.is_not(None) for c in param.missing))
    values: list[SearchValue | None] = []
    clauses: list[ColumnElement[bool]] = []
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
            clauses.append(sa.false() if value is None else param.match(value))
        except ValueError as exc:
            label = f"{name}:{modifier}" if modifier else name
            raise _bad(label, piece, f"{exc} ({param.type} parameter)") from None
        values.append(value)
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
    clauses: list[ColumnElement[bool]] = []
    params: list[ParsedParam] = []
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    seen: set[str] = set()
    count, offset, total = spec.default_count, 0, spec.default_total
    order: list[UnaryExpression[Any]] | None = None
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
            order = _parse_sort(spec, raw)
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
            values, clause = _parse_values(spec, param, base, mod, raw, base_url)
            params.append(ParsedParam(base, mod, raw, values))
            clauses.append(clause)
        used.append((name, raw))

    if order is None:
        natural = [
            spec.index_sorts[p.name]
            for p in params
            if p.name in spec.index_sorts and p.modifier in (None, "exact")
        ]
        if natural:
            order = _parse_sort(spec, natural[0])
        else:
            order = _parse_sort(spec, spec.default_sort) if spec.default_sort else []
    if spec.tiebreaker is not None:
        order.append(as_column(spec.tiebreaker).asc())
    return ParsedSearch(
        spec=spec,
        params=tuple(params),
        clauses=tuple(clauses),
        order_by=tuple(order),
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
