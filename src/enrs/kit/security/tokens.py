"""Signed JWT access tokens (RFC 9068 profile) issued by the platform and checked on each call."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from enrs.kit.errors import Unauthorized
from enrs.kit.security.keys import KeyRing

CLOCK_LEEWAY = 30


@dataclass(frozen=True)
class TokenIssuer:
    """Issues and verifies access tokens for one issuer URL with one key ring."""

    keys: KeyRing
    issuer: str
    ttl: int

    def issue(self, *, subject: str, client_id: str, scope: str, **claims: Any) -> tuple[str, int]:
        """Sign an access token; returns the token and its lifetime in seconds."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.issuer,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
            **claims,
        }
        key = self.keys.current
        token = jwt.encode(
            payload, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "at+jwt"}
        )
        return token, self.ttl

    def id_token(
        self, *, subject: str, audience: str, nonce: str | None, auth_time: int, **claims: Any
    ) -> str:
        """Sign an OpenID Connect ID token (OIDC Core §2) for ``audience`` (the client)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + min(self.ttl, 600),
            "auth_time": auth_time,
            **claims,
        }
        if nonce:
            payload["nonce"] = nonce
        key = self.keys.current
        return jwt.encode(payload, key.private_key, algorithm=key.alg, headers={"kid": key.kid})

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token, else raise :class:`Unauthorized` saying why."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed access token") from exc
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("access token signed by an unknown key")
        if header.get("alg") != key.alg:
            raise Unauthorized("access token algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=[key.alg],
                issuer=self.issuer,
                audience=self.issuer,
                leeway=CLOCK_LEEWAY,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("access token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("access token signature does not verify") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("access token from another issuer") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("access token meant for another audience") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid access token: {exc}") from exc
        return claims
