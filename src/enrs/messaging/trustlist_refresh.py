"""The MSSanté trust space kept in step with the national list (issue 14): imported by hand
(``enrs messaging trust-list FILE``) or fetched from ``ENRS_MAIL_TRUST_LIST_URL`` (``enrs
messaging trust-list --refresh``, and by the mail service every ``ENRS_MAIL_TRUST_LIST_EVERY``
seconds), both through :func:`import_trust_list`, the one rule:

- the list is verified by :func:`.trustlist.parse_trust_list` against ``ENRS_MAIL_TRUST_CA``;
- it replaces the trust space only when its ``DateDeGeneration`` is not older than the one of
  the list in force (``mail_trust_list.generated``): a list replayed from the past, even a
  genuine one, never brings back a domain the authority removed;
- a list refused (signature, content, age, size) or that cannot be fetched changes nothing:
  the trust space in force stays, the reason is logged and recorded in ``mail_trust_list``
  (the last attempt: when, its outcome, why), which ``enrs messaging trust-list --status``
  shows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from enrs.kit.db import Database, utcnow
from enrs.messaging import service
from enrs.messaging.models import TrustedDomain, TrustListState
from enrs.messaging.trustlist import MAX_BYTES, TrustList, TrustListError, parse_trust_list
from enrs.settings import Settings

log = logging.getLogger(__name__)

IMPORTED, REFUSED, OLDER, UNREACHABLE = "imported", "refused", "older", "unreachable"
MAX_REDIRECTS = 3
TIMEOUT = 30.0  # seconds, for each network step (connect, each read)
DEADLINE = 120.0  # seconds for the whole download


@dataclass(frozen=True)
class Attempt:
    """How an import or a refresh went; ``detail`` says why in words."""

    outcome: str  # IMPORTED, REFUSED, OLDER or UNREACHABLE
    detail: str
    listed: TrustList | None = None
    change: service.TrustSpaceChange | None = None

    @property
    def imported(self) -> bool:
        return self.outcome == IMPORTED


class _Unfetched(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


def import_trust_list(db: Database, settings: Settings, data: bytes, source: str) -> Attempt:
    """Verify the list ``data`` (from ``source``, a URL or a path) and make it the trust
    space if it is not older than the one in force; record the attempt either way."""
    try:
        listed = parse_trust_list(data, _anchors(settings))
    except TrustListError as exc:
        return _failed(db, source, REFUSED, exc.message)
    with db.transaction() as session:
        state = _state(session, lock=True)
        now = utcnow()
        if state.generated is not None and listed.generated < state.generated:
            attempt = Attempt(
                OLDER,
                f"generated {listed.generated.isoformat()}, older than the list in force"
                f" (generated {state.generated.isoformat()})",
                listed,
            )
        else:
            change = service.replace_trust_space(session, listed)
            state.generated, state.source, state.imported_at = listed.generated, source, now
            attempt = Attempt(
                IMPORTED,
                f"{len(listed.domains)} domain(s), {change.added} added, {change.removed}"
                f" removed, {change.kept} kept",
                listed,
                change,
            )
        _note(state, attempt.outcome, attempt.detail, now)
    _log(source, attempt)
    return attempt


def refresh_trust_list(
    db: Database, settings: Settings, client: httpx.Client | None = None
) -> Attempt:
    """Fetch the list from ``ENRS_MAIL_TRUST_LIST_URL`` and :func:`import_trust_list` it.
    ``client``: the HTTP client to use (by default one of :func:`trust_list_client`)."""
    url = settings.mail_trust_list_url
    if not url:
        raise ValueError("ENRS_MAIL_TRUST_LIST_URL is not set")
    own = client is None
    http = trust_list_client() if client is None else client
    try:
        data = _download(http, url)
    except _Unfetched as exc:
        return _failed(db, url, exc.outcome, exc.detail)
    finally:
        if own:
            http.close()
    return import_trust_list(db, settings, data, url)


def trust_list_client() -> httpx.Client:
    """An HTTP client fit to fetch the list: timeouts, at most :data:`MAX_REDIRECTS`."""
    return httpx.Client(timeout=TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS)


@dataclass(frozen=True)
class Status:
    """The list in force and the last attempt, as recorded."""

    generated: datetime | None
    source: str
    imported_at: datetime | None
    domains: int
    attempted_at: datetime | None
    outcome: str
    detail: str


def status(db: Database) -> Status:
    with db.transaction(write=False) as session:
        state = _state(session, lock=False)
        domains = session.scalar(sa.select(sa.func.count()).select_from(TrustedDomain)) or 0
        return Status(
            state.generated,
            state.source,
            state.imported_at,
            domains,
            state.attempted_at,
            state.outcome,
            state.detail,
        )


# --- internals ------------------------------------------------------------------------------


def _anchors(settings: Settings) -> list[bytes]:
    if settings.mail_trust_ca is None:
        raise TrustListError(
            "ENRS_MAIL_TRUST_CA is not set: no certificate to check the list's signature by"
        )
    try:
        return [settings.mail_trust_ca.read_bytes()]
    except OSError as exc:
        raise TrustListError(f"ENRS_MAIL_TRUST_CA cannot be read: {exc}") from None


def _download(client: httpx.Client, url: str) -> bytes:
    """The body at ``url`` (2xx only), at most :data:`~.trustlist.MAX_BYTES` long, read
    within :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    too_large = f"the list at {url} is larger than {MAX_BYTES:,} bytes"
    try:
        with client.stream("GET", url) as response:
            if not response.is_success:
                raise _Unfetched(
                    UNREACHABLE, f"{response.url} answered HTTP {response.status_code}"
                )
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BYTES:
                raise _Unfetched(REFUSED, too_large)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise _Unfetched(REFUSED, too_large)
                if time.monotonic() > deadline:
                    raise _Unfetched(UNREACHABLE, f"{url}: not read within {DEADLINE:.0f} s")
            return bytes(body)
    except httpx.TooManyRedirects:
        raise _Unfetched(UNREACHABLE, f"{url}: more than {MAX_REDIRECTS} redirects") from None
    except httpx.HTTPError as exc:
        raise _Unfetched(UNREACHABLE, f"{url}: {type(exc).__name__}: {exc}") from None


def _failed(db: Database, source: str, outcome: str, detail: str) -> Attempt:
    with db.transaction() as session:
        _note(_state(session, lock=True), outcome, detail, utcnow())
    attempt = Attempt(outcome, detail)
    _log(source, attempt)
    return attempt


def _state(session: Session, *, lock: bool) -> TrustListState:
    state = session.get(TrustListState, 1, with_for_update=lock)
    if state is None:  # the migration inserts it; never deleted
        state = TrustListState(id=1, source="", outcome="", detail="")
        session.add(state)
    return state


def _note(state: TrustListState, outcome: str, detail: str, now: datetime) -> None:
    state.attempted_at, state.outcome, state.detail = now, outcome, detail[:4000]


def _log(source: str, attempt: Attempt) -> None:
    if attempt.imported:
        log.info("mail: trust list from %s imported: %s", source, attempt.detail)
    else:
        log.warning(
            "mail: trust list from %s %s, the trust space in force is kept: %s",
            source,
            attempt.outcome,
            attempt.detail,
        )
