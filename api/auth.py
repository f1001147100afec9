"""Bearer-token (JWT, HS256) authentication and role checks."""

from __future__ import annotations

import time
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aktenlauf.errors import Forbidden, Unauthorized
from aktenlauf.settings import Settings
from eakte.access import NAMED_ROLE, ROLES, Principal

bearer = HTTPBearer(auto_error=False, description="JWT minted by `aktenlauf token`")


def mint_token(settings: Settings, sub: str, roles: list[str], departments: list[str] | None = None,
               ttl_seconds: int | None = None) -> str:
    unknown = [r for r in roles if r not in ROLES and not NAMED_ROLE.match(r)]
    if unknown:
        raise ValueError(f"invalid role(s) {unknown}; system roles: {', '.join(ROLES)}; named roles (for "
                         "confidential Akten) are lower-case words")
    now = int(time.time())
    claims = {
        "sub": sub, "roles": roles, "departments": departments or [], "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience, "iat": now, "exp": now + (ttl_seconds or settings.jwt_ttl_seconds),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=["HS256"], audience=settings.jwt_audience,
            issuer=settings.jwt_issuer, options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    roles = claims.get("roles")
    departments = claims.get("departments", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles) or not isinstance(departments, list):
        raise Unauthorized("invalid token: roles and departments must be lists")
    # system roles plus named roles (Funktionsrollen) that confidential Akten may require
    return Principal(sub=str(claims["sub"]), roles=tuple(r for r in roles if r in ROLES or NAMED_ROLE.match(r)),
                     departments=tuple(str(d) for d in departments))


async def current_principal(  # async: pure CPU, no thread-pool hop per request
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    principal = decode_token(request.app.state.ctx.settings, creds.credentials)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: str):  # type: ignore[no-untyped-def]
    async def check(p: CurrentPrincipal) -> Principal:
        if not any(p.has(r) for r in roles):
            raise Forbidden(f"this needs the role {' or '.join(roles)}")
        return p

    return Depends(check)
