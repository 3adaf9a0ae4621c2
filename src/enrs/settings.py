"""One typed Settings object, read from ``ENRS_*`` environment variables or a ``.env`` file.

Built once at start-up (``Settings()``) and passed explicitly; never created at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Not a registered arc: set ENRS_OID_ROOT to the region's own before the first identity.
PLACEHOLDER_OID_ROOT = "1.2.250.1.999"


class Settings(BaseSettings):
    """Every setting of the platform. The README's configuration table lists them all."""

    model_config = SettingsConfigDict(
        env_prefix="ENRS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(Path("var"), description="Folder for the embedded database, blobs, keys")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in the data dir")
    http_host: str = Field("127.0.0.1", description="HTTP listen address")
    http_port: int = Field(8000, description="HTTP listen port")
    http_workers: int = Field(1, ge=1, description="HTTP worker processes")
    base_url: str = Field("", description="Public base URL; default http://{host}:{port}")
    keys_dir: Path | None = Field(None, description="Signing keys and master key folder")
    signing_alg: Literal["ES256", "RS256"] = Field("ES256", description="Access token algorithm")
    access_token_ttl: int = Field(3600, ge=60, description="Access token lifetime (seconds)")
    session_ttl: int = Field(8 * 3600, ge=300, description="Portal session lifetime (seconds)")
    login_max_failures: int = Field(5, ge=1, description="Failed logins before lock-out")
    login_lockout_seconds: int = Field(900, ge=1, description="Lock-out duration (seconds)")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest request body")
    max_document_bytes: int = Field(
        7 * 1024 * 1024, ge=1024, description="Largest document the repository files"
    )
    chat_attachment_max_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest file attached to a chat message"
    )
    storage_backend: Literal["fs", "s3"] = Field("fs", description="Blob storage backend")
    storage_dir: Path | None = Field(None, description="Folder of the fs backend")
    storage_cold_dir: Path | None = Field(
        None, description="Folder of the fs backend's cold tier (a cheaper disk)"
    )
    master_key_file: Path | None = Field(None, description="File holding the blob master key(s)")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint URL")
    s3_bucket: str = Field("enrs", description="S3 bucket")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str = Field("", description="S3 access key id")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret access key")
    s3_cold_storage_class: Literal[
        "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "INTELLIGENT_TIERING"
    ] = Field("STANDARD_IA", description="S3 storage class of the cold tier (instant retrieval)")
    oidc_issuer: str = Field("", description="External OIDC provider (e.g. Pro Santé Connect)")
    oidc_client_id: str = Field("", description="Client id at the external provider")
    oidc_client_secret: SecretStr = Field(
        SecretStr(""), description="Client secret at the external provider"
    )
    oidc_scopes: str = Field("openid profile", description="Scopes asked of the provider")
    oidc_rpps_claim: str = Field("SubjectNameID", description="Claim holding the RPPS number")
    oidc_display_name: str = Field("Pro Santé Connect", description="Label of the login button")
    mllp_host: str = Field("127.0.0.1", description="HL7 v2 MLLP listen address")
    mllp_port: int = Field(2575, ge=0, description="HL7 v2 MLLP port (0 disables the listener)")
    mllp_workers: int = Field(
        0, ge=0, description="MLLP listener processes sharing the port; 0: one per CPU, at most 4"
    )
    dicom_host: str = Field("127.0.0.1", description="DICOM listen address (the imaging archive)")
    dicom_port: int = Field(
        11112, ge=0, le=65535, description="DICOM port of the imaging archive (0 disables it)"
    )
    dicom_aet: str = Field(
        "ENRS",
        pattern=r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$",
        description="AE title of the imaging archive (1 to 16 characters, no backslash)",
    )
    dicom_workers: int = Field(
        1, ge=1, le=16, description="DICOM listener processes sharing the port (one core each)"
    )
    timezone: str = Field(
        "Europe/Paris", description="Time zone of HL7 v2 and CDA times written without offset"
    )
    document_retention_years: int = Field(
        20, ge=1, description="Years a document is kept (enrs documents retention)"
    )
    imaging_cold_after_days: int = Field(
        0, ge=0, description="Age (days) of a study moved to the cold tier; 0: never"
    )
    imaging_retention_years: int = Field(
        0, ge=0, description="Years after a patient's last exam its studies are deleted; 0: never"
    )
    imaging_manifest_quiet_minutes: int = Field(
        30,
        ge=0,
        description="Minutes without a new instance after which a study with a report is"
        " complete: its KOS manifest is built and filed with the report",
    )
    imaging_finess: str | None = Field(
        None,
        pattern=r"^[0-9][0-9AB][0-9]{7}$",
        description="FINESS of the structure the archive files imaging reports and manifests"
        " under (the DMP needs one); unset: filed without, not sent to the DMP",
    )
    imaging_commitment_retries: int = Field(
        8,
        ge=0,
        le=100,
        description="Attempts after the first to send a Storage Commitment report on a new"
        " association before it is marked failed",
    )
    imaging_commitment_interval: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds before the first retry of a Storage Commitment report, doubled"
        " after each failure (at most an hour)",
    )
    imaging_share_days: int = Field(
        90, ge=1, le=3650, description="Days a study's access code (patient, GP) works"
    )
    dmp_url: str = Field(
        "", description="The national DMP's ITI-41 endpoint; empty: documents stay queued"
    )
    dmp_cert_file: Path | None = Field(None, description="Client certificate for the DMP (PEM)")
    dmp_key_file: Path | None = Field(None, description="Its private key (PEM)")
    dmp_ca_file: Path | None = Field(None, description="CA bundle the DMP's server is checked by")
    dmp_interval: float = Field(30.0, gt=0, description="Seconds between two DMP feed rounds")
    dmp_homologation: str = Field(
        "", description="The DMP homologation number (VIHF LPS_ID_HOMOLOGATION_DMP)"
    )
    dmp_activity_sector: str = Field(
        "SA01^1.2.250.1.71.4.2.4",
        description="VIHF Secteur_Activite (code^OID) when a document's facility type is not one",
    )
    dmp_vihf_minutes: int = Field(60, ge=1, le=1440, description="Validity of a VIHF, in minutes")
    mail_domain: str = Field(
        "enrs.localhost", description="The operator's MSSanté mail domain (its mailboxes)"
    )
    mail_host: str = Field("127.0.0.1", description="Address Postfix and Dovecot listen on")
    smtp_port: int = Field(587, ge=1, description="SMTP submission port (STARTTLS, login)")
    mx_port: int = Field(25, ge=0, description="Inter-operator SMTP port (0: not listened on)")
    imap_port: int = Field(143, ge=1, description="IMAP port (STARTTLS)")
    mail_tls_cert: Path | None = Field(
        None, description="TLS certificate (PEM) of the mail servers; self-signed when unset"
    )
    mail_tls_key: Path | None = Field(None, description="Its private key (PEM)")
    mail_dir: Path | None = Field(
        None, description="Mail servers' configuration, queue and mail store; default data/mail"
    )
    mail_user: str = Field("vmail", description="System user owning the mail store")
    mail_trust_ca: Path | None = Field(
        None, description="Certificates (PEM) the MSSanté trust list's signature is checked by"
    )
    mail_trust_list_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="URL (https or http) the national MSSanté trust list is published at;"
        " the mail service refreshes it from there (empty: imported by hand only)",
    )
    mail_trust_list_every: int = Field(
        6 * 3600, ge=60, description="Seconds between two refreshes of the trust list"
    )
    mail_quota: str = Field(
        "1G",
        pattern=r"^(0|[1-9][0-9]*[KMGT]?)$",
        description="Storage quota of each mailbox (Dovecot units: 500M, 2G; 0: none)",
    )
    mail_peer_ca: Path | None = Field(
        None,
        description="CA certificates (PEM, IGC-Santé) of the other operators' mail servers",
    )
    mail_introspection_url: str = Field(
        "",
        description="URL Dovecot introspects mail clients' tokens at (default: this platform's"
        " /oauth/introspect on the loopback)",
    )
    mss_directory_url: str = Field(
        "",
        description="FHIR base of the national directory the mailboxes are published to"
        " (empty: not published)",
    )
    mss_directory_api_key: SecretStr | None = Field(
        None, description="Its API key (header ESANTE-API-KEY)"
    )
    mail_servers: Literal["auto", "on", "off"] = Field(
        "auto", description="Start Postfix and Dovecot with the platform (auto: when installed)"
    )
    notifications: bool = Field(
        True, description="Send the identity and care circle notifications from serve"
    )
    notifications_mail_from: str = Field(
        "",
        description="Sender of the care circle notifications mailed to professionals"
        " (default ne-pas-repondre@ENRS_MAIL_DOMAIN)",
    )
    identity_model: Path | None = Field(None, description="Matching model JSON; default built in")
    viewer_dir: Path | None = Field(
        None,
        description="The imaging viewer (OHIF's prebuilt dist/, `make viewer`) served under"
        " /imagerie/visionneuse; unset: not installed",
    )
    oid_root: str = Field(
        PLACEHOLDER_OID_ROOT,
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        description="The region's OID arc: RRI authority {root}.1, FINESS-derived {root}.2.*",
    )
    log_level: str = Field("info", description="Log level")
    dev: bool = Field(
        False, description="Development mode: placeholder OID root, test INS and open /docs allowed"
    )

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'enrs.db'}"
        if not self.base_url:
            self.base_url = f"http://{self.http_host}:{self.http_port}"
        self.base_url = self.base_url.rstrip("/")
        if self.keys_dir is None:
            self.keys_dir = self.data_dir / "keys"
        if self.storage_dir is None:
            self.storage_dir = self.data_dir / "blobs"
        if self.storage_cold_dir is None:
            self.storage_cold_dir = self.data_dir / "blobs-cold"
        if self.master_key_file is None:
            self.master_key_file = self.keys_dir / "master-keys.json"
        if self.mail_dir is None:
            self.mail_dir = self.data_dir / "mail"
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """``repr()`` and ``str()`` with the database password hidden (SecretStr hides the
        other secrets)."""
        for name, value in super().__repr_args__():
            yield name, redacted_url(value) if name == "database_url" else value

    @property
    def keys_path(self) -> Path:
        assert self.keys_dir is not None
        return self.keys_dir

    @property
    def storage_path(self) -> Path:
        assert self.storage_dir is not None
        return self.storage_dir

    @property
    def storage_cold_path(self) -> Path:
        assert self.storage_cold_dir is not None
        return self.storage_cold_dir

    @property
    def master_key_path(self) -> Path:
        assert self.master_key_file is not None
        return self.master_key_file

    @property
    def mail_path(self) -> Path:
        assert self.mail_dir is not None
        return self.mail_dir

    @property
    def mllp_processes(self) -> int:
        """MLLP listener processes: ``mllp_workers``, or one per CPU (at most 4)."""
        return self.mllp_workers or max(1, min(os.cpu_count() or 1, 4))

    @property
    def fhir_base(self) -> str:
        return f"{self.base_url}/fhir"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def redacted_url(url: str) -> str:
    """``url`` fit to print or log: a password in it replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy can read: keep only what follows the "@"
        return url.rpartition("@")[2]
