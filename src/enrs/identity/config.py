"""The identity server's configuration: what of :class:`~enrs.settings.Settings` it needs, built
once where the process starts (``create_app``, the MLLP listener, a command) and passed down to
the functions that need it. Nothing here reads the environment."""

from __future__ import annotations

import re
from dataclasses import dataclass

from enrs.identity.traits import INS_OIDS, PRODUCTION_INS_OIDS
from enrs.settings import Settings

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class IdentityConfig:
    """``oid_root``: the region's OID arc (``ENRS_OID_ROOT``); identifiers given out carry it.
    ``accepted_ins``: the INS OIDs an identity may carry (NIR and NIA; the test and demo OIDs
    too in development, ``ENRS_DEV``)."""

    oid_root: str
    accepted_ins: frozenset[str] = PRODUCTION_INS_OIDS

    def __post_init__(self) -> None:
        if not _OID.match(self.oid_root):
            raise ValueError(f"OID root {self.oid_root!r} is not an OID")
        if not self.accepted_ins <= INS_OIDS:
            raise ValueError("accepted_ins holds an OID that is not an INS OID")

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityConfig:
        return cls(settings.oid_root, INS_OIDS if settings.dev else PRODUCTION_INS_OIDS)

    @property
    def rri_authority(self) -> str:
        """The assigning authority of the regional identifier (FR Core ``RRI``): ``{root}.1``."""
        return f"{self.oid_root}.1"

    @property
    def rri_system(self) -> str:
        """The FHIR namespace of the regional identifier: ``urn:oid:{root}.1``."""
        return f"urn:oid:{self.rri_authority}"

    @property
    def finess_arc(self) -> str:
        """Under it, the authorities standing for FINESS numbers (``pamfr.finess_oid``)."""
        return f"{self.oid_root}.2"
