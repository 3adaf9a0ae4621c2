"""Verified access tokens are remembered until they expire, never longer, and a token that
differs by one byte is verified anew (``kit/security/token_cache.py``, used by
``kit/http.authenticate``). Real tokens signed by the platform's key ring."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from enrs.kit.security.principal import Principal
from enrs.kit.security.scopes import ScopeSet
from enrs.kit.security.token_cache import VerifiedTokens
from enrs.kit.security.tokens import CLOCK_LEEWAY


def _principal(name: str) -> Principal:
    return Principal("client", name, name, ScopeSet.parse("system/AuditEvent.rs"))


def test_an_entry_lives_until_the_token_expires() -> None:
    now = [1000.0]
    cache = VerifiedTokens(clock=lambda: now[0])
    cache.put("t1", _principal("a"), expires_at=1060)
    assert cache.get("t1") == _principal("a")
    now[0] = 1060 + CLOCK_LEEWAY
    assert cache.get("t1") == _principal("a")  # the verification's own leeway
    now[0] += 0.001
    assert cache.get("t1") is None
    assert cache.get("t1") is None  # and it is gone


def test_the_least_recently_used_entries_go_first() -> None:
    cache = VerifiedTokens(size=2, clock=lambda: 0.0)
    cache.put("a", _principal("a"), 100)
    cache.put("b", _principal("b"), 100)
    assert cache.get("a") is not None  # "b" is now the oldest
    cache.put("c", _principal("c"), 100)
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None


def test_a_cached_token_changed_by_one_byte_is_refused(
    app: FastAPI, client: TestClient, factory: object
) -> None:
    token = factory.token()  # type: ignore[attr-defined]
    ok = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert app.state.verified_tokens.get(token) is not None  # remembered
    last = token[-1]
    forged = token[:-1] + ("A" if last != "A" else "B")
    refused = client.get("/fhir/AuditEvent", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert app.state.verified_tokens.get(forged) is None


def test_a_token_expiring_while_cached_is_refused(
    app: FastAPI, client: TestClient, factory: object
) -> None:
    factory.system_client()  # type: ignore[attr-defined]
    # A token whose ``exp`` passed 28.5 s ago: still accepted for 1.5 s (the 30 s leeway).
    exp = int(time.time()) - CLOCK_LEEWAY + 2
    token, _ = app.state.tokens.issue(
        subject="dpi", client_id="dpi", scope="system/AuditEvent.rs", exp=exp
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/fhir/AuditEvent", headers=headers).status_code == 200
    assert app.state.verified_tokens.get(token) is not None
    time.sleep(max(0.0, exp + CLOCK_LEEWAY - time.time()) + 0.2)
    answer = client.get("/fhir/AuditEvent", headers=headers)
    assert answer.status_code == 401 and "expired" in answer.text
