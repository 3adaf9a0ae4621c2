"""Identity traits: INS checks (RNIV / INS rules) and the normalisation used for matching.

Names are kept as entered (hyphens, apostrophes, upper case, as on the identity document);
matching compares normalised forms: upper case, accents removed, hyphens and apostrophes as
spaces, white space collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import lru_cache

from abydos.phonetic import FONEM
from stdnum.exceptions import InvalidChecksum, InvalidLength
from stdnum.fr import nir

from enrs.kit.errors import Unprocessable

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_TEST_NIR_OID = "1.2.250.1.213.1.4.10"
INS_DEMO_NIR_OID = "1.2.250.1.213.1.4.11"
INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_TEST_NIR_OID, INS_DEMO_NIR_OID})
PRODUCTION_INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID})
"""The INS OIDs of real persons; the test and demo OIDs are accepted in development only
(``IdentityConfig.accepted_ins``)."""
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


_FONEM = FONEM()
PHONETIC_LENGTH = 64


@lru_cache(maxsize=65536)
def phonetic(name: str) -> str:
    """The French phonetic key of a normalised name: FONEM (Bouchard and Pouyez, written for
    French names; abydos' implementation), so that ``LEFEBVRE`` and ``LEFEVRE``, ``PHILIPPE``
    and ``FILIPE``, ``GAUTHIER`` and ``GAUTIER`` share a key. ``''`` for ``''`` only (a name
    FONEM reduces to nothing, ``H``, is its own key): names spelt alike always share a key."""
    return (str(_FONEM.encode(name)) or name)[:PHONETIC_LENGTH] if name else ""


_DIGITS = re.compile(r"\D")
PHONE_DIGITS = 9


def normalize_phone(value: str | None) -> str:
    """A phone number's last nine digits, ``''`` when it has fewer: the French national
    number without its trunk 0 or country code, the same for ``06 90 12 34 56``,
    ``+590 690 12 34 56`` and ``0033 6 90…`` (overseas numbers keep their 590/594/596/262
    prefix in both forms). ``''`` too for what is typed when the number is unknown (one digit
    repeated, ``0123456789``): thousands of identities would share it."""
    digits = _DIGITS.sub("", value or "")
    last = digits[-PHONE_DIGITS:]
    if len(digits) < PHONE_DIGITS or len(set(last)) == 1 or last in _COUNTING:
        return ""
    return last


_COUNTING = frozenset({"123456789", "012345678", "987654321", "876543210"})
_UNKNOWN_ADDRESS = re.compile(
    r"^(ADRESSE )?(INCONNUE?|SDF|SANS DOMICILE( FIXE)?|NEANT|NON RENSEIGNEE?|X+|0+)$"
)


def normalize_email(value: str | None) -> str:
    return (value or "").strip().lower()


# Street-type abbreviations of the postal address standard (AFNOR NF Z10-011), spelt out.
_STREET_WORDS = {
    "ALL": "ALLEE",
    "AV": "AVENUE",
    "AVE": "AVENUE",
    "BD": "BOULEVARD",
    "BLD": "BOULEVARD",
    "CHE": "CHEMIN",
    "CHEM": "CHEMIN",
    "CRS": "COURS",
    "FG": "FAUBOURG",
    "HAM": "HAMEAU",
    "IMP": "IMPASSE",
    "LOT": "LOTISSEMENT",
    "PL": "PLACE",
    "QU": "QUAI",
    "R": "RUE",
    "RES": "RESIDENCE",
    "RTE": "ROUTE",
    "SQ": "SQUARE",
    "ST": "SAINT",
    "STE": "SAINTE",
}


def normalize_address(value: str | None) -> str:
    """An address line as compared: :func:`normalize_name`, street types spelt out
    (``BD`` → ``BOULEVARD``, ``ST`` → ``SAINT``); ``''`` for one that says the address is
    unknown (``INCONNUE``, ``SDF``, ``XXX``), which many identities share."""
    line = " ".join(_STREET_WORDS.get(w, w) for w in normalize_name(value).split())
    return "" if _UNKNOWN_ADDRESS.match(line) else line


def normalize_city(value: str | None) -> str:
    """A city as compared: :func:`normalize_name` with ``ST`` / ``STE`` spelt out and the
    ``CEDEX`` suffix dropped."""
    words = [_STREET_WORDS[w] if w in ("ST", "STE") else w for w in normalize_name(value).split()]
    if "CEDEX" in words:
        words = words[: words.index("CEDEX")]
    return " ".join(words)


class InvalidTrait(Unprocessable):
    """A trait the identity rules refuse; ``field`` names it (a ``SourceIdentityIn`` field), so
    that each protocol can point at it (FHIRPath, ERR-2)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_ins(value: str, system: str, accepted: frozenset[str]) -> str:
    """Validate a matricule INS (NIR or NIA) and its OID, one of ``accepted``; returns it
    without spaces.

    The key is 97 − (the 13 first characters as a number, mod 97), Corsica's 2A / 2B counting
    as 19 / 18 (``python-stdnum``). Raises :class:`InvalidTrait` with the reason: an unknown
    OID, a test or demo INS outside development (not in ``accepted``), a key that does not
    check."""
    compact = value.replace(" ", "").upper()
    if system not in INS_OIDS:
        raise InvalidTrait(
            f"unknown INS system {system!r} (expected an INS-NIR or INS-NIA OID)", "ins"
        )
    if system not in accepted:
        raise InvalidTrait(
            f"INS of the test or demo OID {system} refused: allowed in development only (ENRS_DEV)",
            "ins",
        )
    try:
        nir.validate(compact)
    except InvalidLength:
        raise InvalidTrait(
            f"INS {compact!r} is not valid: an INS has 15 characters, not {len(compact)}", "ins"
        ) from None
    except InvalidChecksum:
        raise InvalidTrait(f"INS {compact!r} is not valid: its key does not check", "ins") from None
    except ValueError:  # stdnum's InvalidFormat
        raise InvalidTrait(
            f"INS {compact!r} is not valid: 13 digits (2A or 2B for Corsica) and a 2-digit key "
            "expected",
            "ins",
        ) from None
    return compact


_INS_SEX = {"1": "M", "2": "F"}
_MONTHS = {f"{m:02d}" for m in range(1, 13)}


def check_ins_traits(ins: str, *, sex: str, birth_date: date | None) -> None:
    """The traits a matricule INS encodes agree with the identity's: its first digit, 1 or 2,
    with the sex (M or F); its 2nd–3rd digits with the birth year; its 4th–5th, when a real
    month (01–12: 20, 30–42 and 50+ stand for a month unknown to the civil register), with
    the birth month. Other first digits and an unknown sex (U) are not checked; the birth
    place is not (a commune's code changes, the order number overflows into it, births in
    Algeria before 1962 have codes of their own). Raises :class:`InvalidTrait` naming the
    trait that disagrees."""
    encoded = _INS_SEX.get(ins[0])
    if encoded is not None and sex in ("M", "F") and sex != encoded:
        raise InvalidTrait(
            f"INS {ins} is that of a person of sex {encoded} (first digit {ins[0]}), "
            f"the identity's sex is {sex}",
            "sex",
        )
    if birth_date is None:
        return
    if ins[1:3] != f"{birth_date.year % 100:02d}":
        raise InvalidTrait(
            f"INS {ins} is that of a person born in a year ending in {ins[1:3]}, "
            f"the identity's birth date is {birth_date.isoformat()}",
            "birth_date",
        )
    if ins[3:5] in _MONTHS and int(ins[3:5]) != birth_date.month:
        raise InvalidTrait(
            f"INS {ins} is that of a person born in month {ins[3:5]}, "
            f"the identity's birth date is {birth_date.isoformat()}",
            "birth_date",
        )


def check_traits(
    *,
    status: str,
    attributes: frozenset[str],
    sex: str,
    birth_date: date | None,
    birth_place: str | None,
    ins: str | None,
) -> None:
    """The RNIV coherence rules on a source identity, and its INS against the traits it
    encodes (:func:`check_ins_traits`); raises :class:`InvalidTrait`."""
    if status not in STATUSES:
        raise InvalidTrait(
            f"identity status {status!r} is not one of {', '.join(STATUSES)}", "status"
        )
    unknown = attributes - ATTRIBUTES
    if unknown:
        raise InvalidTrait(
            f"unknown identity attribute(s): {', '.join(sorted(unknown))}", "attributes"
        )
    if {"DOUT", "FICT"} <= attributes:
        raise InvalidTrait(
            "an identity cannot be both douteuse (DOUT) and fictive (FICT)", "attributes"
        )
    if attributes & {"DOUT", "FICT"} and status != "PROV":
        raise InvalidTrait("a douteuse or fictive identity stays provisoire (PROV)", "status")
    if status in ("RECUP", "QUAL") and not ins:
        raise InvalidTrait(f"a {status} identity comes from INSi and carries its INS", "ins")
    if sex not in SEXES:
        raise InvalidTrait(f"sex {sex!r} is not one of M, F, U", "sex")
    if birth_date is not None and birth_date > date.today():
        raise InvalidTrait("the birth date is in the future", "birth_date")
    if birth_place is not None and not _INSEE.match(birth_place):
        raise InvalidTrait(f"birth place {birth_place!r} is not an INSEE COG code", "birth_place")
    if ins:
        check_ins_traits(ins, sex=sex, birth_date=birth_date)
