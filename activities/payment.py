"""Payment-provider client (the interface) and the activities that use it.

The provider is reached over HTTP like a German e-payment platform (ePayBL, pmPayment):

- ``POST /api/payments`` (``Idempotency-Key``) creates a payment with our reference (the
  Aktenzeichen), amount, purpose, callback_url and optional return_url, and answers its id and
  the payment-page URL the citizen is sent to;
- the outcome comes asynchronously as a signed callback at ``POST /v1/payments/webhook``;
- ``GET /api/payments/{id}`` is the status poll, the fallback when a callback is lost;
- ``POST /api/payments/{id}/cancel`` cancels an open payment;
- ``POST /api/payments/{id}/refunds`` (``Idempotency-Key``) refunds (part of) a paid payment:
  confirmed at once with status ``refunded`` and by a signed ``refunded`` callback.

Provider errors: a timeout, a connection error, 5xx or 429 is retryable (an ApplicationError of
type ``PaymentProviderUnavailable``: Temporal retries by the activity's retry policy); any other
4xx is permanent, a non-retryable ApplicationError of type ``PaymentNotFound`` (404),
``PaymentConflict`` (409) or ``PaymentRefused`` (the rest).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from eakte import payments as ledger
from eakte import records
from eakte.db import transaction
from workflows import contracts as c

log = structlog.get_logger(__name__)

#: ApplicationError types the workflow can tell apart
ERR_UNAVAILABLE = "PaymentProviderUnavailable"  # retryable
ERR_NOT_FOUND = "PaymentNotFound"
ERR_CONFLICT = "PaymentConflict"  # e.g. refund of a payment that is not paid, Idempotency-Key reused
ERR_REFUSED = "PaymentRefused"  # any other 4xx (invalid amount, refund exceeds the paid amount, ...)


@dataclass(frozen=True)
class CreatedPayment:
    payment_id: str
    payment_url: str


@dataclass(frozen=True)
class ProviderPayment:
    payment_id: str
    status: str
    amount_cents: int
    refunded_cents: int = 0


@dataclass(frozen=True)
class ProviderRefund:
    refund_id: str
    status: str
    amount_cents: int


class PaymentProvider:
    """HTTP client of the payment platform (the sandbox implements the same API)."""

    def __init__(self, base_url: str, callback_url: str, *, timeout: float = 10.0,
                 return_url: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.callback_url = callback_url
        self.return_url = return_url
        self.timeout = timeout
        # one client for every call (httpx clients may be shared between threads): a client per
        # call builds a fresh TLS context each time, which cost the worker more CPU than the call
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def _call(self, method: str, path: str, *, json: dict[str, Any] | None = None,
              idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            resp = self._http.request(method, f"{self.base_url}{path}", json=json, headers=headers)
        except httpx.HTTPError as exc:  # timeouts, refused or broken connections
            raise ApplicationError(f"payment provider unreachable: {type(exc).__name__}: {exc}",
                                   type=ERR_UNAVAILABLE) from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise ApplicationError(f"payment provider error {resp.status_code} on {method} {path}",
                                   type=ERR_UNAVAILABLE)
        if resp.status_code >= 400:
            kind = {404: ERR_NOT_FOUND, 409: ERR_CONFLICT}.get(resp.status_code, ERR_REFUSED)
            raise ApplicationError(f"payment provider refused {method} {path} ({resp.status_code}): "
                                   f"{resp.text[:300]}", resp.status_code, type=kind, non_retryable=True)
        try:
            body = resp.json()
        except ValueError as exc:
            raise ApplicationError(f"payment provider answered no JSON ({resp.status_code})",
                                   type=ERR_UNAVAILABLE) from exc
        if not isinstance(body, dict):
            raise ApplicationError("payment provider answered an unexpected body", type=ERR_UNAVAILABLE)
        return body

    def create(self, *, reference: str, amount_cents: int, purpose: str, idempotency_key: str,
               return_url: str | None = None) -> CreatedPayment:
        payload: dict[str, Any] = {"reference": reference, "amount_cents": amount_cents, "currency": "EUR",
                                   "purpose": purpose, "callback_url": self.callback_url}
        if return_url or self.return_url:
            payload["return_url"] = return_url or self.return_url
        body = self._call("POST", "/api/payments", json=payload, idempotency_key=idempotency_key)
        return CreatedPayment(payment_id=body["payment_id"], payment_url=body["payment_url"])

    @staticmethod
    def _payment(body: dict[str, Any]) -> ProviderPayment:
        return ProviderPayment(payment_id=body["payment_id"], status=body["status"], amount_cents=body["amount_cents"],
                               refunded_cents=int(body.get("refunded_cents") or 0))

    def status(self, payment_id: str) -> ProviderPayment:
        return self._payment(self._call("GET", f"/api/payments/{payment_id}"))

    def cancel(self, payment_id: str) -> ProviderPayment:
        """Cancel an open payment; the answer is the status it has (paid if the citizen was faster)."""
        return self._payment(self._call("POST", f"/api/payments/{payment_id}/cancel"))

    def refund(self, payment_id: str, *, amount_cents: int, idempotency_key: str,
               reason: str | None = None) -> ProviderRefund:
        body = self._call("POST", f"/api/payments/{payment_id}/refunds",
                          json={"amount_cents": amount_cents, "reason": reason[:300] if reason else None},
                          idempotency_key=idempotency_key)
        return ProviderRefund(refund_id=body["refund_id"], status=body["status"], amount_cents=body["amount_cents"])


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


def payment_key(workflow_id: str, attempt: int) -> str:
    """The provider's Idempotency-Key of a case's payment. Attempt 0 keeps the key running cases
    were started with; a new attempt after a declined or expired payment gets its own."""
    return f"{workflow_id}:payment" if attempt == 0 else f"{workflow_id}:payment:{attempt}"


class PaymentActivities:
    """The payment steps of a case. ``record_payment`` puts the payment on the Vorgang (the read
    model); ``sessions`` is our payment ledger's database (eakte/payments.py)."""

    def __init__(self, provider: PaymentProvider, record_payment: Callable[[str, str, str], None],
                 sessions: sessionmaker[Session] | None = None) -> None:
        self.provider = provider
        self._record_payment = record_payment
        self.sessions = sessions

    @activity.defn(name=c.ACT_REQUEST_PAYMENT)
    def request_payment(self, p: c.PaymentParams) -> c.PaymentRequested:
        key = payment_key(activity.info().workflow_id, p.attempt)
        created = self.provider.create(reference=p.aktenzeichen, amount_cents=p.amount_cents, purpose=p.purpose,
                                       idempotency_key=key)
        self._record_payment(p.case_id, created.payment_id, created.payment_url)
        if self.sessions is not None:
            with transaction(self.sessions) as s:
                ledger.register(s, case_id=p.case_id, payment_id=created.payment_id, payment_url=created.payment_url,
                                attempt=p.attempt, idempotency_key=key, amount_cents=p.amount_cents)
        log.info("payment.requested", case_id=p.case_id, payment_id=created.payment_id, attempt=p.attempt)
        return c.PaymentRequested(payment_id=created.payment_id, payment_url=created.payment_url)

    @activity.defn(name=c.ACT_POLL_PAYMENT)
    def poll_payment(self, payment_id: str) -> c.PaymentPolled:
        """Ask the provider (the fallback when no callback came). A payment found paid is booked
        in the ledger like a confirmed callback — once, whoever comes first."""
        found = self.provider.status(payment_id)
        status = self._learn(found, source="poll")
        log.info("payment.polled", payment_id=payment_id, status=status)
        return c.PaymentPolled(payment_id=payment_id, status=status, amount_cents=found.amount_cents)

    @activity.defn(name=c.ACT_CANCEL_PAYMENT)
    def cancel_payment(self, payment_id: str) -> c.PaymentPolled:
        """Cancel at the provider. The answer is the payment's status afterwards: 'cancelled', or
        'paid' when the citizen paid in the same moment (the workflow then keeps or refunds it)."""
        found = self.provider.cancel(payment_id)
        status = self._learn(found, source="poll")
        log.info("payment.cancelled", payment_id=payment_id, status=status)
        return c.PaymentPolled(payment_id=payment_id, status=status, amount_cents=found.amount_cents)

    def _learn(self, found: ProviderPayment, *, source: str) -> str:
        """Put what the provider said into the ledger; the status the workflow should act on
        ('paid' for another amount than asked for does not count: it is logged as a mismatch)."""
        status = found.status
        if self.sessions is None:
            return status
        with transaction(self.sessions) as s:
            who = ledger.owner(s, found.payment_id)
            if who is None:
                return status
            if status == "paid":
                if not who.settled_by(found.amount_cents):
                    log.error("payment.amount_mismatch", case_id=who.case_id, payment_id=found.payment_id,
                              expected_cents=who.amount_cents, got_cents=found.amount_cents, source=source)
                    return "open"
                ledger.receive(s, case_id=who.case_id, payment_id=found.payment_id, amount_cents=found.amount_cents,
                               source=source)
            else:
                ledger.set_status(s, found.payment_id, status)
        return status

    @activity.defn(name=c.ACT_REFUND_PAYMENT)
    def refund_payment(self, p: c.RefundParams) -> c.Refunded:
        """Refund (part of) a paid payment, once per case and payment: a retry — also after a
        crash between the provider's answer and our booking — finds the same refund by its
        Idempotency-Key and never refunds twice. Booked in the ledger and audited."""
        if p.amount_cents <= 0:
            raise ApplicationError(f"a refund needs a positive amount, not {p.amount_cents}", type=ERR_REFUSED,
                                   non_retryable=True)
        if self.sessions is not None:
            with transaction(self.sessions) as s:
                done = ledger.find_refund(s, p.case_id, p.payment_id)
                if done is not None:
                    if done.amount_cents != p.amount_cents:
                        raise ApplicationError(
                            f"payment {p.payment_id} of this case was refunded already ({done.amount_cents} cents)",
                            type=ERR_CONFLICT, non_retryable=True)
                    return c.Refunded(refund_id=done.refund_id, status=done.status)
        refund = self.provider.refund(p.payment_id, amount_cents=p.amount_cents,
                                      idempotency_key=ledger.refund_key(p.case_id, p.payment_id), reason=p.reason)
        if self.sessions is not None:
            with transaction(self.sessions) as s:
                if ledger.record_refund(s, refund_id=refund.refund_id, case_id=p.case_id, payment_id=p.payment_id,
                                        amount_cents=refund.amount_cents, reason=p.reason, status=refund.status):
                    records.audit(s, actor="system", role="system", action="payment.refund", target_type="payment",
                                  target_id=p.payment_id, case_id=p.case_id, reason=p.reason,
                                  details={"refund_id": refund.refund_id, "amount_cents": refund.amount_cents})
        log.info("payment.refunded", case_id=p.case_id, payment_id=p.payment_id, refund_id=refund.refund_id,
                 amount_cents=refund.amount_cents)
        return c.Refunded(refund_id=refund.refund_id, status=refund.status)
