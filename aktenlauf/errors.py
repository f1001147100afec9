"""A small error hierarchy with behaviour as class attributes.

`status` is the HTTP status the API answers with (RFC 9457 problem+json), `retryable`
tells activities whether Temporal should retry (non-retryable ones become
non-retryable ApplicationErrors), `code` is the stable machine-readable type.
"""

from __future__ import annotations


class AktenlaufError(Exception):
    status: int = 500
    retryable: bool = False
    code: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str = "", **extra: object) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidInput(AktenlaufError):
    status = 422
    code = "invalid-input"
    title = "Invalid input"


class NotFound(AktenlaufError):
    status = 404
    code = "not-found"
    title = "Not found"


class Unauthorized(AktenlaufError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(AktenlaufError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class Conflict(AktenlaufError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(AktenlaufError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(AktenlaufError):
    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class IntegrityViolation(AktenlaufError):
    """Stored bytes do not match their recorded SHA-256: refused loudly, never served."""

    status = 500
    code = "integrity-violation"
    title = "Stored document failed its integrity check"


class Unavailable(AktenlaufError):
    status = 503
    retryable = True
    code = "unavailable"
    title = "A backing service is unavailable"


class UnacceptableFile(InvalidInput):
    """An upload of a supported type that cannot be filed as it is (damaged, encrypted, a
    decompression bomb, an absurd image size); ``code`` says which (``pdf-encrypted``, ...)."""

    code = "unacceptable-file"
    title = "The file cannot be accepted"

    def __init__(self, code: str, detail: str, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.code = code
