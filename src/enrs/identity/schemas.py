"""Input and output of the identity service (pydantic), independent of HL7 v2 and FHIR."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

OID = r"^[0-2](\.(0|[1-9]\d*))+$"


class Telecom(BaseModel):
    system: Literal["phone", "email", "fax", "other"] = "phone"
    value: str = Field(min_length=1, max_length=256)


def first_telecom(items: Sequence[Telecom], system: str) -> str | None:
    """The first ``system`` (``phone``, ``email``…) value of ``items``, as matching compares."""
    return next((t.value for t in items if t.system == system and t.value), None)


class OfferedIdentifier(BaseModel):
    """An identifier sent with an identity besides its IPP and its INS (PID-3, or
    Patient.identifier): ``system`` its domain's OID (``None`` when it names none), ``type`` the
    HL7 table 0203 code when given. Kept if its domain is registered (:mod:`.others`)."""

    system: str | None = Field(None, max_length=256)
    value: str = Field(min_length=1, max_length=64)
    type: str | None = Field(None, max_length=8)


class SourceIdentityIn(BaseModel):
    """A facility's identity of a patient, as received (ITI-104, ADT A28/A31/A01/A04/A08)."""

    authority: str = Field(pattern=OID, max_length=64, description="Assigning authority OID")
    ipp: str = Field(min_length=1, max_length=64, description="The facility's patient id (IPP)")
    birth_name: str = Field(min_length=1, max_length=128)
    used_name: str | None = Field(None, max_length=128)
    given_names: list[str] = Field(min_length=1, max_length=10)
    birth_date: date | None = None
    sex: Literal["M", "F", "U"] = "U"
    birth_place: str | None = Field(None, description="INSEE COG code")
    address_line: str | None = Field(None, max_length=256)
    postal_code: str | None = Field(None, max_length=16)
    city: str | None = Field(None, max_length=128)
    country: str | None = Field(None, max_length=3)
    telecom: list[Telecom] = Field(default_factory=list, max_length=10)
    ins: str | None = Field(None, description="Matricule INS (NIR or NIA)")
    ins_system: str | None = Field(None, description="OID of the INS (NIR 1.2.250.1.213.1.4.8)")
    status: Literal["PROV", "RECUP", "VALI", "QUAL"] = "PROV"
    attributes: frozenset[str] = frozenset()
    method_collection: str | None = Field(None, max_length=8)
    validation_mode: str | None = Field(None, max_length=8)
    other_identifiers: list[OfferedIdentifier] = Field(default_factory=list, max_length=20)
    record: dict[str, Any] | None = Field(
        None, description="The demographic record as fed, beyond the traits (identity.record)"
    )

    @field_validator("given_names")
    @classmethod
    def _given(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v and v.strip()]
        if not cleaned:
            raise ValueError("at least one first name is required")
        return cleaned


class FeedResult(BaseModel):
    """What the server did with a received identity."""

    source_id: int
    rri: str
    created: bool
    link_method: str
    score: float | None = None
    task: Literal["DUPLICATE", "COLLISION"] | None = None
    ignored: list[str] = Field(
        default_factory=list, description="Identifiers sent but not kept, each with why"
    )
    task_id: int | None = None
    same_facility: list[str] = Field(
        default_factory=list,
        description="IPPs of the sender's own facility the cell compares this identity with "
        "(a possible intra-facility duplicate: the facility merges them itself if it is one)",
    )
