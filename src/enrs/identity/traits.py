"""Identity traits: INS checks (RNIV / INS rules) and the normalisation used for matching.

Names are kept as entered (hyphens, apostrophes, upper case, as on the identity document);
matching compares normalised forms: upper case, accents removed, hyphens and apostrophes as
spaces, white space collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from stdnum.fr import nir

from enrs.kit.errors import Unprocessable

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_TEST_NIR_OID = "1.2.250.1.213.1.4.10"
INS_DEMO_NIR_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_TEST_NIR_OID, INS_DEMO_NIR_OID})
STATUSES = ("PROV", "RECUP", "VALI", "QUAL")
ATTRIBUTES = frozenset({"DOUT", "FICT", "HOMA"})
SEXES = frozenset({"M", "F", "U"})
_SPACES = re.compile(r"\s+")
_INSEE = re.compile(r"^(\d{5}|2[AB]\d{3})$")


def normalize_name(value: str | None) -> str:
    """``"d'Arc-Éléonore "`` → ``"D ARC ELEONORE"``."""
    if not value:
        return ""
    decomposed = unicodedata.normalize("NFKD", value)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    cleaned = re.sub(r"[-'’`.,]", " ", ascii_only.upper())
    return _SPACES.sub(" ", cleaned).strip()


def check_ins(value: str, system: str) -> str:
    """Validate a matricule INS (NIR or NIA) and its OID; returns it without spaces.

    The key is 97 − (the 13 first characters as a number, mod 97), Corsica's 2A / 2B counting
    as 19 / 18 (``python-stdnum``). Raises :class:`Unprocessable` with the reason."""
    compact = value.replace(" ", "").upper()
    if system not in INS_OIDS:
        raise Unprocessable(f"unknown INS system {system!r} (expected an INS-NIR or INS-NIA OID)")
    if not nir.is_valid(compact):
        raise Unprocessable(f"INS {compact!r} is not valid: its key does not check")
    return compact


def check_traits(
    *,
    status: str,
    attributes: frozenset[str],
    sex: str,
    birth_date: date | None,
    birth_place: str | None,
    ins: str | None,
) -> None:
    """The RNIV coherence rules on a source identity; raises :class:`Unprocessable`."""
    if status not in STATUSES:
        raise Unprocessable(f"identity status {status!r} is not one of {', '.join(STATUSES)}")
    unknown = attributes - ATTRIBUTES
    if unknown:
        raise Unprocessable(f"unknown identity attribute(s): {', '.join(sorted(unknown))}")
    if {"DOUT", "FICT"} <= attributes:
        raise Unprocessable("an identity cannot be both douteuse (DOUT) and fictive (FICT)")
    if attributes & {"DOUT", "FICT"} and status != "PROV":
        raise Unprocessable("a douteuse or fictive identity stays provisoire (PROV)")
    if status in ("RECUP", "QUAL") and not ins:
        raise Unprocessable(f"a {status} identity comes from INSi and carries its INS")
    if sex not in SEXES:
        raise Unprocessable(f"sex {sex!r} is not one of M, F, U")
    if birth_date is not None and birth_date > date.today():
        raise Unprocessable("the birth date is in the future")
    if birth_place is not None and not _INSEE.match(birth_place):
        raise Unprocessable(f"birth place {birth_place!r} is not an INSEE COG code")
