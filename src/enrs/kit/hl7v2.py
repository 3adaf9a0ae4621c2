"""HL7 v2 messages for the protocol edges, read leniently and answered strictly (house habit
11); domain-free: services read their segments with it and compose their own answers.

- :func:`parse_message` reads a message whatever its segment separators (CR, LF, CR LF), drops
  bytes before MSH and lines that are not segments, completes an incomplete MSH-2 and decodes
  the text per MSH-18 (undeclared: UTF-8, else ISO 8859-1); what it repaired is listed in
  :attr:`Message.repairs`; no usable MSH: :class:`V2Error` (AR);
- :class:`Segment` and :class:`Value` read a field by repetition, component and subcomponent,
  unescaped (HL7 v2.5 section 2.7), the HL7 null ``""`` read as empty;
- :func:`build_response` composes the answer (MSH, MSA, one ERR per :class:`V2Error` with its
  HL7 table 0357 code, then a body), with the standard delimiters, in the request's charset;
  :func:`error_ack` is the answer of a handler that failed (AR 207).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

# HL7 table 0357, message error condition codes.
ERROR_CODES = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
# MSH-18 character sets (HL7 table 0211) and the Python codecs that read them.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}


class V2Error(Exception):
    """A message we refuse: ``ack`` ``AR`` (rejected) or ``AE`` (error), an HL7 table 0357
    ``code``, the ``location`` as an ERL (``PID^1^3``), and a human ``text`` (ERR-8);
    ``severity`` (ERR-4, table 0516): ``E`` error, ``W`` warning (see :func:`warning`)."""

    def __init__(
        self, code: int, text: str, *, ack: str = "AR", location: str = "", severity: str = "E"
    ) -> None:
        super().__init__(text)
        self.code, self.text, self.ack, self.location = code, text, ack, location
        self.severity = severity

    def segment(self) -> str:
        cwe = f"{self.code}^{ERROR_CODES.get(self.code, 'Error')}^HL70357"
        return f"ERR||{self.location}|{cwe}|{self.severity}||||{STANDARD.escape(self.text)}"


_FIELD_NOTE = re.compile(r"\b([A-Z][A-Z0-9]{2})-(\d+)\b")


def warning(note: str) -> V2Error:
    """What was repaired in a message, as an ERR of severity ``W`` (code 0, message accepted)
    for its acknowledgement; located at the first field the note names (``PID-5: …`` →
    ``PID^1^5``), else at no field (a repair of the whole message, e.g. its separators)."""
    field = _FIELD_NOTE.search(note)
    location = f"{field.group(1)}^1^{field.group(2)}" if field else ""
    return V2Error(0, note, ack="AA", location=location, severity="W")


@dataclass(frozen=True)
class Encoding:
    """The delimiters of a message (MSH-1, MSH-2) and HL7 escape sequences."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape_char: str = "\\"
    subcomponent: str = "&"

    def escape(self, value: str) -> str:
        e = self.escape_char
        out = value.replace(e, f"{e}E{e}")
        for char, code in (
            (self.field, "F"),
            (self.component, "S"),
            (self.subcomponent, "T"),
            (self.repetition, "R"),
        ):
            out = out.replace(char, f"{e}{code}{e}")
        return out.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")

    def unescape(self, value: str) -> str:
        e = self.escape_char
        if not e or e not in value:
            return value
        out: list[str] = []
        i = 0
        while i < len(value):
            end = value.find(e, i + 1) if value[i] == e else -1
            if end < 0:
                out.append(value[i])
                i += 1
                continue
            out.append(self._sequence(value[i + 1 : end]))
            i = end + 1
        return "".join(out)

    def _sequence(self, code: str) -> str:
        simple = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape_char,
            ".br": "\n",
        }
        if code in simple:
            return simple[code]
        if code[:1] == "X":
            with contextlib.suppress(ValueError):
                return bytes.fromhex(code[1:]).decode("latin-1")
        if code[:1] in ("H", "N", "C", "M", "Z"):
            return ""  # highlighting and character-set switches carry no text
        return f"{self.escape_char}{code}{self.escape_char}"


STANDARD = Encoding()


@dataclass(frozen=True)
class Value:
    """One repetition of a field, read by component and subcomponent (1-based, unescaped;
    the HL7 null ``""`` reads as empty)."""

    raw: str
    enc: Encoding

    def get(self, comp: int = 1, sub: int = 1) -> str:
        comps = self.raw.split(self.enc.component)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(self.enc.subcomponent)
        if sub > len(subs):
            return ""
        text = subs[sub - 1]
        return "" if text == '""' else self.enc.unescape(text).strip()

    def standard(self) -> str:
        """This value written with the standard delimiters."""
        if self.enc == STANDARD:
            return self.raw
        return "^".join(
            "&".join(STANDARD.escape(self.enc.unescape(s)) for s in c.split(self.enc.subcomponent))
            for c in self.raw.split(self.enc.component)
        )


@dataclass(frozen=True)
class Segment:
    """A segment; ``fields[n]`` is field n (for MSH, ``fields[1]`` is the field separator)."""

    name: str
    fields: tuple[str, ...]
    enc: Encoding

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[Value]:
        raw = self.raw(n)
        if self.name == "MSH" and n in (1, 2):
            return [Value(raw, Encoding(component="\x00", subcomponent="\x00", escape_char=""))]
        return [Value(r, self.enc) for r in raw.split(self.enc.repetition) if r]

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        reps = self.reps(n)
        return reps[rep - 1].get(comp, sub) if rep <= len(reps) else ""

    def standard(self, n: int) -> str:
        """Field n written with the standard delimiters (for echoing it in an answer)."""
        return "~".join(r.standard() for r in self.reps(n))

    def text(self) -> str:
        """The whole segment with the standard delimiters."""
        if self.name == "MSH":
            return "MSH|^~\\&|" + "|".join(self.standard(n) for n in range(3, len(self.fields)))
        return "|".join([self.name, *(self.standard(n) for n in range(1, len(self.fields)))])


