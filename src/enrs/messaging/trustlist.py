"""The national MSSanté trust list ("liste blanche"): read it, check its signature, look a
domain up.

MSSanté operators exchange mail only between the domains on the list the national authority
publishes as XML (namespace ``https://listeblanche.mssante.fr/schema``) with an enveloped
XML-DSig signature. :func:`parse_trust_list` returns a :class:`TrustList` only when:

- the document is at most ``max_bytes`` long and is well-formed XML, read by lxml with entity
  expansion, DTD loading and network access off and libxml2's size limits on (``huge_tree``
  off); a DOCTYPE of any kind is refused, so no entity is ever expanded and no file or URL read;
- its root is ``ListeBlanche`` in that namespace (the root's name is this module's
  :data:`ROOT_ELEMENT`; the namespace is what identifies the format);
- it carries a ``ds:Signature`` as a child of the root whose one reference covers the whole
  document (``URI=""``, enveloped), whose digest matches the content (a list changed after
  signing is refused), whose value verifies, and whose signing certificate (in ``X509Data``)
  is valid now and is one of the ``trusted`` certificates or chains up to one of them (the
  operator is given IGC-Santé's CA or the list signer's certificate). SHA-1 is refused. The
  checks are signxml's (5.x); only what the signature covers is read afterwards;
- ``DateDeGeneration`` is present and a date, there is at least one ``Domaine``, each ``Nom`` is
  a DNS host name (ASCII letters, digits and hyphens, labels of 1-63 characters, at least two
  labels; an internationalised name must be given in its ``xn--`` form) and no name is listed
  twice (compared case-insensitively, a trailing dot ignored).

Every refusal is a :class:`TrustListError` whose message says why. The other fields of a
``Domaine`` are optional: when one is missing or malformed (``DateMAJ`` that is not a date) the
domain is kept, the field is ``None`` and :attr:`TrustList.warnings` says so (lenient in: one
operator's missing contact must not shut the whole trust space). Dates are ISO 8601
(``2024-05-01``, ``2024-05-01T10:00:00+02:00``) or French ``DD/MM/YYYY[ HH:MM[:SS]]``; a date
without a time zone is French legal time (Europe/Paris). How old the list may be is the
caller's policy, not checked here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography import x509
from cryptography.x509.verification import ExtensionPolicy, Store
from lxml import etree
from signxml.exceptions import (
    InvalidCertificate,
    InvalidDigest,
    InvalidInput,
    InvalidSignature,
    SignXMLException,
)
from signxml.util import X509CertChainVerifier
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from enrs.kit.errors import Unprocessable

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT_ELEMENT = "ListeBlanche"
MAX_BYTES = 5_000_000  # ~320 domains take well under 1 MB
_DS = "http://www.w3.org/2000/09/xmldsig#"
_PARIS = ZoneInfo("Europe/Paris")


class TrustListError(Unprocessable):
    """The trust list is refused; the message says why."""

    issue_code = "invalid"


@dataclass(frozen=True)
class TrustedDomain:
    """One ``Domaine`` of the list. ``name`` is lower case, without a trailing dot."""

    name: str
    description: str | None
    operator_dn: str | None  # DNCertificatOperateur, as listed
    responsible_contact: str | None
    support_contact: str | None
    updated: datetime | None  # DateMAJ


@dataclass(frozen=True)
class TrustList:
    """A verified trust list: only what its signature covers."""

    generated: datetime
    domains: tuple[TrustedDomain, ...]
    warnings: tuple[str, ...] = ()
    _index: dict[str, TrustedDomain] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {d.name: d for d in self.domains})

    def lookup(self, domain: str) -> TrustedDomain | None:
        """The listed domain ``domain`` (case-insensitive, a trailing dot ignored), or ``None``:
        a domain not listed is not part of the trust space."""
        return self._index.get(normalise_domain(domain))

    def operator_dn_matches(self, domain: str, dn: str | x509.Name) -> bool:
        """Whether ``dn`` (a certificate subject, as an :class:`x509.Name` or a string) is the
        operator DN listed for ``domain``. False when the domain is not listed, has no DN, or
        either DN cannot be read. See :func:`dn_equal` for what is tolerated."""
        listed = self.lookup(domain)
        if listed is None or listed.operator_dn is None:
            return False
        return dn_equal(listed.operator_dn, dn)


def parse_trust_list(
    data: bytes,
    trusted: Sequence[x509.Certificate | bytes],
    *,
    max_bytes: int = MAX_BYTES,
    at: datetime | None = None,
) -> TrustList:
    """Verify and read the national trust list ``data`` (see the module docstring).

    ``trusted``: the certificates (objects or PEM) the signer must be, or chain up to.
    ``at``: when the signer's certificate must be valid (now by default).
    Raises :class:`TrustListError` for every refusal.
    """
    anchors = _load_certificates(trusted)
    if len(data) > max_bytes:
        raise TrustListError(
            f"the trust list has {len(data):,} bytes; at most {max_bytes:,} are accepted"
        )
    root = _parse_xml(data)
    _check_root(root)
    if root.find(f"{{{_DS}}}Signature") is None:
        raise TrustListError("the trust list is not signed (no ds:Signature under the root)")
    signed = _verified_content(data, anchors, at)
    return _read_list(signed)


# --- XML and signature --------------------------------------------------------------------


def _parser() -> Any:
    # One parser per call: an lxml parser is not shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def _load_certificates(trusted: Sequence[x509.Certificate | bytes]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for item in trusted:
        if isinstance(item, x509.Certificate):
            certs.append(item)
        else:
            try:
                certs.extend(x509.load_pem_x509_certificates(item))
            except ValueError as exc:
                raise TrustListError(f"a trusted certificate is not PEM: {exc}") from None
    if not certs:
        raise TrustListError("no trusted certificate given: the signature cannot be checked")
    return certs


_DOCTYPE_MARKERS = tuple("<!DOCTYPE".encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be"))
_DOCTYPE_REFUSED = "the trust list has a DOCTYPE (DTD or entities): refused, nothing expanded"


def _parse_xml(data: bytes) -> Any:
    if not data.strip():
        raise TrustListError("the trust list is not XML: the document is empty")
    if any(marker in data for marker in _DOCTYPE_MARKERS):
        # Before parsing: libxml2 would still weigh the entities of a "billion laughs" (and
        # stop it as a syntax error); the list has no use for a DOCTYPE, say so plainly.
        raise TrustListError(_DOCTYPE_REFUSED)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise TrustListError(f"the trust list is not XML: line {exc.lineno}: {exc.msg}") from None
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or any(True for _ in root.iter(etree.Entity)):
        raise TrustListError(_DOCTYPE_REFUSED)
    return root


def _check_root(root: Any) -> None:
    qname = etree.QName(root)
    if qname.localname != ROOT_ELEMENT:
        raise TrustListError(
            f"not an MSSanté trust list: the root element is {qname.localname!r}, "
            f"{ROOT_ELEMENT!r} is expected"
        )
    if qname.namespace != NAMESPACE:
        where = f"in the namespace {qname.namespace!r}" if qname.namespace else "in no namespace"
        raise TrustListError(
            f"not an MSSanté trust list: its root is {where}, {NAMESPACE} is required"
        )


class _InMemoryChainVerifier(X509CertChainVerifier):
    """signxml's chain check (its extension policies) over certificates held in memory;
    signxml itself reads its store from a PEM file."""

    def __init__(
        self,
        anchors: list[x509.Certificate],
        verification_time: datetime,
        ee_policy: ExtensionPolicy | None,
        ca_policy: ExtensionPolicy | None,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            ca_pem_file="-", verification_time=verification_time, ee_policy=ee_policy,
            ca_policy=ca_policy,
        )  # fmt: skip
        self._anchors = anchors

    @property
    def store(self) -> Store:
        return Store(self._anchors)


class _Verifier(XMLVerifier):
    def __init__(self, anchors: list[x509.Certificate]) -> None:
        super().__init__()
        self._anchors = anchors

    def get_cert_chain_verifier(
        self, ca_pem_file: Any, ee_policy: Any, ca_policy: Any
    ) -> X509CertChainVerifier:
        at = self.config.verification_time or datetime.now(UTC)
        return _InMemoryChainVerifier(self._anchors, at, ee_policy, ca_policy)


def _verified_content(data: bytes, anchors: list[x509.Certificate], at: datetime | None) -> Any:
    """The signed document (the root without its signature), as the signature covers it."""
    config = SignatureConfiguration(location="./", expect_references=1, verification_time=at)
    try:
        result = _Verifier(anchors).verify(data, parser=_parser(), expect_config=config)
    except InvalidDigest:
        raise TrustListError(
            "the trust list's signature does not match its content: "
            "the list was changed after it was signed"
        ) from None
    except InvalidCertificate as exc:
        raise TrustListError(f"the trust list's signer is not trusted: {exc}") from None
    except InvalidSignature as exc:
        raise TrustListError(f"the trust list's signature is not valid: {exc}") from None
    except (InvalidInput, SignXMLException, ValueError, etree.LxmlError) as exc:
        raise TrustListError(f"the trust list's signature cannot be checked: {exc}") from None
    signed = result.signed_xml if isinstance(result, VerifyResult) else None
    if signed is None or signed.tag != f"{{{NAMESPACE}}}{ROOT_ELEMENT}":
        raise TrustListError(
            "the trust list's signature does not cover the whole document "
            "(an enveloped Reference with an empty URI is required)"
        )
    return signed


# --- content --------------------------------------------------------------------------------


def _read_list(root: Any) -> TrustList:
    warnings: list[str] = []
    generated_text = _text(root, "DateDeGeneration")
    if generated_text is None:
        raise TrustListError("the trust list has no generation date (DateDeGeneration)")
    generated = _parse_datetime(generated_text)
    if generated is None:
        raise TrustListError(f"the trust list's DateDeGeneration is not a date: {generated_text!r}")
    domains: list[TrustedDomain] = []
    seen: set[str] = set()
    for position, element in enumerate(_elements(root, "Domaine"), start=1):
        domain = _read_domain(element, position, warnings)
        if domain.name in seen:
            raise TrustListError(f"the trust list names the domain {domain.name!r} twice")
        seen.add(domain.name)
        domains.append(domain)
    if not domains:
        raise TrustListError("the trust list has no domain (no Domaine element)")
    return TrustList(generated=generated, domains=tuple(domains), warnings=tuple(warnings))


def _read_domain(element: Any, position: int, warnings: list[str]) -> TrustedDomain:
    raw_name = _text(element, "Nom")
    if raw_name is None:
        raise TrustListError(f"the trust list's Domaine #{position} has no Nom")
    name = dns_name(raw_name)
    if name is None:
        raise TrustListError(
            f"the trust list's Domaine #{position} has a Nom that is not a DNS name: {raw_name!r}"
        )
    fields = {
        tag: _text(element, tag)
        for tag in ("Description", "DNCertificatOperateur", "ResponsableContact", "SupportContact")
    }
    for tag, value in fields.items():
        if value is None:
            warnings.append(f"{name}: no {tag}")
    updated_text = _text(element, "DateMAJ")
    updated = _parse_datetime(updated_text) if updated_text is not None else None
    if updated_text is None:
        warnings.append(f"{name}: no DateMAJ")
    elif updated is None:
        warnings.append(f"{name}: DateMAJ is not a date ({updated_text!r}), ignored")
    return TrustedDomain(
        name=name,
        description=fields["Description"],
        operator_dn=fields["DNCertificatOperateur"],
        responsible_contact=fields["ResponsableContact"],
        support_contact=fields["SupportContact"],
        updated=updated,
    )


def _elements(parent: Any, name: str) -> Iterator[Any]:
    """Descendants named ``name`` in the list's namespace (or, leniently, in none)."""
    yield from parent.iter(f"{{{NAMESPACE}}}{name}", name)


