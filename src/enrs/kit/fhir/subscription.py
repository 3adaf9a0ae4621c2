"""What every FHIR R4 ``Subscription`` of the platform shares, whatever it subscribes to (the
identity feed's PMIR, the care circles' events): the rest-hook channel it must name."""

from __future__ import annotations

from typing import Any

from enrs.kit.errors import Unprocessable

PAYLOAD = "application/fhir+json"


def rest_hook_channel(body: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """``(endpoint, headers)`` of a Subscription's ``channel``: ``type`` ``rest-hook``,
    ``payload`` :data:`PAYLOAD` (the full resources), ``endpoint`` the hook's URL, ``header``
    ``Name: value`` strings sent with each POST. 422 for anything else."""
    channel = body.get("channel")
    if not isinstance(channel, dict) or channel.get("type") != "rest-hook":
        raise Unprocessable("Subscription.channel.type: only 'rest-hook' is supported")
    if channel.get("payload") != PAYLOAD:
        raise Unprocessable(f"Subscription.channel.payload: {PAYLOAD!r} (the full resources)")
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str):
        raise Unprocessable("Subscription.channel.endpoint: the hook's URL is required")
    headers: dict[str, str] = {}
    for raw in channel.get("header") or []:
        name, sep, value = str(raw).partition(":")
        if not sep or not name.strip():
            raise Unprocessable(f"Subscription.channel.header: {raw!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return endpoint, headers
