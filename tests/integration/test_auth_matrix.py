"""The authorisation matrix over EVERY route of the app, enumerated from the app itself, so a
new endpoint cannot escape it: it must be listed below as public or with the roles its gate
lets in, or these tests fail.

* without a token every non-public route answers 401 problem+json;
* every role × every route with guessed ids never gets a 2xx (404/403/422, never 5xx);
* roles outside a route's gate get 403;
* strangers (clerk of another department, another integrator, mailroom, archivist) get no 2xx
  on any route applied to a real, open case of the Bürgerbüro;
* forged, expired, immature, unsigned, mis-addressed and malformed tokens are refused with 401.

Single reads of one case per role are in test_records_access.py; this file is the sweep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import uuid
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from api.auth import current_principal
from eakte.models import Vorgang
from tests.integration.helpers import MELDE, PDF, application, wait_for_case

ALL = frozenset({"integrator", "clerk", "mailroom", "admin", "archivist"})
MAILROOM_AND_CLERKS = frozenset({"mailroom", "admin", "clerk"})

# Routes anyone may call without a bearer token, and why.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/v1/services"): "the public service catalogue",
    ("GET", "/v1/verify/{code}"): "anyone holding a certificate may verify it",
    ("POST", "/v1/payments/webhook"): "authenticated by its HMAC signature, not a bearer token",
    ("POST", "/sandbox-pay/api/payments"): "sandbox payment provider (stands in for an external service)",
    ("GET", "/sandbox-pay/api/payments/{payment_id}"): "sandbox payment provider",
    ("POST", "/sandbox-pay/api/payments/{payment_id}/cancel"): "sandbox payment provider",
    ("GET", "/sandbox-pay/pay/{payment_id}"): "sandbox payment page (the citizen's browser)",
    ("POST", "/sandbox-pay/pay/{payment_id}"): "sandbox payment page (the citizen's browser)",
    ("POST", "/sandbox-pay/api/payments/{payment_id}/refunds"): "sandbox payment provider",
    ("POST", "/v1/verify/{code}"): "anyone may check a PDF they hold against the issued one",
    ("GET", "/v1/status/{aktenzeichen}"): "the citizen's status page, authenticated by the case's access code",
    ("GET", "/metrics"): "Prometheus scrape: aggregate figures only",
    ("GET", "/v1/opendata/statistics"): "open data: aggregates, small counts suppressed",
    ("GET", "/openapi.json"): "API description",
    ("GET", "/docs"): "API description",
    ("GET", "/docs/oauth2-redirect"): "API description",
    ("GET", "/redoc"): "API description",
}

# Protected routes: the system roles the route's gate lets through (what they then see is
# decided per resource by eakte.access). A new protected route must be added here.
GATES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/cases"): frozenset({"integrator"}),
    ("GET", "/v1/cases/{case_id}"): ALL,
    ("POST", "/v1/cases/{case_id}/documents"): ALL,
    ("POST", "/v1/cases/{case_id}/route"): frozenset({"mailroom"}),
    ("POST", "/v1/cases/{case_id}/decision"): frozenset({"clerk"}),
    ("POST", "/v1/cases/{case_id}/notes"): frozenset({"clerk"}),
    ("GET", "/v1/tasks"): frozenset({"clerk"}),
    ("GET", "/v1/documents/{document_id}"): ALL,
    ("GET", "/v1/documents/{document_id}/content"): ALL,
    ("GET", "/v1/documents/{document_id}/versions/{number}/content"): ALL,
    ("POST", "/v1/documents/{document_id}/versions"): ALL,
    ("POST", "/v1/mailroom/scans"): frozenset({"mailroom", "admin"}),
    ("POST", "/v1/mailroom/emails"): frozenset({"mailroom", "admin"}),
    # clerks pass the gate: they see (and act on) only the letters routed to their departments
    ("GET", "/v1/mailroom/items"): MAILROOM_AND_CLERKS,
    ("GET", "/v1/mailroom/separator-sheet"): MAILROOM_AND_CLERKS,
    ("GET", "/v1/mailroom/items/{item_id}"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/assign"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/route"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/new-case"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/split"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/merge"): MAILROOM_AND_CLERKS,
    ("POST", "/v1/mailroom/items/{item_id}/close"): MAILROOM_AND_CLERKS,
    ("GET", "/v1/admin/cases"): frozenset({"admin"}),
    ("GET", "/v1/admin/cases/{case_id}"): frozenset({"admin"}),
    ("GET", "/v1/aktenplan"): ALL,
    ("GET", "/v1/akten/{akte_id}"): ALL,
    ("PUT", "/v1/akten/{akte_id}/confidentiality"): ALL,
    ("GET", "/v1/akten"): ALL,
    ("GET", "/v1/admin/audit"): frozenset({"admin"}),
    ("GET", "/v1/admin/audit/subject/{applicant_id}"): frozenset({"admin"}),
    ("GET", "/v1/search"): ALL,
    ("GET", "/v1/admin/akten/{akte_id}/export"): frozenset({"admin"}),
    ("POST", "/v1/admin/akten/import"): frozenset({"admin"}),
    ("GET", "/v1/admin/disposal"): frozenset({"archivist", "admin"}),
    ("POST", "/v1/admin/disposal/{akte_id}/confirm"): frozenset({"archivist", "admin"}),
    ("PUT", "/v1/admin/akten/{akte_id}/legal-hold"): frozenset({"archivist", "admin"}),
    ("DELETE", "/v1/admin/akten/{akte_id}/legal-hold"): frozenset({"archivist", "admin"}),
    ("GET", "/v1/admin/disposal/records"): frozenset({"archivist", "admin"}),
    ("POST", "/v1/codec/decode"): frozenset({"admin"}),
    ("POST", "/v1/codec/encode"): frozenset({"admin"}),
    # casework (issue 5)
    ("POST", "/v1/cases/{case_id}/cosign"): frozenset({"clerk"}),
    ("POST", "/v1/cases/{case_id}/deadline"): frozenset({"clerk", "teamlead", "admin"}),
    ("POST", "/v1/cases/{case_id}/withdraw"): ALL,
    ("GET", "/v1/cases/{case_id}/messages"): ALL,
    ("GET", "/v1/tasks/mine"): frozenset({"clerk"}),
    ("POST", "/v1/tasks/{case_id}/claim"): frozenset({"clerk"}),
    ("POST", "/v1/tasks/{case_id}/unclaim"): frozenset({"clerk"}),
    ("POST", "/v1/tasks/{case_id}/reassign"): frozenset({"teamlead"}),
    ("PUT", "/v1/tasks/{case_id}/priority"): frozenset({"teamlead"}),
    ("POST", "/v1/deputies"): frozenset({"clerk"}),
    ("GET", "/v1/deputies"): frozenset({"clerk"}),
    ("DELETE", "/v1/deputies/{deputy_id}"): frozenset({"clerk"}),
    ("GET", "/v1/notifications"): frozenset({"clerk", "teamlead", "admin"}),
    ("POST", "/v1/notifications/{notification_id}/read"): frozenset({"clerk", "teamlead", "admin"}),
    ("GET", "/v1/admin/print-batches"): frozenset({"admin", "mailroom"}),
    ("GET", "/v1/admin/print-batches/{batch_date}"): frozenset({"admin", "mailroom"}),
    ("GET", "/v1/admin/cases/counts"): frozenset({"admin"}),
    ("POST", "/v1/admin/cases/{case_id}/retry"): frozenset({"admin"}),
    ("POST", "/v1/admin/cases/{case_id}/cancel"): frozenset({"admin"}),
    ("POST", "/v1/admin/cases/{case_id}/terminate"): frozenset({"admin"}),
    ("POST", "/v1/admin/cases/{case_id}/reroute"): frozenset({"admin"}),
    ("POST", "/v1/admin/cases/batch"): frozenset({"admin"}),
}


def _pdf_upload(**data: str) -> dict[str, Any]:
    return {"files": {"file": ("matrix.pdf", io.BytesIO(PDF + uuid.uuid4().hex.encode()), "application/pdf")},
            "data": data}


# A well-formed request per route, so that a refusal is about access, not about the body.
REQUESTS: dict[tuple[str, str], Any] = {
    ("POST", "/v1/cases"): lambda: {"json": application(MELDE)},
    ("POST", "/v1/cases/{case_id}/documents"): lambda: _pdf_upload(),
    ("POST", "/v1/cases/{case_id}/route"): lambda: {"json": {"service_key": MELDE}},
    ("POST", "/v1/cases/{case_id}/decision"): lambda: {"json": {"decision": "approve"}},
    ("POST", "/v1/cases/{case_id}/notes"): lambda: {"json": {"text": "Vermerk aus der Rechteprüfung"}},
    ("POST", "/v1/documents/{document_id}/versions"): lambda: _pdf_upload(reason="Rechteprüfung"),
    ("POST", "/v1/mailroom/scans"): lambda: _pdf_upload(),
    ("POST", "/v1/mailroom/items/{item_id}/assign"): lambda: {"json": {"aktenzeichen": "32.10-2026-000001"}},
    ("POST", "/v1/mailroom/emails"): lambda: {"files": {"files": (
        "brief.eml", io.BytesIO(b"From: a@example.org\r\nTo: post@example.org\r\nSubject: Test\r\n\r\nHallo "
                                + uuid.uuid4().hex.encode() + b"\r\n"), "message/rfc822")}},
    ("POST", "/v1/mailroom/items/{item_id}/route"): lambda: {"json": {"department": "buergerbuero"}},
    ("POST", "/v1/mailroom/items/{item_id}/new-case"): lambda: {"json": {"service_key": MELDE}},
    ("POST", "/v1/mailroom/items/{item_id}/split"): lambda: {"json": {"parts": [[1, 1], [2, 2]]}},
    ("POST", "/v1/mailroom/items/{item_id}/merge"): lambda: {"json": {"item_ids": ["mail-0123456789abcdef"]}},
    ("POST", "/v1/mailroom/items/{item_id}/close"): lambda: {"json": {"reason": "Rechteprüfung"}},
    ("GET", "/v1/akten"): lambda: {"params": {"aktenzeichen": "32.10-2026-000001"}},
    ("PUT", "/v1/akten/{akte_id}/confidentiality"): lambda: {
        "json": {"confidential": True, "roles": ["personalrat"], "reason": "Rechteprüfung"}},
    ("GET", "/v1/admin/audit/subject/{applicant_id}"): lambda: {"params": {"reason": "Auskunftsersuchen Rechteprüfung"}},
    ("GET", "/v1/search"): lambda: {"params": {"q": "Antrag"}},
    ("GET", "/v1/admin/akten/{akte_id}/export"): lambda: {"params": {"reason": "Rechteprüfung"}},
    ("POST", "/v1/admin/akten/import"): lambda: {
        "files": {"file": ("akte.zip", io.BytesIO(b"PK\x05\x06" + b"\0" * 18), "application/zip")}},
    ("POST", "/v1/admin/disposal/{akte_id}/confirm"): lambda: {"json": {"action": "archive"}},
    ("PUT", "/v1/admin/akten/{akte_id}/legal-hold"): lambda: {"json": {"reason": "Rechtsstreit Rechteprüfung"}},
    ("DELETE", "/v1/admin/akten/{akte_id}/legal-hold"): lambda: {"json": {"reason": "Rechtsstreit beendet"}},
    ("POST", "/v1/codec/decode"): lambda: {"json": {"payloads": []}},
    ("POST", "/v1/codec/encode"): lambda: {"json": {"payloads": []}},
    ("POST", "/v1/cases/{case_id}/cosign"): lambda: {"json": {"agree": True}},
    ("POST", "/v1/cases/{case_id}/deadline"): lambda: {"json": {"days": 3, "reason": "Rechteprüfung"}},
    ("POST", "/v1/cases/{case_id}/withdraw"): lambda: {"json": {"reason": "Rechteprüfung"}},
    ("POST", "/v1/tasks/{case_id}/reassign"): lambda: {"json": {"to": "clerk-x", "reason": "Rechteprüfung"}},
    ("PUT", "/v1/tasks/{case_id}/priority"): lambda: {"json": {"priority": "high"}},
    ("POST", "/v1/deputies"): lambda: {"json": {"deputy": "clerk-x", "department": "buergerbuero",
                                                "valid_until": "2099-01-01T00:00:00+00:00"}},
    ("POST", "/v1/admin/cases/{case_id}/retry"): lambda: {"json": {"reason": "Rechteprüfung"}},
    ("POST", "/v1/admin/cases/{case_id}/cancel"): lambda: {"json": {"reason": "Rechteprüfung"}},
    ("POST", "/v1/admin/cases/{case_id}/terminate"): lambda: {"json": {"reason": "Rechteprüfung"}},
    ("POST", "/v1/admin/cases/{case_id}/reroute"): lambda: {"json": {"reason": "Rechteprüfung",
                                                                     "department": "standesamt"}},
    ("POST", "/v1/admin/cases/batch"): lambda: {"json": {"operation": "retry", "filter": {}, "reason": "Rechteprüfung",
                                                         "dry_run": True}},
}

PRINCIPALS: dict[str, tuple[str, list[str], list[str]]] = {
    "integrator": ("portal-matrix", ["integrator"], []),
    "integrator_other": ("portal-matrix-x", ["integrator"], []),
    "clerk_own": ("clerk-matrix-bb", ["clerk"], ["buergerbuero"]),
    "clerk_other": ("clerk-matrix-sta", ["clerk"], ["standesamt"]),
    "mailroom": ("post-matrix", ["mailroom"], []),
    "admin": ("admin-matrix", ["admin"], []),
    "archivist": ("archiv-matrix", ["archivist"], []),
}
STRANGERS = ("integrator_other", "clerk_other", "mailroom", "archivist")

# Routes with an id that are queries rather than resources: a guessed id answers an empty result.
QUERIES: dict[tuple[str, str], str] = {
    ("GET", "/v1/admin/audit/subject/{applicant_id}"):
        "an Auskunft (Art. 15 DSGVO) about a person of whom nothing is held answers an empty report",
}


def _uses_principal(d: Dependant) -> bool:
    return d.call is current_principal or any(_uses_principal(sub) for sub in d.dependencies)


def _routes() -> dict[tuple[str, str], bool]:
    """Every (method, path) the app serves → whether it needs a bearer token."""
    from api.app import create_app

    out: dict[tuple[str, str], bool] = {}
    for rc in iter_route_contexts(create_app().routes):
        route = rc.original_route
        for method in sorted(getattr(route, "methods", None) or ()):
            if method in ("HEAD", "OPTIONS"):
                continue
            protected = isinstance(route, APIRoute) and _uses_principal(route.dependant)
            out[(method, rc.path or route.path)] = protected  # type: ignore[attr-defined]
    return out


ROUTES = _routes()
PROTECTED = sorted(k for k, v in ROUTES.items() if v)


def _url(path: str, ids: dict[str, str]) -> str:
    out = path
    for name, value in ids.items():
        out = out.replace("{" + name + "}", value)
    assert "{" not in out, f"no test value for a path parameter of {path}: add it to the id maps"
    return out


def _guessed_ids() -> dict[str, str]:
    g = uuid.uuid4().hex
    return {"case_id": f"case-{g}", "document_id": g, "akte_id": g, "item_id": g, "payment_id": g,
            "code": g[:12].upper(), "applicant_id": f"bund-id-{g[:8]}", "number": "1", "deputy_id": g,
            "notification_id": "2147483646", "batch_date": "2001-01-01", "aktenzeichen": "99.99-2026-999999"}


def _request(key: tuple[str, str]) -> dict[str, Any]:
    make = REQUESTS.get(key)
    return make() if make else {}


def _headers(stack, who: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    sub, roles, deps = PRINCIPALS[who]
    return stack.token_for(sub, roles, deps)


def test_the_public_routes_are_exactly_the_listed_ones_and_every_other_route_is_gated() -> None:
    public = {k for k, protected in ROUTES.items() if not protected}
    assert public == set(PUBLIC), f"unlisted public routes: {public - set(PUBLIC)}; no longer public: {set(PUBLIC) - public}"
    assert set(PROTECTED) == set(GATES), (f"protected routes missing in GATES: {set(PROTECTED) - set(GATES)}; "
                                          f"stale entries: {set(GATES) - set(PROTECTED)}")
    assert len(PROTECTED) >= 30  # the enumeration found the app's routes (it is not vacuous)


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
async def test_no_token_means_401_on_every_protected_route(stack, route) -> None:
    method, path = route
    async with stack.client() as http:
        r = await http.request(method, _url(path, _guessed_ids()), **_request(route))
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_public_routes_answer_without_a_token(stack) -> None:
    async with stack.client() as http:
        for method, path in PUBLIC:
            if (method, path) == ("POST", "/v1/payments/webhook"):
                continue  # refused by its HMAC check instead (test_payment.py)
            r = await http.request(method, _url(path, _guessed_ids()), **_request((method, path)))
            assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code)


@pytest.mark.parametrize("who", list(PRINCIPALS))
async def test_guessed_ids_and_foreign_gates_never_give_access(stack, who) -> None:
    """Every protected route for this role: guessed ids never answer 2xx (nor 5xx); a route whose
    gate does not admit the role answers 403 even without any id."""
    h = _headers(stack, who)
    role = PRINCIPALS[who][1][0]
    failures: list[str] = []
    async with stack.client() as http:
        for method, path in PROTECTED:
            has_ids = "{" in path
            if not has_ids and role in GATES[(method, path)]:
                continue  # the role's own lists and searches: not a resource guess
            r = await http.request(method, _url(path, _guessed_ids()), headers=h, **_request((method, path)))
            wanted = {403} if role not in GATES[(method, path)] else {403, 404, 422}
            if (method, path) in QUERIES and role in GATES[(method, path)]:
                if r.status_code != 200 or r.json()["cases"] or r.json()["events"]["items"]:
                    failures.append(f"{method} {path}: {r.status_code} (want an empty report) {r.text[:200]}")
                continue
            if r.status_code not in wanted or not r.headers["content-type"].startswith("application/problem+json"):
                failures.append(f"{method} {path}: {r.status_code} (want {sorted(wanted)}) {r.text[:200]}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
async def open_case(stack) -> dict[str, str]:
    """A Meldebescheinigung of the Bürgerbüro waiting for its decision, with an upload."""
    portal = _headers(stack, "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal, **_pdf_upload())
        assert up.status_code == 201, up.text
    with stack.sessions()() as s:
        v = s.scalar(select(Vorgang).where(Vorgang.id == case_id))
        return {"case_id": case_id, "document_id": up.json()["document_id"], "akte_id": v.akte_id,
                "applicant_id": v.applicant_id}


@pytest.mark.parametrize("who", STRANGERS)
async def test_strangers_get_nothing_from_a_real_case_on_any_route(stack, open_case, who) -> None:
    h = _headers(stack, who)
    failures: list[str] = []
    async with stack.client() as http:
        for method, path in PROTECTED:
            if not any("{" + k + "}" in path for k in ("case_id", "document_id", "akte_id", "applicant_id")):
                continue
            ids = {**_guessed_ids(), **open_case}
            r = await http.request(method, _url(path, ids), headers=h, **_request((method, path)))
            if r.status_code < 300 or r.status_code >= 500 or r.status_code == 401:
                failures.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
        # and the case stayed as it was: nobody decided, re-routed or confidential-marked it
        case = (await http.get(f"/v1/cases/{open_case['case_id']}", headers=_headers(stack, "clerk_own"))).json()
    assert not failures, "\n".join(failures)
    assert case["status"] == "awaiting_decision" and case["department"] == "buergerbuero"


# --------------------------------------------------------------------------- token attacks


def _claims(stack, **override: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "clerk-attack", "roles": ["clerk"], "departments": ["buergerbuero"],
                              "iss": stack.settings.jwt_issuer, "aud": stack.settings.jwt_audience,
                              "iat": now, "exp": now + 600}
    for k, v in override.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jws(claims: Any, key: str | None, alg: str = "HS256") -> str:
    """A compact JWS built by hand, so that keys PyJWT would refuse to sign with can be tried."""
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    if key is None:
        return head + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    return head + "." + _b64(hmac.new(key.encode(), head.encode(), digest).digest())


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return _jws(claims, None, alg)


def _attacks(stack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    s = stack.settings
    now = int(time.time())
    sign = lambda claims, key=s.jwt_secret, alg="HS256": _jws(claims, key, alg)  # noqa: E731
    return {
        "expired": sign(_claims(stack, iat=now - 1200, exp=now - 600)),
        "issued in the future": sign(_claims(stack, iat=now + 3600, exp=now + 7200)),
        "not yet valid (nbf)": sign(_claims(stack, nbf=now + 3600)),
        "wrong signature": sign(_claims(stack), "an-attackers-own-secret-0123456789abcdef"),
        "signed with the webhook secret": sign(_claims(stack), s.payment_webhook_secret),
        "signed with the certificate secret": sign(_claims(stack), s.certificate_code_secret),
        "signed with the audience as key": sign(_claims(stack), s.jwt_audience),
        "signed with an empty key": sign(_claims(stack), ""),
        "alg none": _unsigned(_claims(stack)),
        "alg none, upper case": _unsigned(_claims(stack), "NONE"),
        "alg none with the real signature": _unsigned(_claims(stack), "none")[:-1] + "."
        + sign(_claims(stack)).rsplit(".", 1)[1],
        "right key, HS512": sign(_claims(stack), s.jwt_secret, "HS512"),
        "signature stripped": sign(_claims(stack)).rsplit(".", 1)[0] + ".",
        "missing sub": sign(_claims(stack, sub=None)),
        "missing exp": sign(_claims(stack, exp=None)),
        "missing iat": sign(_claims(stack, iat=None)),
        "missing iss": sign(_claims(stack, iss=None)),
        "missing aud": sign(_claims(stack, aud=None)),
        "wrong issuer": sign(_claims(stack, iss="someone-else")),
        "wrong audience": sign(_claims(stack, aud="another-api")),
        "roles not a list": sign(_claims(stack, roles="clerk")),
        "roles not strings": sign(_claims(stack, roles=[{"role": "clerk"}])),
        "departments not a list": sign(_claims(stack, departments="buergerbuero")),
        "claims not an object": sign(["clerk"]),
        "garbage": "eyJ.not.a.token",
    }


ATTACKS = ["expired", "issued in the future", "not yet valid (nbf)", "wrong signature",
           "signed with the webhook secret", "signed with the certificate secret", "signed with the audience as key",
           "signed with an empty key", "alg none", "alg none, upper case",
           "alg none with the real signature", "right key, HS512", "signature stripped",
           "missing sub", "missing exp", "missing iat", "missing iss", "missing aud", "wrong issuer", "wrong audience",
           "roles not a list", "roles not strings", "departments not a list", "claims not an object", "garbage"]


async def test_a_well_formed_token_is_accepted_so_the_attacks_below_are_not_vacuous(stack) -> None:
    token = _jws(_claims(stack), stack.settings.jwt_secret)  # built like the attacks below
    async with stack.client() as http:
        assert (await http.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})).status_code == 200


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_or_malformed_tokens_are_refused_with_401(stack, attack) -> None:
    token = _attacks(stack)[attack]
    async with stack.client() as http:
        for url in ("/v1/tasks", "/v1/admin/cases"):
            r = await http.get(url, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (attack, url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert token not in r.text
