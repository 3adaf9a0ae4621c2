"""The national identifiers of the directory and their check keys.

- RPPS number: 11 digits, the last a Luhn key over the first ten. The national professional
  identifier (``idNatPs``, system ``urn:oid:1.2.250.1.71.4.2.1``) is ``8`` + the RPPS number,
  or ``0`` + the ADELI number (9 characters, no key checked here).
- FINESS number: 9 characters ``[0-9][0-9AB][0-9]{7}``, the last a Luhn key over the first
  eight. A Corsican number (``2A``/``2B``) has a letter the Luhn algorithm cannot read: its
  key is not checked.

And the *local* identifiers the region gives the professionals and structures registered in
its directory (:mod:`.registration`), under the arc ``{oid_root}.3`` of the region's OID
(``{root}.1`` is the regional patient identifier, ``{root}.2.*`` the FINESS-derived
authorities): ``L`` + 8 digits for a professional (system ``urn:oid:{root}.3.1``), ``S`` + 8
digits for a structure (``urn:oid:{root}.3.2``). A letter first: never an idNatPs nor a FINESS
number. ``urn:oid:{root}.3.3`` codes the regional professions (outside TRE_G15), and the
regional entries carry the tag ``regional`` of system ``urn:oid:{root}.3``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum import luhn

RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
FINESS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
_RPPS = re.compile(r"^\d{11}$")
_FINESS = re.compile(r"^\d[\dAB]\d{7}$")


def luhn_key(digits: str) -> int:
    """The Luhn check digit to append to ``digits`` (``python-stdnum``)."""
    return int(luhn.calc_check_digit(digits))


def valid_rpps(number: str) -> bool:
    """An RPPS number with a right key."""
    return bool(_RPPS.match(number)) and luhn_key(number[:10]) == int(number[10])


def valid_finess(number: str) -> bool:
    """A FINESS number of the right form with a right key (Corsican numbers: form only)."""
    if not _FINESS.match(number):
        return False
    if not number[:8].isdigit():
        return True
    return luhn_key(number[:8]) == int(number[8])


def rpps_error(number: str) -> str | None:
    """Why ``number`` is no RPPS number (``None`` if it is one)."""
    if not _RPPS.match(number):
        return f"an RPPS number has 11 digits, not {number!r}"
    if not valid_rpps(number):
        return f"RPPS {number}: its key (last digit) does not check"
    return None


def finess_error(number: str) -> str | None:
    """Why ``number`` is no FINESS number (``None`` if it is one)."""
    if not _FINESS.match(number):
        return f"a FINESS number has 9 characters ([0-9][0-9AB][0-9]{{7}}), not {number!r}"
    if not valid_finess(number):
        return f"FINESS {number}: its key (last digit) does not check"
    return None


def id_nat_ps(kind: str, number: str) -> str:
    """The national professional identifier of an RPPS (``kind`` 8) or ADELI (0) number."""
    return f"{kind}{number}"


LOCAL_ARC = "3"
LOCAL_PREFIX = {"professional": "L", "structure": "S"}
_LOCAL = re.compile(r"^[LS]\d{8}$")


@dataclass(frozen=True)
class RegionalSystems:
    """The systems of the region's directory, under ``urn:oid:{oid_root}.3``."""

    arc: str

    @classmethod
    def of(cls, oid_root: str) -> RegionalSystems:
        return cls(f"urn:oid:{oid_root}.{LOCAL_ARC}")

    @property
    def professional(self) -> str:
        """The local identifiers of professionals."""
        return f"{self.arc}.1"

    @property
    def structure(self) -> str:
        """The local identifiers of structures."""
        return f"{self.arc}.2"

    @property
    def profession(self) -> str:
        """The regional professions (:data:`.registration.REGIONAL_PROFESSIONS`)."""
        return f"{self.arc}.3"


def local_id(kind: str, number: int) -> str:
    """The local identifier number ``number`` of a ``professional`` or ``structure``."""
    return f"{LOCAL_PREFIX[kind]}{number:08d}"


def is_local_id(value: str) -> bool:
    return bool(_LOCAL.match(value))


def origin_tag_system(local_system: str) -> str:
    """The system of the ``regional`` tag: the arc of a local identifier's system."""
    return local_system.rsplit(".", 1)[0]
