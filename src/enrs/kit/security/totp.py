"""Time-based one-time passwords (RFC 6238) for the optional second factor, with pyotp."""

from __future__ import annotations

import pyotp


def new_secret() -> str:
    return str(pyotp.random_base32())


def provisioning_uri(secret: str, account: str, issuer: str = "ENRS") -> str:
    return str(pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer))


def verify(secret: str, code: str) -> bool:
    """Check a 6-digit code, accepting one 30-second step of clock drift either way."""
    code = code.strip().replace(" ", "")
    if not code.isdigit():
        return False
    return bool(pyotp.TOTP(secret).verify(code, valid_window=1))


def current_code(secret: str) -> str:
    return str(pyotp.TOTP(secret).now())