@dataclass
class Message:
    """A parsed message: its segments, its charset (MSH-18) and what the parser repaired."""

    segments: list[Segment]
    enc: Encoding
    codec: str
    repairs: list[str] = field(default_factory=list)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    @property
    def message_type(self) -> str:
        return self.msh.get(9, 1)

    @property
    def event(self) -> str:
        return self.msh.get(9, 2)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)


def _charset(raw: bytes) -> str:
    """MSH-18 (first repetition), read before decoding: the header is ASCII."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return ""
    end = min((i for i in (raw.find(b"\r", start), raw.find(b"\n", start)) if i >= 0), default=-1)
    line = raw[start:end] if end >= 0 else raw[start:]
    fs, rep, comp = line[3:4], line[5:6], line[4:5]
    parts = line.split(fs)
    if len(parts) < 18:
        return ""
    value = parts[17].split(rep)[0] if rep else parts[17]
    return value.split(comp)[0].decode("latin-1").strip().upper() if comp else ""


def decode(raw: bytes, repairs: list[str]) -> tuple[str, str]:
    """Text and codec of ``raw``, per MSH-18; undeclared: UTF-8, else ISO 8859-1."""
    declared = _charset(raw)
    codec = CHARSETS.get(declared)
    if declared and codec is None:
        repairs.append(f"unknown character set {declared!r} in MSH-18")
    if codec is not None:
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            repairs.append(f"message is not valid {declared}")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        if not declared:
            repairs.append("no MSH-18 and not UTF-8: read as ISO 8859-1")
        return raw.decode("latin-1"), "latin-1"


def parse_message(raw: bytes) -> Message:
    """Parse an HL7 v2 message leniently; :class:`V2Error` (AR) when there is no usable MSH.

    Repairs (reported in ``Message.repairs``): LF or CR LF segment separators, bytes before
    MSH, a byte-order mark, lines that are not segments, an incomplete MSH-2."""
    repairs: list[str] = []
    text, codec = decode(raw, repairs)
    if "\n" in text:
        repairs.append("segments separated by LF or CR LF")
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    start = text.find("MSH")
    if start < 0:
        raise V2Error(100, "no MSH segment: this is not an HL7 v2 message", location="MSH")
    if text[:start].strip("\ufeff\r\t "):
        repairs.append(f"{start} character(s) before MSH ignored")
    text = text[start:]
    if len(text) < 8 or text[3].isalnum() or text[3].isspace():
        raise V2Error(102, "MSH-1 and MSH-2 (delimiters) are missing", location="MSH^1^1")
    fs = text[3]
    chars = text[4:].split(fs, 1)[0]
    if len(chars) < 4:
        repairs.append(f"MSH-2 {chars!r} completed with the standard delimiters")
        chars = chars + "^~\\&"[len(chars) :]
    enc = Encoding(fs, chars[0], chars[1], chars[2], chars[3])
    segments: list[Segment] = []
    for number, line in enumerate(text.split("\r"), start=1):
        if not line.strip():
            continue
        name = line[:3]
        if (len(line) > 3 and line[3] != fs) or not name.isalnum() or not name.isupper():
            repairs.append(f"line {number} ignored: not a segment")
            continue
        parts = line.split(fs)
        if name == "MSH":
            if segments:
                repairs.append(f"line {number} ignored: a second MSH")
                continue
            parts.insert(1, fs)
        segments.append(Segment(name, tuple(parts), enc))
    return Message(segments, enc, codec, repairs)


def now_ts() -> str:
    return time.strftime("%Y%m%d%H%M%S%z")


def build_response(
    request: Message | None,
    ack_code: str,
    *,
    message_type: str | None = None,
    errors: Sequence[V2Error] = (),
    body: Sequence[str] = (),
    application: tuple[str, str] = ("ENRS", "ENRS"),
) -> bytes:
    """The answer to ``request``: MSH (sender and receiver swapped, a new control id, the same
    processing id, version and charset), MSA (MSA-2 = the request's MSH-10), one ERR per error,
    then ``body``. Encoded in the request's charset."""
    msh = request.msh if request is not None else None
    event = request.event if request is not None else ""

    def echo(n: int, default: str = "") -> str:
        return (msh.standard(n) if msh is not None else "") or default

    if message_type is None:
        message_type = f"ACK^{STANDARD.escape(event)}^ACK" if event else "ACK"
    header = [
        "MSH",
        "^~\\&",
        echo(5, STANDARD.escape(application[0])),
        echo(6, STANDARD.escape(application[1])),
        echo(3),
        echo(4),
        now_ts(),
        "",
        message_type,
        secrets.token_hex(10).upper(),
        echo(11, "P"),
        echo(12, "2.5"),
        "",
        "",
        "",
        "",
        echo(17),
        echo(18),
    ]
    while header[-1] == "":
        header.pop()
    control = STANDARD.escape(request.control_id) if request is not None else ""
    lines = ["|".join(header), f"MSA|{ack_code}|{control}"]
    lines += [e.segment() for e in errors]
    lines += body
    codec = request.codec if request is not None else "utf-8"
    return ("\r".join(lines) + "\r").encode(codec, errors="replace")


def error_ack(payload: bytes, exc: BaseException) -> bytes | None:
    """Default fallback: ``AR`` 207 when the header can be read, else ``None`` (close)."""
    try:
        request = parse_message(payload)
    except Exception:
        return None
    error = V2Error(207, f"application internal error ({type(exc).__name__})")
    return build_response(request, "AR", errors=[error])
