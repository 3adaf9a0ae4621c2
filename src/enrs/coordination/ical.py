"""A professional's agenda as an iCalendar feed (RFC 5545), at a secret URL.

Calendar clients (a phone's agenda, Thunderbird, Outlook) subscribe to a URL and cannot do
OAuth, so a professional makes a **personal feed URL** ``/agenda/{token}.ics``: the token is
256 random bits, shown once; only its SHA-256 is kept (a fast digest is enough for a random
secret: there is no dictionary to try). Making a new one replaces the old (the old URL stops
at once); revoking it stops it. An unknown or revoked token is a 404, like a URL that never
existed; every fetch is audited (the professional as agent, the patients of the events).

**What a feed says** (minimised: a phone's calendar is synchronised to places the platform
does not control): the appointments the professional takes part in (their RPPS or one of
their structures), of the circles they are a current member of now — a member removed from
a circle loses its appointments from the feed at the next fetch — that start from
:data:`PAST` ago to :data:`AHEAD` ahead. One ``VEVENT`` each:

- ``UID`` ``{appointment id}@{host}`` (stable), ``SEQUENCE`` its version, ``DTSTAMP`` and
  ``LAST-MODIFIED`` its last change, ``DTSTART`` / ``DTEND`` in UTC;
- ``STATUS``: ``TENTATIVE`` (proposed), ``CONFIRMED`` (booked, fulfilled, no-show) or
  ``CANCELLED`` — a cancelled appointment stays in the feed so that clients remove it;
- ``SUMMARY`` the appointment's title and the circle's name; ``DESCRIPTION`` and ``URL`` the
  link to the coordination file, which asks for a login.

No patient identity goes in: no name, no INS, no RRI, no birth date — the circle's name
(chosen by its members, e.g. "Suivi greffe rénale") is how the professional knows whose
appointment it is, and the link opens the file behind the login.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from icalendar import Calendar, Event
from sqlalchemy import select
from sqlalchemy.orm import Session

from enrs.coordination.agenda_models import AgendaFeed, CoordinationAppointment
from enrs.coordination.models import CareTeam
from enrs.kit.db import utcnow

PAST = timedelta(days=30)
AHEAD = timedelta(days=365)
STATUS = {
    "proposed": "TENTATIVE",
    "booked": "CONFIRMED",
    "fulfilled": "CONFIRMED",
    "noshow": "CONFIRMED",
    "cancelled": "CANCELLED",
}
MEDIA_TYPE = "text/calendar; charset=utf-8"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def feed_of(session: Session, user_id: str) -> AgendaFeed | None:
    """The account's feed, when it has a live one."""
    found = session.scalar(select(AgendaFeed).where(AgendaFeed.user_id == user_id))
    return found if found is not None and found.token_hash is not None else None


def create_feed(session: Session, user_id: str, rpps: str) -> str:
    """A new secret token for the account's feed (the old one, if any, stops); returned once,
    kept hashed."""
    token = secrets.token_urlsafe(32)
    found = session.scalar(select(AgendaFeed).where(AgendaFeed.user_id == user_id))
    if found is None:
        found = AgendaFeed(user_id=user_id)
        session.add(found)
    found.rpps, found.token_hash = rpps, _digest(token)
    found.created_at, found.revoked_at = utcnow(), None
    session.flush()
    return token


def revoke_feed(session: Session, user_id: str) -> bool:
    """Stops the account's feed; ``False`` when it had none."""
    found = feed_of(session, user_id)
    if found is None:
        return False
    found.token_hash, found.revoked_at = None, utcnow()
    session.flush()
    return True


def owner_of(session: Session, token: str) -> AgendaFeed | None:
    """The live feed a token opens, else ``None``."""
    if not token or len(token) > 128:
        return None
    return session.scalar(select(AgendaFeed).where(AgendaFeed.token_hash == _digest(token)))


@dataclass(frozen=True)
class FeedEvent:
    """One appointment of a feed and the circle it belongs to."""

    appointment: CoordinationAppointment
    team: CareTeam


def calendar(events: list[FeedEvent], base_url: str) -> bytes:
    """The feed (RFC 5545 ``VCALENDAR``, ``METHOD:PUBLISH``) of these appointments."""
    host = urlsplit(base_url).hostname or "enrs"
    cal = Calendar()
    cal.add("prodid", "-//ENRS//Agenda partage//FR")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", "Agenda ENRS")
    cal.add("x-published-ttl", "PT15M")
    for item in events:
        found, team = item.appointment, item.team
        link = f"{base_url.rstrip('/')}/coordination/{team.resource_id}"
        event = Event()
        event.add("uid", f"{found.resource_id}@{host}")
        event.add("sequence", found.version)
        event.add("dtstamp", found.updated_at)
        event.add("last-modified", found.updated_at)
        event.add("created", found.created_at)
        event.add("dtstart", found.start_at)
        event.add("dtend", found.end_at)
        event.add("summary", f"{found.title} — {team.name}")
        event.add("status", STATUS[found.status])
        event.add("description", f"Cercle de soins : {team.name}\nDossier : {link}")
        event.add("url", link)
        cal.add_component(event)
    return bytes(cal.to_ical())
