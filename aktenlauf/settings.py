"""Settings: one pydantic-settings object, built once at each entry point and passed down.

Every value comes from the environment (or a `.env` file). Names are the plain upper-case
field names (``DATABASE_URL``, ``TEMPORAL_ADDRESS``, ``S3_ENDPOINT`` ...). Outside
``ENVIRONMENT=dev`` the built-in development secrets are refused.
"""

from __future__ import annotations

import base64
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_WEBHOOK_SECRET = "dev-only-payment-webhook-secret"
DEV_CERT_SECRET = "dev-only-certificate-code-secret"
# 32 zero-ish bytes, base64: a development payload key, refused outside dev.
DEV_PAYLOAD_KEYS = "dev1:" + base64.b64encode(b"aktenlauf-dev-payload-key-32byte").decode()
DEV_S3_ACCESS_KEY = "aktenlauf"
DEV_S3_SECRET_KEY = "aktenlauf-dev-secret"
DEV_INTEGRATOR_WEBHOOK_SECRET = "dev-only-integrator-webhook-secret"

DEV_SECRETS = {DEV_JWT_SECRET, DEV_WEBHOOK_SECRET, DEV_CERT_SECRET, DEV_PAYLOAD_KEYS, DEV_S3_SECRET_KEY,
               DEV_INTEGRATOR_WEBHOOK_SECRET}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["dev", "test", "production"] = "dev"
    var_dir: Path = Path("var")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_ca_cert: Path | None = None
    temporal_tls_client_cert: Path | None = None
    temporal_tls_client_key: Path | None = None
    temporal_api_key: str | None = None
    task_queue: str = "aktenlauf-cases"
    ocr_task_queue: str = "aktenlauf-ocr"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    # Browser origins of the Temporal UI allowed to call the codec endpoint /v1/codec (comma-separated)
    codec_cors_origins: str = "http://127.0.0.1:8233,http://localhost:8233"

    # S3 object storage (MinIO in production, SeaweedFS embedded)
    s3_endpoint: str = "127.0.0.1:8333"
    s3_access_key: str = DEV_S3_ACCESS_KEY
    s3_secret_key: str = DEV_S3_SECRET_KEY
    s3_bucket: str = "eakte"
    s3_secure: bool = False
    s3_region: str | None = None

    # Database
    database_url: str = "sqlite:///var/aktenlauf.db"

    # API and auth
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = "http://127.0.0.1:8000"
    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "aktenlauf"
    jwt_audience: str = "aktenlauf-api"
    jwt_ttl_seconds: int = 8 * 3600
    max_upload_bytes: int = 50 * 1024 * 1024
    # how long POST /v1/cases waits for the Aktenzeichen before answering 503 (repeat with the same key)
    register_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # how long a clerk's or integrator's change (decision, document, routing) waits for the case
    # to carry it out before the API answers 503 (the change may still happen: check the case)
    update_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # workflows a case worker keeps in memory between steps (~150 KiB each, bench/open_cases.py);
    # an evicted case is replayed from its short history when it moves again
    workflow_cache_size: int = Field(default=1000, ge=0, le=100_000)
    # repeated views of one case by one caller within this window are covered by one audit event
    # (per API process); 0 audits every view. Document downloads are always audited one by one.
    audit_read_window_s: int = Field(default=300, ge=0, le=3600)

    # Payment (sandbox provider served by the API under /sandbox-pay unless configured)
    payment_provider_url: str = ""
    payment_webhook_secret: str = DEV_WEBHOOK_SECRET
    payment_webhook_tolerance_seconds: int = 300
    # When the provider's callback has not arrived after this long the case asks the provider (status poll),
    # then again after twice as long, up to every 6 hours.
    payment_poll_seconds: int = Field(default=600, ge=1, le=86400)
    # the sandbox provider: an open payment expires after this long (status 'expired', callback sent)
    sandbox_payment_expiry_seconds: int = Field(default=1800, ge=1, le=30 * 86400)

    # Certificates
    certificate_code_secret: str = DEV_CERT_SECRET
    # Electronic seal (elektronisches Siegel, eakte/seal.py): every issued document carries a PAdES
    # signature made with this key and certificate (PEM or DER; an RSA key keeps the sealed bytes
    # deterministic). Unset in dev/test: a self-signed development seal is created once under
    # <VAR_DIR>/seal/. ENVIRONMENT=production refuses to start without both paths.
    # SEAL_KEY_PASSPHRASE is a secret: never logged, shown as ********** in settings dumps.
    seal_key_path: Path | None = None
    seal_cert_path: Path | None = None
    seal_key_passphrase: SecretStr = SecretStr("")
    # Wording of certificates and notices per kind, with per-service overrides (data, not code)
    document_templates_path: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "intake" / "templates.yaml")

    # Personal data in Temporal payloads: "kid:base64key[,kid:base64key...]", first is active
    payload_keys: str = DEV_PAYLOAD_KEYS

    # Service catalog (data, not code)
    catalog_path: Path = Field(default_factory=lambda: Path(__file__).resolve().parent.parent / "intake" / "catalog.yaml")
    # Aktenplan (file plan): subject groups, retention periods, archival appraisal
    aktenplan_path: Path = Field(default_factory=lambda: Path(__file__).resolve().parent.parent / "eakte" / "aktenplan.yaml")

    # Mailroom recognition (issue 4): a letter whose best service suggestion scores at least this
    # starts a case for that service by itself; below it waits in triage (above 1: never automatic)
    mailroom_auto_case_threshold: float = Field(default=0.75, ge=0.0, le=1.01)
    # separator sheets (Trennblätter) in scanned stacks: a page whose barcode/QR says this, or whose
    # text is only this word, ends one letter and starts the next
    mailroom_separator_code: str = Field(default="AKTENLAUF-TRENNBLATT", min_length=3, max_length=100)
    mailroom_separator_text: str = Field(default="TRENNBLATT", min_length=3, max_length=100)

    # Aussonderung: the Temporal Schedule that starts a disposal round daily
    disposal_schedule_enabled: bool = True  # false: the schedule exists but is paused
    disposal_schedule_id: str = Field(default="aktenlauf-disposal", pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    disposal_schedule_hour: int = Field(default=2, ge=0, le=23)
    disposal_schedule_minute: int = Field(default=0, ge=0, le=59)
    disposal_schedule_timezone: str = "Europe/Berlin"
    disposal_confirm_days: int = Field(default=30, ge=1, le=365)  # a round waits this long for confirmations

    # ---------------------------------------------------------------- mailroom intake channels
    # Watched folder: the scanner's output directory. A file is taken once its size and mtime
    # have been unchanged for WATCH_STABLE_SECONDS and no local process has it open for writing;
    # dot files and *.tmp/*.part names (write-then-rename) are ignored. Afterwards it is moved to
    # done/ or, if refused, to failed/ (with <name>.reason.txt), both inside the folder.
    # Unset: no watcher (`aktenlauf dev` watches <VAR_DIR>/poststelle/eingang).
    watch_folder: Path | None = None
    watch_poll_interval_s: float = Field(default=2.0, gt=0, le=3600)
    watch_stable_seconds: float = Field(default=5.0, ge=0, le=3600)
    # E-mail (.eml upload and IMAP): limits per message besides MAX_UPLOAD_BYTES
    mail_max_attachments: int = Field(default=20, ge=1, le=500)
    mail_max_nesting: int = Field(default=8, ge=1, le=50)
    mail_max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # IMAP poller: unset IMAP_HOST = no poller. Each message is submitted once (UIDVALIDITY + UID
    # remembered in IMAP_STATE_FILE, default <VAR_DIR>/imap-state.json) and then moved to
    # IMAP_DONE_MAILBOX (refused ones to IMAP_FAILED_MAILBOX); an empty mailbox name only flags it.
    # IMAP_PASSWORD is a secret: never logged, shown as ********** in settings dumps.
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)  # default: 993 (ssl), else 143
    imap_user: str = ""
    imap_password: SecretStr = SecretStr("")
    imap_mailbox: str = "INBOX"
    imap_tls: Literal["ssl", "starttls", "none"] = "ssl"
    imap_poll_interval_s: float = Field(default=60.0, gt=0, le=86400)
    imap_done_mailbox: str = "Verarbeitet"
    imap_failed_mailbox: str = "Abgelehnt"
    imap_state_file: Path | None = None
    # ---------------------------------------------------------------- end mailroom intake channels

    # ---------------------------------------------------------------- dispatch (issue 5)
    # E-mail dispatch of certificates/notices and applicant notifications over SMTP. Unset SMTP_HOST:
    # the e-mail channel is not available and the next channel the service allows is used.
    # SMTP_PASSWORD is a secret: never logged, shown as ********** in settings dumps.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str = Field(default="Stadtverwaltung <noreply@aktenlauf.invalid>", min_length=3, max_length=300)
    smtp_starttls: bool = True
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_s: float = Field(default=20.0, gt=0, le=300)
    # Webhooks to the integrator's notify_url (document.issued), signed like the payment callbacks:
    # X-Aktenlauf-Signature: t=<unix>,v1=<HMAC-SHA256 hex of "<t>.<body>">
    integrator_webhook_secret: str = DEV_INTEGRATOR_WEBHOOK_SECRET
    integrator_webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # an e-mail or webhook dispatch given up after this many failed attempts (Temporal retries with
    # back-off up to 1 min apart): the next channel the service allows takes over (the portal at last)
    dispatch_max_attempts: int = Field(default=30, ge=1, le=1000)
    # ---------------------------------------------------------------- end dispatch

    # OCR limits
    ocr_max_pages: int = 200
    ocr_timeout_per_page_s: float = 60.0
    ocr_memory_limit_mb: int = 2048
    # parallel OCR jobs per OCR worker (one child process each): default one per core this process
    # may use; each job's tesseract runs OCR_TESSERACT_THREADS threads (set in the child, not here)
    ocr_concurrency: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)) or 1, ge=1, le=64)
    ocr_tesseract_threads: int = Field(default=1, ge=1, le=16)

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_dev(self) -> Settings:
        if self.environment == "dev" or self.environment == "test":
            return self
        used = [
            name
            for name in ("jwt_secret", "payment_webhook_secret", "certificate_code_secret", "payload_keys", "s3_secret_key",
                         "integrator_webhook_secret")
            if getattr(self, name) in DEV_SECRETS
        ]
        if used:
            raise ValueError(
                f"refusing to start with development secrets outside dev: set {', '.join(n.upper() for n in used)}"
            )
        if self.imap_host and self.imap_tls == "none" and self.imap_host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("IMAP_TLS=none sends the mailbox password in clear text: use ssl or starttls")
        if (self.smtp_host and self.smtp_user and not self.smtp_starttls
                and self.smtp_host not in ("127.0.0.1", "::1", "localhost")):
            raise ValueError("SMTP_STARTTLS=false sends the SMTP password in clear text: enable STARTTLS")
        if len(self.jwt_secret) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return self

    @model_validator(mode="after")
    def _seal_configured_in_production(self) -> Settings:
        if self.environment == "production" and (self.seal_key_path is None or self.seal_cert_path is None):
            raise ValueError("ENVIRONMENT=production needs the authority's seal: set SEAL_KEY_PATH and "
                             "SEAL_CERT_PATH (the development seal is refused outside dev and test)")
        return self

    @cached_property
    def payment_base_url(self) -> str:
        return self.payment_provider_url.rstrip("/") or self.public_base_url.rstrip("/") + "/sandbox-pay"

    def payload_key_ring(self) -> list[tuple[str, bytes]]:
        """Parse PAYLOAD_KEYS into (key id, 32-byte key); the first one encrypts."""
        ring: list[tuple[str, bytes]] = []
        for part in self.payload_keys.split(","):
            part = part.strip()
            if not part:
                continue
            kid, _, b64 = part.partition(":")
            key = base64.b64decode(b64)
            if len(key) not in (16, 24, 32):
                raise ValueError(f"payload key {kid!r} must be 16, 24 or 32 bytes")
            ring.append((kid, key))
        if not ring:
            raise ValueError("PAYLOAD_KEYS is empty")
        return ring
