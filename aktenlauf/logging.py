"""structlog, configured once per process: JSON when not on a terminal, console otherwise.

Context (request id, case id, Aktenzeichen, workflow id) is bound with
``structlog.contextvars.bind_contextvars`` and appears on every line. Standard-library
loggers (uvicorn, temporalio) are routed through the same renderer. Every line passes
``redact`` last: the process's secrets (``register_secrets``), bearer tokens and JWTs are
replaced by ``[redacted]`` — a safety net; personal data is kept out at the source.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import structlog

_configured = False
_secrets: set[str] = set()
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MIN_SECRET_LEN = 8  # shorter values would redact ordinary words
REDACTED = "[redacted]"


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never appear in a log line (they are replaced by ``[redacted]``)."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LEN)


def secret_values(settings: Any) -> list[str]:
    """The secrets a process holds: JWT, webhook and certificate secrets, S3 and Temporal keys,
    the payload keys (each key and the whole setting), the database and the IMAP password."""
    values = [settings.jwt_secret, settings.payment_webhook_secret, settings.certificate_code_secret,
              settings.s3_secret_key, settings.temporal_api_key, settings.payload_keys]
    imap_password = getattr(settings, "imap_password", None)
    if imap_password is not None:
        values.append(imap_password.get_secret_value())
    seal_passphrase = getattr(settings, "seal_key_passphrase", None)
    if seal_passphrase is not None:
        values.append(seal_passphrase.get_secret_value())
    smtp_password = getattr(settings, "smtp_password", None)
    if smtp_password is not None:
        values.append(smtp_password.get_secret_value())
    values.append(getattr(settings, "integrator_webhook_secret", "") or "")
    for part in settings.payload_keys.split(","):
        values.append(part.strip().partition(":")[2])
    try:
        values.append(urlsplit(settings.database_url).password)
    except ValueError:
        pass
    return [v for v in values if v]


def _scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(r"\1 " + REDACTED, text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: registered secrets, bearer tokens and JWTs never reach the output."""
    return {k: _scrub_value(v) for k, v in event_dict.items()}


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # a line below the level is dropped before any processor runs (the API logs one line per
        # request at INFO: under LOG_LEVEL=WARNING it costs a level check, not a rendered event)
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else structlog.processors.ExceptionRenderer(),
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn").handlers.clear()
    logging.getLogger("uvicorn.error").handlers.clear()
