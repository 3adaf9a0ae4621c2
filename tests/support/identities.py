"""Identities for the identity server's tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from enrs.identity.schemas import SourceIdentityIn


def person(authority: str, ipp: str, **changes: Any) -> SourceIdentityIn:
    """Marie-Line Rose JOSEPH, born 9 April 1961 in Fort-de-France, with ``changes``."""
    base: dict[str, Any] = {
        "authority": authority,
        "ipp": ipp,
        "birth_name": "JOSEPH",
        "given_names": ["Marie-Line", "Rose"],
        "birth_date": date(1961, 4, 9),
        "sex": "F",
        "birth_place": "97209",
        "postal_code": "97200",
        "city": "Fort-de-France",
    }
    base.update(changes)
    return SourceIdentityIn(**base)
