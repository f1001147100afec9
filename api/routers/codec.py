"""Codec server for the Temporal UI: decrypts workflow payloads for authorised admins only.

The Temporal UI (and ``temporal`` CLI) speak a small protocol: ``POST {endpoint}/decode`` and
``POST {endpoint}/encode`` with ``{"payloads": [...]}`` in protobuf JSON form
(``temporalio.api.common.v1.Payload``: base64 ``metadata`` values and ``data``), answered in
the same form. Decoding uses the project's AES-GCM codec with the keys from ``PAYLOAD_KEYS``
(aktenlauf/temporal.py), so the UI shows the plaintext while the Temporal database keeps only
ciphertext. Every decode is an audit event (``temporal.decode``: namespace, payload count,
never content).

The UI runs in a browser on another origin, so CORS is enabled for ``CODEC_CORS_ORIGINS``
on the codec paths only (``install``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from cryptography.exceptions import InvalidTag
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from google.protobuf.message import DecodeError
from sqlalchemy.orm import Session
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from aktenlauf.codec import EncryptionCodec
from aktenlauf.errors import InvalidInput
from aktenlauf.settings import Settings
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from eakte import records

PREFIX = "/v1/codec"
router = APIRouter(prefix=PREFIX, tags=["temporal codec"], dependencies=[require_role("admin")])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["payloads"],
            "properties": {"payloads": {"type": "array", "items": {"type": "object", "properties": {
                "metadata": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"}},
                "data": {"type": "string", "format": "byte"}}}}},
        }}},
    },
}


async def _payloads(request: Request) -> Payloads:
    """The request body as ``Payloads``; anything else is a 422 problem."""
    try:
        body: Any = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("the body is not valid JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("payloads"), list):
        raise InvalidInput('the body must be {"payloads": [...]} (protobuf JSON of temporal.api.common.v1.Payload)')
    try:
        return ParseDict({"payloads": body["payloads"]}, Payloads())
    except (ParseError, ValueError, TypeError) as exc:
        raise InvalidInput(f"payloads are not protobuf JSON Payload objects: {exc}") from exc


def _answer(payloads: list[Any]) -> JSONResponse:
    return JSONResponse(MessageToDict(Payloads(payloads=payloads)))


def _codec(settings: Settings) -> EncryptionCodec:
    return EncryptionCodec(settings.payload_key_ring())


@router.post("/decode", openapi_extra=_BODY_DOC,
             responses={422: {"description": "malformed body, unknown key id or tampered ciphertext"}})
async def decode(request: Request, ctx: Ctx, p: CurrentPrincipal,
                 x_namespace: Annotated[str, Header(alias="X-Namespace", max_length=255)] = "") -> JSONResponse:
    """Decrypt payloads for the Temporal UI (admins only; audited as ``temporal.decode``)."""
    incoming = await _payloads(request)
    try:
        plain = await _codec(ctx.settings).decode(list(incoming.payloads))
    except (ValueError, KeyError, InvalidTag, DecodeError) as exc:
        # never echo payload bytes; the key id (if any) is not secret
        detail = str(exc) if isinstance(exc, ValueError) and "key id" in str(exc) else "a payload could not be decrypted"
        raise InvalidInput(detail) from exc
    namespace = x_namespace or ctx.settings.temporal_namespace

    def log_decode(s: Session) -> None:
        records.audit(s, actor=p.sub, role=p.primary_role, action="temporal.decode", target_type="temporal-namespace",
                      target_id=namespace[:64], details={"namespace": namespace, "payloads": len(plain)})

    await ctx.db(log_decode)
    return _answer(plain)


@router.post("/encode", openapi_extra=_BODY_DOC, responses={422: {"description": "malformed body"}})
async def encode(request: Request, ctx: Ctx) -> JSONResponse:
    """Encrypt payloads with the active key (the UI uses this for signals and queries it sends)."""
    incoming = await _payloads(request)
    return _answer(await _codec(ctx.settings).encode(list(incoming.payloads)))


class PathScopedCORS:
    """Starlette's CORS middleware, applied to one path prefix only (the codec endpoint)."""

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(app, allow_origins=origins, allow_methods=["POST", "OPTIONS"],
                                   allow_headers=["Authorization", "Content-Type", "X-Namespace"],
                                   allow_credentials=True, max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    app.include_router(router)
    origins = [o.strip().rstrip("/") for o in settings.codec_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(PathScopedCORS, prefix=PREFIX + "/", origins=origins)
