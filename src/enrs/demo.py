"""A small demo data set for ``make run``: one account per role, one system client and one
HL7 v2 (MLLP) sender, both writing for the demo facility (a FINESS-numbered hospital); the
demo doctor and facility in the directory (regional entries), with a personal MSSanté mailbox
for the doctor and an organisational one for the facility's secretariat, which the doctor may
read and send as; a made-up patient of the facility with her care circle (the doctor, a home
nurse and a family carer), so that the coordination file can be tried.

Demo passwords are public by design (printed at start-up); never load the demo in production.
"""

from __future__ import annotations

import json
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.accounts import repository, service
from enrs.coordination import service as coordination
from enrs.directory import registration
from enrs.directory import repository as directory_repository
from enrs.directory import service as directory_service
from enrs.directory.identifiers import RegionalSystems
from enrs.directory.models import Structure
from enrs.documents.access import Reader
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.auth import finess_authority
from enrs.identity.config import IdentityConfig
from enrs.identity.matching.engine import matcher_for
from enrs.identity.schemas import SourceIdentityIn
from enrs.identity.xref import UnknownPatient
from enrs.kit.db import Database
from enrs.kit.fhir.search_params import normalize_text
from enrs.kit.security.scopes import ScopeSet
from enrs.messaging import service as messaging
from enrs.settings import Settings

DEMO_USERS = [
    ("admin", "Administrateur ENRS", "Admin-demo-2026!", ["admin"], None),
    ("cellule", "Cellule d'identitovigilance", "Cellule-demo-2026!", ["identitovigilance"], None),
    ("dr.martin", "Dr Claire Martin", "Medecin-demo-2026!", ["professional"], "10001234565"),
    ("ide.durand", "Sophie Durand, IDE", "Infirmiere-demo-2026!", ["professional"], "10001234581"),
]
# The demo patient (made up) and her care circle, so that the coordination file can be tried.
DEMO_IPP = "DEMO0001"
DEMO_CIRCLE = "Maintien à domicile (démo)"
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
        lines += _demo_mailboxes(session, settings)
        lines += _demo_circle(session, settings, authority)
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


def _demo_place(session: Session, systems: RegionalSystems) -> Structure:
    """The demo facility as a regional structure of the directory."""
    place = session.scalar(
        sa.select(Structure).where(
            Structure.n_name == normalize_text(DEMO_FACILITY),
            Structure.origin == registration.REGIONAL,
        )
    )
    if place is None:
        data = {"name": DEMO_FACILITY, "city": "Fort-de-France", "postal_code": "97200"}
        place = registration.register_structure(
            session, systems, registration.checked(registration.StructureIn, data)
        )
    return place


def _practising(
    session: Session, systems: RegionalSystems, rpps: str, profession: str, place: Structure
) -> None:
    """The demo professional ``rpps`` practises ``profession`` (TRE_G15) at ``place``, as a
    circle's members must (an active activity in the directory)."""
    if directory_service.listed_rpps(session, rpps) is None:
        data = {"structure": place.finess, "profession_code": profession}
        registration.register_activity(
            session, systems, f"8{rpps}", registration.checked(registration.ActivityIn, data)
        )


def _demo_mailboxes(session: Session, settings: Settings) -> list[str]:
    """The demo doctor (RPPS of ``dr.martin``) and facility as regional entries of the
    directory, the doctor's PER mailbox (password: the doctor's demo password) and the
    facility secretariat's ORG mailbox, which the doctor may read and send as."""
    username, name, password, _, rpps = DEMO_USERS[2]
    assert rpps is not None
    domain = settings.mail_domain.lower()
    personal, secretariat = f"{username}@{domain}", f"secretariat.chfdf@{domain}"
    systems = RegionalSystems.of(settings.oid_root)
    if directory_repository.professional(session, f"8{rpps}") is None:
        data = {"family": "Martin", "given": "Claire", "civility": "Dr", "rpps": rpps}
        registration.register_professional(
            session, systems, registration.checked(registration.ProfessionalIn, data)
        )
    place = _demo_place(session, systems)
    _practising(session, systems, rpps, "10", place)  # médecin
    if messaging.mailbox(session, personal) is None:
        messaging.add_mailbox(
            session,
            messaging.NewMailbox(personal, "PER", rpps=rpps, password=password),
            domain=domain,
        )
    if messaging.mailbox(session, secretariat) is None:
        messaging.add_mailbox(
            session,
            messaging.NewMailbox(
                secretariat, "ORG", finess=place.finess, description="Secrétariat (démo)"
            ),
            domain=domain,
        )
    messaging.delegate(session, secretariat, personal, may_send=True)
    return [
        f"Demo mailboxes: {personal} / {password} (PER, {name}); {secretariat} (ORG,"
        f" read and sent as by {personal}); IMAP {settings.mail_host}:{settings.imap_port},"
        f" submission {settings.mail_host}:{settings.smtp_port} (STARTTLS)"
    ]


def _demo_circle(session: Session, settings: Settings, authority: str) -> list[str]:
    """The demo patient, fed as the demo facility's software would (her IPP in its domain),
    and her care circle: made by the regional team, the doctor (*médecin traitant*) and the
    nurse (*IDE*) invited and accepting, a family carer (*aidant*) added."""
    config = IdentityConfig.from_settings(settings)
    systems = RegionalSystems.of(settings.oid_root)
    nurse = DEMO_USERS[3]
    assert nurse[4] is not None
    if directory_repository.professional(session, f"8{nurse[4]}") is None:
        data = {"family": "Durand", "given": "Sophie", "civility": "", "rpps": nurse[4]}
        registration.register_professional(
            session, systems, registration.checked(registration.ProfessionalIn, data)
        )
    _practising(session, systems, nurse[4], "60", _demo_place(session, systems))  # infirmier
    try:
        patient = identity_service.resolve_patient(session, config, authority, DEMO_IPP)
    except UnknownPatient:
        identity = SourceIdentityIn(
            authority=authority,
            ipp=DEMO_IPP,
            birth_name="DEMONSTRATION",
            given_names=["Lucienne"],
            sex="F",
            birth_date=date(1941, 3, 12),
            birth_place="97209",
            postal_code="97200",
            city="Fort-de-France",
        )
        matcher = matcher_for(settings.identity_model)
        identity_service.feed(session, matcher, identity, actor="demo", config=config)
        patient = identity_service.resolve_patient(session, config, authority, DEMO_IPP)
    if not any(t.name == DEMO_CIRCLE for t in coordination.circles_of(session, patient)):
        regional = coordination.Actor(
            Reader("user:admin", "Administrateur ENRS", "user", None, frozenset()), team=True
        )
        team = coordination.create(session, regional, patient, name=DEMO_CIRCLE)
        for (username, name, _, _, rpps), role in (
            (DEMO_USERS[2], "médecin traitant"),
            (nurse, "IDE"),
        ):
            new = coordination.NewMember("practitioner", role, rpps=rpps)
            coordination.invite(session, regional, team, new)
            member = Reader(f"user:{username}", name, "user", rpps, frozenset())
            coordination.accept(session, coordination.Actor(member), team)
        carer = coordination.NewMember("related-person", "aidant", display="Marc Demonstration")
        coordination.invite(session, regional, team, carer)
    return [
        f"Demo patient: Lucienne DEMONSTRATION, IPP {DEMO_IPP} of the demo facility"
        f" (Patient/{patient.rri}), care circle « {DEMO_CIRCLE} » with dr.martin and {nurse[0]}:"
        f" {settings.base_url}/coordination",
    ]
