"""``GET /api/admin/notifications``: each notification destination and its queue (waiting,
sent, refused, the error that holds it back, the next try); ``POST
/api/admin/notifications/{name}/retry``: try it again now. For admins (and clients given
``system/Subscription.rs`` / ``.u``); every call audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from enrs.kit.http import DbSession, TransactionalRoute, require
from enrs.kit.outbound.queue import DestinationStatus, retry_now, statuses
from enrs.kit.security.principal import Principal

router = APIRouter(route_class=TransactionalRoute, tags=["platform"])
ADMINS = frozenset({"admin"})
QueueRead = Annotated[
    Principal, Depends(require("Subscription", "search-type", roles=ADMINS, category="admin"))
]
QueueRetry = Annotated[
    Principal, Depends(require("Subscription", "update", roles=ADMINS, category="admin"))
]


def status_json(d: DestinationStatus) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat(timespec="seconds") if value is not None else None

    return {
        "name": d.name,
        "transport": d.transport,
        "endpoint": d.endpoint,
        "active": d.active,
        "authority": d.selector.get("authority"),
        "domains": d.selector.get("domains", []),
        "format": d.selector.get("format"),
        "pending": d.pending,
        "sent": d.sent,
        "rejected": d.rejected,
        "failing": {
            "attempts": d.head_attempts,
            "error": d.head_error,
            "next_attempt": when(d.next_attempt_at),
        }
        if d.head_error
        else None,
        "last_sent": when(d.last_sent_at),
        "last_rejection": d.last_rejection,
    }


@router.get("/api/admin/notifications", summary="Notification destinations and their queues")
def list_notifications(session: DbSession, _principal: QueueRead) -> dict[str, Any]:
    return {"destinations": [status_json(d) for d in statuses(session)]}


@router.post("/api/admin/notifications/{name}/retry", summary="Try a destination's queue again now")
def retry_notifications(name: str, session: DbSession, _principal: QueueRetry) -> dict[str, Any]:
    return {"name": name, "pending": retry_now(session, name)}