def _text(parent: Any, name: str) -> str | None:
    """The stripped text of the first child ``name``; ``None`` when absent or blank."""
    for child in parent:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            if etree.QName(child).namespace not in (NAMESPACE, None):
                continue
            text = "".join(child.itertext()).strip()
            return text or None
    return None


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalise_domain(domain: str) -> str:
    return domain.strip().lower().removesuffix(".")


def dns_name(raw: str) -> str | None:
    """``raw`` lower-cased without its trailing dot if it is a DNS host name, else ``None``."""
    name = normalise_domain(raw)
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or labels[-1].isdigit():
        return None
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return name


_FRENCH_DATE = re.compile(
    r"(?P<d>\d{2})/(?P<m>\d{2})/(?P<y>\d{4})(?:[ T](?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?"
)


def _parse_datetime(text: str) -> datetime | None:
    """An ISO 8601 or ``DD/MM/YYYY[ HH:MM[:SS]]`` date-time; naive means Europe/Paris."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        match = _FRENCH_DATE.fullmatch(text)
        if match is None:
            return None
        parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        try:
            value = datetime(
                parts["y"], parts["m"], parts["d"],
                parts.get("H", 0), parts.get("M", 0), parts.get("S", 0),
            )  # fmt: skip
        except ValueError:
            return None
    return value if value.tzinfo is not None else value.replace(tzinfo=_PARIS)


# --- distinguished names --------------------------------------------------------------------

_ATTRIBUTE_TYPES = {
    "CN": ("2.5.4.3", "COMMONNAME"),
    "SN": ("2.5.4.4", "SURNAME"),
    "SERIALNUMBER": ("2.5.4.5",),
    "C": ("2.5.4.6", "COUNTRYNAME"),
    "L": ("2.5.4.7", "LOCALITYNAME"),
    "ST": ("2.5.4.8", "S", "STATEORPROVINCENAME"),
    "STREET": ("2.5.4.9", "STREETADDRESS"),
    "O": ("2.5.4.10", "ORGANIZATIONNAME"),
    "OU": ("2.5.4.11", "ORGANIZATIONALUNITNAME"),
    "TITLE": ("2.5.4.12",),
    "GIVENNAME": ("2.5.4.42", "GN"),
    "ORGANIZATIONIDENTIFIER": ("2.5.4.97",),
    "UID": ("0.9.2342.19200300.100.1.1", "USERID"),
    "DC": ("0.9.2342.19200300.100.1.25", "DOMAINCOMPONENT"),
    "EMAILADDRESS": ("1.2.840.113549.1.9.1", "E", "EMAIL"),
}
_TYPE_ALIASES = {
    alias: name for name, aliases in _ATTRIBUTE_TYPES.items() for alias in (name, *aliases)
}


def dn_equal(left: str | x509.Name, right: str | x509.Name) -> bool:
    """Whether two distinguished names name the same subject, tolerating the differences seen
    between an RFC 4514 string (``CN=a,OU=b,O=c,C=FR``, as ``x509.Name.rfc4514_string()`` gives
    it) and the form a list or a person writes:

    - attribute order (RFC 4514's most-specific-first or X.500's ``C=FR,...,CN=a``) and RDN
      grouping (``+`` multi-valued RDNs count as separate attributes);
    - separators ``,`` or ``;``, or OpenSSL's ``/C=FR/O=c/CN=a`` form, spaces around them and
      around ``=``;
    - attribute type spelling: case, dotted OIDs (``2.5.4.3``, ``OID.2.5.4.3``) and the usual
      aliases (``S``/``ST``, ``E``/``emailAddress``);
    - values: RFC 4514 escapes (``\\,``, ``\\2C``), case (compared case-folded, NFKC), runs of
      spaces collapsed and leading/trailing spaces dropped.

    Not tolerated: a different set of attributes or values, a value with an unescaped ``,`` in
    the comma form, RFC 1779 quoted values. A DN that cannot be read equals nothing.
    """
    left_key, right_key = _dn_key(left), _dn_key(right)
    return left_key is not None and left_key == right_key


def common_names(dn: str) -> list[str]:
    """The CN values of ``dn`` (any form :func:`dn_equal` reads), normalised as it compares
    them (case-folded, NFKC, spaces collapsed); none when it cannot be read."""
    key = _dn_key(dn)
    return [] if key is None else [value for kind, value in key if kind == "CN"]


def same_value(left: str, right: str) -> bool:
    """Two attribute values equal as :func:`dn_equal` compares them."""
    return _normalise_value(left) == _normalise_value(right)


def _dn_key(dn: str | x509.Name) -> tuple[tuple[str, str], ...] | None:
    text = dn.rfc4514_string() if isinstance(dn, x509.Name) else dn.strip()
    if not text:
        return None
    slashed = text.startswith("/")  # OpenSSL's one-line form
    rdns = _split_unescaped(text[1:], "/") if slashed else _split_unescaped(text, ",;")
    attributes: list[tuple[str, str]] = []
    for rdn in rdns:
        for attribute in _split_unescaped(rdn, "+"):
            kind, equals, value = attribute.partition("=")
            kind = kind.strip().upper().removeprefix("OID.")
            if not equals or not kind:
                return None
            attributes.append((_TYPE_ALIASES.get(kind, kind), _normalise_value(value)))
    return tuple(sorted(attributes))


def _split_unescaped(text: str, separators: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if char in separators:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


_HEX_PAIR = re.compile(r"[0-9a-fA-F]{2}")


def _normalise_value(value: str) -> str:
    """RFC 4514 escapes undone (``\\HH`` pairs are UTF-8 bytes), NFKC, case-folded, spaces
    collapsed."""
    raw = bytearray()
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and _HEX_PAIR.fullmatch(value[index + 1 : index + 3]):
            raw += bytes.fromhex(value[index + 1 : index + 3])
            index += 3
            continue
        if char == "\\" and index + 1 < len(value):
            char = value[index + 1]
            index += 1
        raw += char.encode()
        index += 1
    text = unicodedata.normalize("NFKC", raw.decode("utf-8", errors="replace"))
    return " ".join(text.casefold().split())
