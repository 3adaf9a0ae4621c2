"""A small demo data set for ``make run``: one account per role and one system client.

Demo passwords are public by design (printed at start-up); never load the demo in production.
"""

from __future__ import annotations

import json

from enrs.accounts import repository, service
from enrs.kit.db import Database
from enrs.settings import Settings

DEMO_USERS = [
    ("admin", "Administrateur ENRS", "Admin-demo-2026!", ["admin"], None),
    ("cellule", "Cellule d'identitovigilance", "Cellule-demo-2026!", ["identitovigilance"], None),
    ("dr.martin", "Dr Claire Martin", "Medecin-demo-2026!", ["professional"], "10001234567"),
]
DEMO_CLIENT = ("DPI démo CH Fort-de-France", "system/Patient.rs system/AuditEvent.rs")


def load_demo(settings: Settings) -> list[str]:
    """Create the demo accounts that do not exist yet; return lines describing them."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    lines = [f"Portal:  {settings.base_url}/   API docs: {settings.base_url}/docs"]
    client_file = settings.data_dir / "demo-client.json"
    with db.transaction() as session:
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
        if not client_file.exists():
            client, secret = service.create_client(
                session, name=DEMO_CLIENT[0], scope=DEMO_CLIENT[1]
            )
            assert secret is not None
            client_file.write_text(
                json.dumps({"client_id": client.client_id, "client_secret": secret})
            )
            client_file.chmod(0o600)
    creds = json.loads(client_file.read_text())
    lines.append(
        f"Demo system client: client_id={creds['client_id']} client_secret={creds['client_secret']}"
        f"  (scope {DEMO_CLIENT[1]})"
    )
    lines.append(
        f"  token: curl -s -u '{creds['client_id']}:{creds['client_secret']}' "
        f"-d grant_type=client_credentials {settings.base_url}/oauth/token"
    )
    db.dispose()
    return lines
