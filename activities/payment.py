"""Payment-provider client (the interface) and the activities that use it.

The provider is reached over HTTP like a German e-payment platform: create a payment
with our reference and an idempotency key, send the citizen to its payment page,
receive the confirmation as a signed callback at POST /v1/payments/webhook.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import contracts as c


@dataclass(frozen=True)
class CreatedPayment:
    payment_id: str
    payment_url: str


class PaymentProvider:
    """HTTP client of the payment platform (the sandbox implements the same API)."""

    def __init__(self, base_url: str, callback_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.callback_url = callback_url
        self.timeout = timeout

    def create(self, *, reference: str, amount_cents: int, purpose: str, idempotency_key: str) -> CreatedPayment:
        resp = httpx.post(
            f"{self.base_url}/api/payments",
            json={"reference": reference, "amount_cents": amount_cents, "currency": "EUR", "purpose": purpose,
                  "callback_url": self.callback_url},
            headers={"Idempotency-Key": idempotency_key},
            timeout=self.timeout,
        )
        if resp.status_code >= 500:
            raise RuntimeError(f"payment provider error {resp.status_code}")
        if resp.status_code >= 400:
            raise ApplicationError(f"payment provider refused the request: {resp.text[:200]}",
                                   type="PaymentRefused", non_retryable=True)
        body = resp.json()
        return CreatedPayment(payment_id=body["payment_id"], payment_url=body["payment_url"])

    def cancel(self, payment_id: str) -> None:
        resp = httpx.post(f"{self.base_url}/api/payments/{payment_id}/cancel", timeout=self.timeout)
        if resp.status_code >= 500:
            raise RuntimeError(f"payment provider error {resp.status_code}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance_s: int, now: float | None = None) -> bool:
    """Check a `t=<unix>,v1=<hex>` signature header; stale timestamps count as replays."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class PaymentActivities:
    def __init__(self, provider: PaymentProvider, record_payment) -> None:  # type: ignore[no-untyped-def]
        self.provider = provider
        self._record_payment = record_payment

    @activity.defn(name=c.ACT_REQUEST_PAYMENT)
    def request_payment(self, p: c.PaymentParams) -> c.PaymentRequested:
        info = activity.info()
        key = f"{info.workflow_id}:payment"
        created = self.provider.create(reference=p.aktenzeichen, amount_cents=p.amount_cents, purpose=p.purpose,
                                       idempotency_key=key)
        self._record_payment(p.case_id, created.payment_id, created.payment_url)
        return c.PaymentRequested(payment_id=created.payment_id, payment_url=created.payment_url)

    @activity.defn(name=c.ACT_CANCEL_PAYMENT)
    def cancel_payment(self, payment_id: str) -> None:
        self.provider.cancel(payment_id)
