"""Declare the problem+json error answers in the OpenAPI document.

FastAPI documents only the success response and its own 422 shape (``HTTPValidationError``),
but every error this API answers with is RFC 9457 problem+json (api/problems.py). This
module rewrites the generated document once, so that clients and the schema fuzzer
(tests/integration/test_fuzz_api.py) see what the API really answers:

* a ``Problem`` component schema, served as ``application/problem+json``;
* on every operation: 413 (the request-size guard), 422 (validation) and 503 with
  ``Retry-After`` (a backing service is unavailable);
* operations behind the bearer token: 401 and 403;
* operations with path parameters: 404 (unknown or invisible id);
* operations with a request body: 400 (an unparseable body);
* any other error status a route declares itself (409, 415, ...) gets the problem body too,
  unless the route documents its own content (e.g. ``/readyz``'s 503).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

MEDIA_TYPE = "application/problem+json"
REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` is `urn:aktenlauf:problem:<code>`.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "stable, machine-readable error type"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {"type": "array", "items": {"type": "object"},
                   "description": "for 422: where the request does not match the schema"},
    },
    "additionalProperties": True,
}

DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (the body cannot be parsed)",
    401: "Authentication required (no, an invalid or an expired bearer token)",
    403: "Forbidden (the role or department does not allow this)",
    404: "Not found (or not visible to the caller)",
    409: "Conflict with the current state",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request",
    503: "A backing service is unavailable; retry after the given seconds",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _statuses(operation: dict[str, Any], path: str) -> set[int]:
    wanted = {413, 422, 503}
    if operation.get("security"):
        wanted |= {401, 403}
    if "{" in path:
        wanted.add(404)
    if "requestBody" in operation:
        wanted.add(400)
    return wanted


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def declare_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Add the problem+json error responses to every operation of an OpenAPI document (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(operation, path):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for key, response in responses.items():
                if not key.isdigit() or int(key) < 400:
                    continue
                if "content" in response and not _is_fastapi_validation(response):
                    continue  # the route documents its own error body
                response["content"] = {MEDIA_TYPE: {"schema": {"$ref": REF}}}
                if key == "422" and response.get("description") == "Validation Error":
                    response["description"] = DESCRIPTIONS[422]
                if key == "503":
                    response.setdefault("headers", {}).update(RETRY_AFTER)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) declare the problem+json responses."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
