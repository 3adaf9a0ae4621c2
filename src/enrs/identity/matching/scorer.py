"""The Python rendering of the matching definition: one function per model, generated from
``definition.py`` and the model's weights, compiled once.

Real-time matching scores one identity against its tens of blocked candidates, read as bare
columns (``repository.Candidate``). The generated code works out once what depends on the
probed identity alone (its features, and the parts of conditions that read only it), then
scores each stored row with the levels inlined: a row's features are computed when the first
level that reads them is reached, the weights and auto-link verdicts of the levels are
constants. :func:`scorer_source` shows the code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date
from typing import NamedTuple, Protocol, cast

from enrs.identity.matching.compare import PairScore, Traits
from enrs.identity.matching.definition import COMPARISONS
from enrs.identity.matching.model import MatchModel
from enrs.identity.matching.rules import (
    PY_HELPERS,
    Column,
    Comparison,
    Derived,
    Feature,
    PyRenderer,
    Ref,
    Side,
    closure,
    refs,
    roots,
    walk,
)


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
    @property
    def p_birth_name(self) -> str | None: ...
    @property
    def p_first_given(self) -> str | None: ...
    @property
    def n_address(self) -> str | None: ...
    @property
    def n_city(self) -> str | None: ...
    @property
    def n_phone(self) -> str | None: ...
    @property
    def n_email(self) -> str | None: ...
    @property
    def birth_order(self) -> str | None: ...


class StoredTraits(NamedTuple):
    """``Traits`` as a stored row."""

    n_birth_name: str
    n_used_name: str
    n_given_names: str
    birth_date: date | None
    sex: str
    birth_place: str | None
    postal_code: str | None
    p_birth_name: str | None = None
    p_first_given: str | None = None
    n_address: str | None = None
    n_city: str | None = None
    n_phone: str | None = None
    n_email: str | None = None
    birth_order: str | None = None


def row_of(t: Traits) -> StoredTraits:
    return StoredTraits(
        t.birth_name,
        t.used_name,
        "|".join(t.given_names),
        t.birth_date,
        t.sex,
        t.birth_place,
        t.postal_code,
        t.birth_name_phonetic,
        t.given_phonetic,
        t.address,
        t.city,
        t.phone,
        t.email,
        t.birth_order,
    )


RowScorer = Callable[[Stored], PairScore]
Prepare = Callable[[Stored], RowScorer]


def _var(feature: Feature, side: Side) -> str:
    return f"{side}_{feature.name}"


class _Code:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _feature_line(py: PyRenderer, f: Feature, side: Side, guarded: set[Column]) -> str:
    """The assignment of ``side``'s value of ``f``: NULL when a nullable column it is derived
    from is NULL (as in SQL), unless the levels before have ruled that out."""
    if isinstance(f, Column):
        read = f"row.{f.row}" if side == "r" else f"a.{f.row}"
        return f"{_var(f, side)} = {read} or ''" if f.text else f"{_var(f, side)} = {read}"
    assert isinstance(f, Derived)
    value = py.render(f.expr, side)
    nulls = sorted(c.name for c in roots(f) - guarded)
    if nulls:
        test = " or ".join(f"{side}_{n} is None" for n in nulls)
        value = f"None if {test} else {value}"
    return f"{_var(f, side)} = {value}"


def _needed(comp: Comparison, side: Side, upto: int | None = None) -> list[Feature]:
    found = set()
    for lvl in comp.levels[:upto]:
        if lvl.condition is not None:
            found |= {f for f, s in refs(lvl.condition) if s == side}
    return closure(found)


def _plan(
    model: MatchModel, comparisons: Sequence[Comparison]
) -> list[tuple[Comparison, dict[str, float], frozenset[str] | None]]:
    by_name = {c.name: c for c in comparisons}
    unknown = [c.name for c in model.comparisons if c.name not in by_name]
    if unknown:
        raise ValueError(f"the model names comparisons the engine lacks: {sorted(unknown)}")
    plan = []
    for mc in model.comparisons:
        comp = by_name[mc.name]
        if {lv.label for lv in mc.levels} != {lv.label for lv in comp.levels}:
            raise ValueError(
                f"comparison {comp.name!r}: the model's levels differ from the engine's"
            )
        weights = {lv.label: lv.weight for lv in mc.levels}
        plan.append((comp, weights, model.auto_link_requires.get(comp.name)))
    return plan


def _read_once(comparisons: list[Comparison], row_features: set[Feature]) -> set[Feature]:
    """The row's derived features read once (by one level, or by one other feature): written
    where they are read rather than computed beforehand."""
    uses: Counter[Feature] = Counter()
    for comp in comparisons:
        for lvl in comp.levels:
            if lvl.condition is not None:
                uses.update(
                    x.feature for x in walk(lvl.condition) if isinstance(x, Ref) and x.side == "r"
                )
    for g in row_features:
        if isinstance(g, Derived):
            uses.update(x for x in walk(g.expr) if isinstance(x, Feature))
    return {f for f, n in uses.items() if n == 1 and isinstance(f, Derived)}


def scorer_source(model: MatchModel, comparisons: Sequence[Comparison] = COMPARISONS) -> str:
    """Python source of ``prepare(a)``: ``a`` (a stored row) ready to score rows against."""
    plan = _plan(model, comparisons)
    per_comp = [set(_needed(comp, "r")) for comp, _, _ in plan]
    # the row's features that several comparisons read are computed first
    shared = {f for i, fs in enumerate(per_comp) for f in fs if any(f in o for o in per_comp[:i])}
    inline = _read_once([comp for comp, _, _ in plan], set().union(*per_comp)) - shared
    py = PyRenderer(_var, hoist="l", inline=lambda f, side: side == "r" and f in inline)
    conditions: list[list[str]] = [
        [py.render(lvl.condition) for lvl in comp.levels if lvl.condition is not None]
        for comp, _, _ in plan
    ]
    code = _Code()
    code.add(0, "def prepare(a):")
    for f in closure({f for comp, _, _ in plan for f in _needed(comp, "l")}):
        code.add(1, _feature_line(py, f, "l", set()))
    for name, source in py.hoisted:
        code.add(1, f"{name} = {source}")
    code.add(1, "def score(row):")
    done = closure(shared)
    for f in done:
        code.add(2, _feature_line(py, f, "r", set()))
    missing = set(model.auto_link_requires) - {comp.name for comp, _, _ in plan}
    code.add(2, f"ok = {not missing}")
    for i, (comp, weights, allowed) in enumerate(plan):
        _chain(code, py, i, comp, weights, allowed, conditions[i], set(done) | inline)
    total = " + ".join(f"w{i}" for i in range(len(plan))) or "0.0"
    strict = [f"w{i}" for i, (c, _, _) in enumerate(plan) if c.name not in model.evidence_only]
    labels = ", ".join(f"{comp.name!r}: c{i}" for i, (comp, _, _) in enumerate(plan))
    code.add(2, f"return _PairScore({total}, {{{labels}}}, ok, {' + '.join(strict) or '0.0'})")
    code.add(1, "return score")
    return "\n".join(code.lines) + "\n"


def _chain(
    code: _Code,
    py: PyRenderer,
    i: int,
    comp: Comparison,
    weights: dict[str, float],
    allowed: frozenset[str] | None,
    conditions: list[str],
    done: set[Feature],
) -> None:
    """One comparison: nested ``if``/``else``, a row's feature computed before the first
    level that reads it."""
    indent, keyword = 2, "if"
    for k, lvl in enumerate(comp.levels):
        guarded = comp.guarded_after(k)
        computed = [f for f in _needed(comp, "r", k + 1) if f not in done]
        if computed and keyword == "elif":
            code.add(indent, "else:")
            indent, keyword = indent + 1, "if"
        for f in computed:
            code.add(indent, _feature_line(py, f, "r", guarded))
            done.add(f)
        body = [f"c{i} = {lvl.label!r}", f"w{i} = {weights[lvl.label]!r}"]
        if allowed is not None and lvl.label not in allowed:
            body.append("ok = False")
        if lvl.condition is None:
            if keyword == "elif":
                code.add(indent, "else:")
                indent += 1
            for line in body:
                code.add(indent, line)
            return
        code.add(indent, f"{keyword} {conditions[k]}:")
        for line in body:
            code.add(indent + 1, line)
        keyword = "elif"


def compile_scorer(model: MatchModel, comparisons: Sequence[Comparison] = COMPARISONS) -> Prepare:
    """``prepare``: ``prepare(a)(row)`` scores ``a`` and ``row`` (stored rows, or traits
    through :func:`row_of`) with ``model``'s weights and auto-link rules."""
    source = scorer_source(model, comparisons)
    namespace: dict[str, object] = {**PY_HELPERS, "_PairScore": PairScore}
    code = compile(source, f"<matching scorer {model.name} {model.version}>", "exec")
    exec(code, namespace)  # noqa: S102 - our own source, rendered from definition.py
    return cast(Prepare, namespace["prepare"])


def compile_features(features: Sequence[Feature]) -> Callable[[Stored], dict[str, object]]:
    """The values of ``features`` for a stored row, as the scorer computes them for the
    probed identity (to compare them with the registry frame's)."""
    py = PyRenderer(_var)
    code = _Code()
    code.add(0, "def features(a):")
    for f in closure(set(features)):
        code.add(1, _feature_line(py, f, "l", set()))
    values = ", ".join(f"{f.name!r}: {_var(f, 'l')}" for f in features)
    code.add(1, f"return {{{values}}}")
    namespace: dict[str, object] = dict(PY_HELPERS)
    exec(compile("\n".join(code.lines), "<matching features>", "exec"), namespace)  # noqa: S102
    return cast(Callable[[Stored], dict[str, object]], namespace["features"])
