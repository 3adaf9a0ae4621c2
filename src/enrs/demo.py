"""A small demo data set for ``make run``: one account per role, one system client and one
HL7 v2 (MLLP) sender, both writing for the demo facility (a FINESS-numbered hospital).

Demo passwords are public by design (printed at start-up); never load the demo in production.
"""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from enrs.accounts import repository, service
from enrs.identity import domains
from enrs.identity.auth import finess_authority
from enrs.identity.config import IdentityConfig
from enrs.kit.db import Database
from enrs.kit.security.scopes import ScopeSet
from enrs.settings import Settings

DEMO_USERS = [
    ("admin", "Administrateur ENRS", "Admin-demo-2026!", ["admin"], None),
    ("cellule", "Cellule d'identitovigilance", "Cellule-demo-2026!", ["identitovigilance"], None),
    ("dr.martin", "Dr Claire Martin", "Medecin-demo-2026!", ["professional"], "10001234565"),
]
# The demo facility: a made-up FINESS (not a real establishment), its namespace in MSH-4/CX-4.
DEMO_FINESS, DEMO_NAMESPACE = "970000006", "CHFDF"
DEMO_FACILITY = "CH de Fort-de-France (démo)"
DEMO_CLIENT = ("DPI démo CH Fort-de-France", "system/Patient.crus system/AuditEvent.rs")
DEMO_SENDER = "GAM démo CH Fort-de-France"


def load_demo(settings: Settings) -> list[str]:
    """Create the demo accounts, client and MLLP sender that do not exist yet; return lines
    describing them."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    lines = [f"Portal:  {settings.base_url}/   API docs: {settings.base_url}/docs"]
    authority = finess_authority(DEMO_FINESS, IdentityConfig.from_settings(settings))
    with db.transaction() as session:
        domains.add(
            session,
            IdentityConfig.from_settings(settings),
            authority,
            namespace=DEMO_NAMESPACE,
            name=DEMO_FACILITY,
            owner=DEMO_FINESS,
        )
        for username, name, password, roles, rpps in DEMO_USERS:
            if repository.user_by_username(session, username) is None:
                service.create_user(
                    session,
                    username=username,
                    display_name=name,
                    password=password,
                    roles=roles,
                    rpps=rpps,
                )
            lines.append(f"Demo account: {username} / {password}  ({', '.join(roles)})")
        creds = _demo_client(session, settings)
        _demo_sender(session, authority)
    db.dispose()
    lines.append(
        f"Demo system client: client_id={creds['client_id']} client_secret={creds['client_secret']}"
        f"  (scope {DEMO_CLIENT[1]}; writes the identities of urn:oid:{authority})"
    )
    lines.append(
        f"  token: curl -s -u '{creds['client_id']}:{creds['client_secret']}' "
        f"-d grant_type=client_credentials {settings.base_url}/oauth/token"
    )
    lines.append(
        f"Demo MLLP sender: MSH-4 {DEMO_NAMESPACE}^{DEMO_FINESS}^M (OID {authority}), IPPs "
        f"^^^{DEMO_NAMESPACE}&{DEMO_FINESS}&M^PI, to mllp://{settings.mllp_host}:"
        f"{settings.mllp_port}  (scope {service.DEFAULT_SENDER_SCOPE}; writes {authority})"
    )
    lines.append("Examples to feed, search and query identities: README.md, 'Try it'")
    return lines


def _demo_client(session: Session, settings: Settings) -> dict[str, str]:
    """The demo system client (its secret kept in ``demo-client.json``), a feeder of the demo
    facility; a client of an older demo, with other scopes, is replaced."""
    client_file = settings.data_dir / "demo-client.json"
    creds: dict[str, str] = json.loads(client_file.read_text()) if client_file.exists() else {}
    client = repository.client_by_client_id(session, creds.get("client_id", ""))
    if client is None or ScopeSet.parse(client.scope) != ScopeSet.parse(DEMO_CLIENT[1]):
        if client is not None:
            service.revoke(session, client.client_id)
        client, secret = service.create_client(session, name=DEMO_CLIENT[0], scope=DEMO_CLIENT[1])
        assert secret is not None
        creds = {"client_id": client.client_id, "client_secret": secret}
        client_file.write_text(json.dumps(creds))
        client_file.chmod(0o600)
    service.attach_facility(session, client.client_id, DEMO_FINESS)
    return creds


def _demo_sender(session: Session, authority: str) -> None:
    """The demo facility's MLLP sender: MSH-4 is its FINESS; it belongs to the facility, so
    it writes the facility's own identities."""
    if repository.mllp_sender_by_oid(session, authority) is None:
        service.create_mllp_sender(
            session, name=DEMO_SENDER, sender_oid=authority, finess=DEMO_FINESS
        )
    service.attach_facility(session, authority, DEMO_FINESS)
