"""Registrations for the identity tests: a new install refuses every feeder that the admin did
not register for the assigning authorities it writes, and every domain the admin did not
register, so tests that feed identities register their domains, system clients and MLLP
senders here first."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi.testclient import TestClient

from enrs.accounts import service as accounts_service
from enrs.identity import domains
from enrs.identity.config import IdentityConfig
from enrs.kit.db import Database
from enrs.settings import PLACEHOLDER_OID_ROOT

CHU, CLINIC, GP = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2", "1.2.250.1.71.4.2.2.3"


def register_domains(db: Database, oids: Iterable[str]) -> None:
    """Register the domains ``oids`` (``enrs identity domains add``), without a namespace."""
    config = IdentityConfig(PLACEHOLDER_OID_ROOT)
    with db.transaction() as session:
        for oid in oids:
            domains.add(session, config, oid, namespace=None)


def register_sender(
    db: Database,
    sender_oid: str,
    authorities: Iterable[str],
    *,
    scope: str = accounts_service.DEFAULT_SENDER_SCOPE,
) -> None:
    """An MLLP sender known by MSH-4 ``sender_oid``, writing ``authorities`` (registered)."""
    authorities = list(authorities)
    register_domains(db, authorities)
    with db.transaction() as session:
        accounts_service.create_mllp_sender(
            session,
            name=f"GAM {sender_oid}",
            sender_oid=sender_oid,
            authorities=list(authorities),
            scope=scope,
        )


def register_senders(db: Database, senders: Mapping[str, Iterable[str]]) -> None:
    for sender_oid, authorities in senders.items():
        register_sender(db, sender_oid, authorities)


def register_client(db: Database, scope: str, authorities: Iterable[str]) -> tuple[str, str]:
    """A system client with ``scope``, writing ``authorities`` (registered): its (client_id,
    secret)."""
    authorities = list(authorities)
    register_domains(db, authorities)
    with db.transaction() as session:
        created, secret = accounts_service.create_client(
            session, name="DPI de test", scope=scope, authorities=list(authorities)
        )
        assert secret is not None
        return created.client_id, secret


def feeder_token(client: TestClient, db: Database, scope: str, authorities: Iterable[str]) -> str:
    """An access token of a new system client with ``scope``, writing ``authorities``."""
    client_id, secret = register_client(db, scope, authorities)
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
