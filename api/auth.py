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


#: tokens verified recently: (secret, audience, issuer, token) → (principal, exp). Every request
#: carries its bearer token, and a portal or clerk sends the same one until it expires: the HMAC
#: check and claim validation are done once, the expiry is checked on every use. Only tokens that
#: passed every check are kept (a refused token is checked again each time and refused the same
#: way); a token that once passed stays valid until ``exp`` (its ``iat``/``nbf`` only lie further
#: in the past as time goes on).
_VERIFIED: dict[tuple[str, str, str, str], tuple[Principal, int]] = {}
_VERIFIED_MAX = 10_000


def decode_token(settings: Settings, token: str) -> Principal:
    key = (settings.jwt_secret, settings.jwt_audience, settings.jwt_issuer, token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        if hit[1] > time.time():  # PyJWT's rule: expired once exp <= now
            return hit[0]
        _VERIFIED.pop(key, None)  # expired: the full check below refuses it with its usual message
    principal, exp = _decode_token(settings, token)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = (principal, exp)
    return principal


def _decode_token(settings: Settings, token: str) -> tuple[Principal, int]:
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
    return (Principal(sub=str(claims["sub"]), roles=tuple(r for r in roles if r in ROLES or NAMED_ROLE.match(r)),
                      departments=tuple(str(d) for d in departments)), int(claims["exp"]))


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
