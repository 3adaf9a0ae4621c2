"""Token signing keys: generated on first use, kept as PEM files out of the database.

Several worker processes share one key folder: creation takes an exclusive ``fcntl`` lock, and a
process that meets an unknown ``kid`` re-reads the folder once (another process may have rotated).
Old keys stay published in the JWKS until removed, so tokens they signed verify until they expire.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk


def _alg_of(key: PrivateKey) -> str:
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"


def _generate(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class KeyRing:
    """The signing keys in ``folder``; the newest key of the configured algorithm signs."""

    def __init__(self, folder: Path, alg: str) -> None:
        self.folder = folder
        self.alg = alg
        self._keys: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> None:
        """(Re)read every ``*.pem`` of the folder; create the first key if there is none."""
        with self._lock:
            keys = self._read()
            if not any(k.alg == self.alg for k in keys.values()):
                with self._file_lock():
                    keys = self._read()
                    if not any(k.alg == self.alg for k in keys.values()):
                        key = self._write_new()
                        keys[key.kid] = key
            self._keys = keys

    def _read(self) -> dict[str, SigningKey]:
        keys: dict[str, SigningKey] = {}
        if not self.folder.is_dir():
            return keys
        for path in sorted(self.folder.glob("*.pem")):
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                keys[path.stem] = SigningKey(path.stem, _alg_of(loaded), loaded)
        return keys

    def _write_new(self) -> SigningKey:
        kid = f"{datetime.now(UTC):%Y%m%d%H%M%S%f}-{secrets.token_hex(4)}"
        private = _generate(self.alg)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = self.folder / f".{kid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / f"{kid}.pem")
        return SigningKey(kid, self.alg, private)

    def rotate(self) -> SigningKey:
        """Add a new signing key; it signs from now on, older ones still verify."""
        with self._file_lock():
            key = self._write_new()
        self.load()
        return key

    @property
    def current(self) -> SigningKey:
        if not self._keys:
            self.load()
        candidates = [k for k in self._keys.values() if k.alg == self.alg]
        return max(candidates, key=lambda k: k.kid)

    def get(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is None:
            self.load()
            key = self._keys.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        if not self._keys:
            self.load()
        return {"keys": [k.public_jwk() for k in sorted(self._keys.values(), key=lambda k: k.kid)]}
