"""Per-request context as a plain ASGI middleware (no extra task or body wrapping per request,
unlike ``@app.middleware("http")``): request id, log context, the declared-size check, and one
log line per request."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems

log = structlog.get_logger("api.app")


class RequestContext:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers") or ():
            headers.setdefault(k, v)  # the first of repeated headers, as Starlette's Request does
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        path = scope.get("path", "")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, method=scope.get("method", ""), path=path)
        status: dict[str, Any] = {"code": 500}
        rid = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            resp = problems.problem(413, "Payload too large", f"requests are limited to {self.limit} bytes",
                                    code="payload-too-large", instance=path)
            await resp(scope, receive, send_with_id)
        else:
            try:
                await self.app(scope, receive, send_with_id)
            except BaseException:
                log.info("request", status=500)  # the server-error handler outside answers it
                raise
        log.info("request", status=status["code"])
