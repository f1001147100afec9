"""Nothing secret in the logs: a complete case (submission, upload, decision, payment,
certificate, a few refused requests and a codec decode) is run with the production log
configuration at DEBUG, and everything the API and the worker log is searched for tokens,
keys and the applicant's personal data."""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from collections.abc import Iterator

import jwt
import pytest
import structlog

from aktenlauf.logging import REDACTED, configure_logging, register_secrets, secret_values
from tests.integration.helpers import MELDE, PDF, application, approve_and_pay



@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of this process (API, worker thread, Temporal SDK) rendered as in production."""
    configure_logging("INFO", "json")
    root = logging.getLogger()
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(root.handlers[0].formatter)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_a_complete_case_logs_no_token_key_or_personal_data(stack, captured_logs) -> None:
    tag = uuid.uuid4().hex[:6]
    name, street, town = f"Quirin Geheimhaber {tag}", f"Verborgene Gasse {tag}", f"99999 Stillstadt-{tag}"
    email = f"quirin-{tag}@example.org"
    body = application(MELDE, name=name)
    body["applicant"]["address_lines"] = [street, town]
    body["applicant"]["email"] = email
    portal, clerk = stack.token("portal-logs", "integrator"), stack.token("clerk-logs", "clerk", "buergerbuero")
    admin = stack.token("admin-logs", "admin")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=body, headers={**portal, "Idempotency-Key": f"logs-{tag}"})
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                             files={"file": (f"{name}.pdf", io.BytesIO(PDF), "application/pdf")})
        assert up.status_code == 201, up.text
        done = await approve_and_pay(http, case_id, clerk, portal)
        cert = next(doc for doc in done["documents"] if doc["kind"] == "Urkunde")
        assert (await http.get(cert["download_url"], headers=portal)).status_code == 200
        # refused requests log too: a forged token, a token for the wrong audience, a bad webhook
        forged = jwt.encode({"sub": "x", "roles": ["admin"]}, "guessed-secret-guessed-secret-123", algorithm="HS256")
        assert (await http.get("/v1/tasks", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
        assert (await http.post("/v1/payments/webhook", content=b"{}",
                                headers={"X-Payment-Signature": "t=1,v1=00"})).status_code == 401
        assert (await http.post("/v1/codec/decode", json={"payloads": []}, headers=admin)).status_code == 200

    logs = captured_logs.getvalue()
    # the capture saw both the API and the worker (it is not vacuous)
    assert f"/v1/cases/{case_id}/decision" in logs  # the API's request lines
    assert "case.opened" in logs and "payment.webhook_accepted" in logs and "Running activity" in logs
    s = stack.settings
    forbidden = {
        "integrator token": portal["Authorization"].split()[1], "clerk token": clerk["Authorization"].split()[1],
        "admin token": admin["Authorization"].split()[1], "forged token": forged,
        "JWT secret": s.jwt_secret, "webhook secret": s.payment_webhook_secret,
        "certificate code secret": s.certificate_code_secret, "S3 secret key": s.s3_secret_key,
        "payload keys": s.payload_keys,
        **{f"payload key {kid}": base64.b64encode(key).decode() for kid, key in s.payload_key_ring()},
        "applicant name": name, "address line 1": street, "address line 2": town, "e-mail": email,
        "applicant (JSON-escaped)": json.dumps(name)[1:-1],
    }
    leaks = {what: value for what, value in forbidden.items() if value in logs}
    assert not leaks, f"found in the logs: {sorted(leaks)}"


def test_the_redaction_net_catches_secrets_tokens_and_authorization_headers(capsys) -> None:
    configure_logging("INFO", "json")
    root = logging.getLogger()
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    secret = f"never-log-me-{uuid.uuid4().hex}"
    register_secrets([secret])
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")
    try:
        structlog.get_logger("redaction-test").warning("oops", detail=f"secret={secret}",
                                                       headers={"authorization": f"Bearer abc.def-{secret[:5]}"},
                                                       seen=[token])
        logging.getLogger("redaction-test.stdlib").error("stdlib says %s and Bearer %s", secret, token)
    finally:
        root.removeHandler(handler)
    out = sink.getvalue()
    assert secret not in out and token not in out and "abc.def" not in out
    assert out.count(REDACTED) >= 5
    assert "oops" in out and "stdlib says" in out  # the lines themselves are kept


def test_the_secret_values_of_a_process_cover_every_configured_secret(stack) -> None:
    values = secret_values(stack.settings)
    s = stack.settings
    for v in (s.jwt_secret, s.payment_webhook_secret, s.certificate_code_secret, s.s3_secret_key):
        assert v in values
    assert all(b64 in values for b64 in (p.partition(":")[2] for p in s.payload_keys.split(",")))
