"""Typed FHIR search values and the parsing of one value of each search parameter type.

FHIR R4 search.html: "Search Parameter Types" (number, date, string, token, reference,
uri), "Prefixes" (eq ne gt lt ge le sa eb ap), "Escaping Search Parameters" (``\\,`` ``\\|``
``\\$`` ``\\\\``) and the implicit-range rules of date and number values. Parsers raise
``ValueError`` with a short reason; :func:`enrs.kit.fhir.search.parse_search` turns it into
a ``BadRequest``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Literal

ParamType = Literal["string", "token", "date", "reference", "number", "uri"]
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_DATE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})(?:T(?P<h>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class StringValue:
    """A ``string`` value; ``modifier`` is ``None`` (starts-with), ``exact`` or ``contains``."""

    text: str
    modifier: str | None = None


@dataclass(frozen=True, slots=True)
class TokenValue:
    """A ``token`` value: ``system`` ``None`` = any system, ``""`` = no system (``|code``);
    ``code`` ``None`` = any code (``system|``)."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class DateValue:
    """A ``date`` value: the half-open range ``[lower, upper)`` implied by its precision.

    Bounds are timezone-aware, in the offset the client wrote (or the server default for
    values without one), so that ``Date`` columns can compare wall-clock days.
    """

    prefix: str
    lower: datetime
    upper: datetime
    precision: str


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A ``reference`` value: ``Type/id`` or a bare ``id`` (``type`` ``None``)."""

    type: str | None
    id: str


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A ``number`` value with the implicit range ``[lower, upper)`` of its precision."""

    prefix: str
    value: Decimal
    lower: Decimal
    upper: Decimal


@dataclass(frozen=True, slots=True)
class UriValue:
    """A ``uri`` value; ``below`` for the ``:below`` modifier (prefix match)."""

    uri: str
    below: bool = False


SearchValue = StringValue | TokenValue | DateValue | ReferenceValue | NumberValue | UriValue


# ---------------------------------------------------------------------------- escaping


def split_unescaped(raw: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` unless preceded by a backslash; escapes are kept (search.html#escaping)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            current.append(raw[i : i + 2])
            i += 2
            continue
        if char == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(raw: str) -> str:
    """Remove FHIR search escapes: ``\\,`` ``\\|`` ``\\$`` ``\\\\``."""
    return re.sub(r"\\([,|$\\])", r"\1", raw)


# ----------------------------------------------------------------------------- parsing


def _prefix(raw: str, allowed: Sequence[str] = PREFIXES) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in allowed:
        return raw[:2], raw[2:]
    return "eq", raw


def parse_string(raw: str, modifier: str | None) -> StringValue:
    text = unescape(raw)
    if not text:
        raise ValueError("empty string")
    return StringValue(text, modifier)


def parse_token(raw: str) -> TokenValue:
    parts = split_unescaped(raw, "|", maxsplit=1)
    if len(parts) == 1:
        code = unescape(parts[0])
        if not code:
            raise ValueError("empty token")
        return TokenValue(None, code)
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise ValueError("a token needs a system or a code")
    return TokenValue(system, code or None)


def parse_date(raw: str, default_tz: tzinfo) -> DateValue:
    """Parse ``[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.f]][Z|±hh:mm]]]]`` into its implicit range."""
    prefix, text = _prefix(raw)
    # An unencoded "+" in a query string arrives as a space: "...T10:00:00 02:00".
    if len(text) > 6 and text[-6] == " ":
        text = text[:-6] + "+" + text[-5:]
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError("expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|±hh:mm]")
    g = match.groupdict()
    tz_text = g["tz"]
    zone: tzinfo = default_tz
    if tz_text == "Z":
        zone = UTC
    elif tz_text:
        sign = -1 if tz_text[0] == "-" else 1
        offset = timedelta(hours=int(tz_text[1:3]), minutes=int(tz_text[4:6]))
        if offset >= timedelta(hours=24):
            raise ValueError("invalid timezone offset")
        zone = timezone(sign * offset)
    fraction = (g["f"] or "")[:6]
    try:
        lower = datetime(
            int(g["y"]),
            int(g["mo"] or 1),
            int(g["d"] or 1),
            int(g["h"] or 0),
            int(g["mi"] or 0),
            int(g["s"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
        )
        if g["f"] is not None:
            precision, upper = "fraction", lower + timedelta(microseconds=10 ** (6 - len(fraction)))
        elif g["s"] is not None:
            precision, upper = "second", lower + timedelta(seconds=1)
        elif g["mi"] is not None:
            precision, upper = "minute", lower + timedelta(minutes=1)
        elif g["d"] is not None:
            precision, upper = "day", lower + timedelta(days=1)
        elif g["mo"] is not None:
            precision = "month"
            year, month = (
                (lower.year + 1, 1) if lower.month == 12 else (lower.year, lower.month + 1)
            )
            upper = lower.replace(year=year, month=month)
        else:
            precision, upper = "year", lower.replace(year=lower.year + 1)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid date ({exc})") from None
    return DateValue(prefix, lower.replace(tzinfo=zone), upper.replace(tzinfo=zone), precision)


def parse_reference(
    raw: str, type_modifier: str | None, targets: Sequence[str], base_url: str | None
) -> ReferenceValue | None:
    """Parse ``Type/id``, ``id`` or ``{base_url}/Type/id``; ``None`` for another server's URL."""
    text = unescape(raw)
    if base_url and text.startswith(base_url.rstrip("/") + "/"):
        text = text[len(base_url.rstrip("/")) + 1 :]
    elif "://" in text or text.startswith("urn:"):
        return None  # an absolute reference to another server never matches a local one
    text = re.sub(r"/_history/[^/]+$", "", text)
    kind, sep, ident = text.rpartition("/")
    ref_type = kind if sep else type_modifier
    if sep and not _RESOURCE_TYPE.fullmatch(kind):
        raise ValueError("expected Type/id or id")
    if type_modifier and ref_type != type_modifier:
        raise ValueError(f"type {ref_type} contradicts the :{type_modifier} modifier")
    if ref_type is not None and ref_type not in targets:
        raise ValueError(f"this parameter references {' or '.join(targets)}, not {ref_type}")
    if not FHIR_ID.fullmatch(ident):
        raise ValueError("not a valid resource id")
    if ref_type is None and len(targets) == 1:
        ref_type = targets[0]
    return ReferenceValue(ref_type, ident)


def parse_number(raw: str) -> NumberValue:
    prefix, text = _prefix(raw)
    if not _NUMBER.fullmatch(text):
        raise ValueError("not a number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("not a number") from None
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return NumberValue(prefix, value, value - half, value + half)


def parse_uri(raw: str, modifier: str | None) -> UriValue:
    text = unescape(raw)
    if not text or any(c.isspace() for c in text):
        raise ValueError("not a valid URI")
    return UriValue(text, below=modifier == "below")
