"""Tables of the accounts service: people, system clients, HL7 v2 (MLLP) senders, the
assigning authorities a feeder may write for, portal sessions, OIDC login states."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "account_user"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(256))
    rpps: Mapped[str | None] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    roles: Mapped[str] = mapped_column(String(256), default="")
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split() if r)


class Client(Base):
    """A system client (hospital software, modality gateway) using ``client_credentials``."""

    __tablename__ = "account_client"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    secret_hash: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)
    redirect_uris: Mapped[str] = mapped_column(Text, default="")  # apps using the code flow
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # no secret, PKCE only
    # The member facility (FINESS) the client belongs to: it writes that facility's domains.
    finess: Mapped[str | None] = mapped_column(String(16), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def redirect_uri_list(self) -> list[str]:
        return self.redirect_uris.split()


class ClientAuthority(Base):
    """An assigning authority (OID) whose identities a system client may create or update."""

    __tablename__ = "account_client_authority"

    client_id: Mapped[str] = mapped_column(
        ForeignKey("account_client.id", ondelete="CASCADE"), primary_key=True
    )
    authority: Mapped[str] = mapped_column(String(64), primary_key=True)


class MllpSender(Base):
    """A facility's HL7 v2 sender, known by its MSH-4 (the OID of its universal id, or of its
    FINESS). Not an OAuth client: it has no secret and never gets a token."""

    __tablename__ = "account_mllp_sender"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sender_oid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(Text)
    # The member facility (FINESS) the sender belongs to: it writes that facility's domains.
    finess: Mapped[str | None] = mapped_column(String(16), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MllpSenderAuthority(Base):
    """An assigning authority (OID) whose identities an MLLP sender may write."""

    __tablename__ = "account_mllp_sender_authority"

    sender_id: Mapped[str] = mapped_column(
        ForeignKey("account_mllp_sender.id", ondelete="CASCADE"), primary_key=True
    )
    authority: Mapped[str] = mapped_column(String(64), primary_key=True)


class AuthorizationCode(Base):
    """A single-use authorization code (RFC 6749 §4.1), stored as its SHA-256."""

    __tablename__ = "account_auth_code"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(ForeignKey("account_user.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str | None] = mapped_column(String(256))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A portal session; the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "account_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("account_user.id"), index=True)
    auth_method: Mapped[str] = mapped_column(String(32))
    csrf_token: Mapped[str] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OidcLoginState(Base):
    """A login started at the external provider, waiting for its callback (single use)."""

    __tablename__ = "account_oidc_state"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    return_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
