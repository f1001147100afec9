"""Our side of the payment platform: the signed callback (webhook).

The provider POSTs one JSON event per change of a payment, signed with HMAC-SHA256 in
``X-Payment-Signature: t=<unix>,v1=<hex>`` (over ``"<t>." + body``, see activities/payment.py)::

    {"event_id": "…", "payment_id": "…", "reference": "<Aktenzeichen>",
     "status": "paid" | "declined" | "expired" | "refunded", "amount_cents": 1200,
     "refund_id": "…" (refunded only), "occurred_at": "<ISO 8601>" (optional)}

Answers: 200 ``{"accepted": true, "duplicate": false, "outcome": "signalled"}`` when the case
was told (signal ``payment_event``), 200 with ``duplicate: true`` for an event id seen before
(providers deliver at least once), 401 for a missing, wrong or stale signature, 404 when no
case asked for the payment, 422 for a malformed event, 503 when Temporal is away (the provider
retries). A 'paid' event for another amount than we asked for is recorded
(``outcome: amount_mismatch``), logged and audited, and never counts as paid. A paid payment is
booked in the payment ledger exactly once however often it is confirmed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

import structlog
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.service import RPCError, RPCStatusCode

from activities.payment import verify_signature
from aktenlauf.errors import InvalidInput, NotFound, PayloadTooLarge, Unauthorized
from api.context import Ctx
from api.temporal_errors import translate
from eakte import payments as ledger
from eakte import records
from eakte.models import WebhookDelivery, utcnow
from workflows import contracts as c

router = APIRouter(prefix="/v1/payments", tags=["payments"])
log = structlog.get_logger(__name__)
MAX_BODY = 16 * 1024
#: a delivery claimed but never confirmed as signalled (the API process died in between) is
#: taken over by a later delivery of the same event after this long
CLAIM_STALE = dt.timedelta(seconds=60)


class WebhookEvent(BaseModel):
    event_id: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    payment_id: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    reference: str = Field(max_length=100)
    status: Literal["paid", "declined", "expired", "refunded"]
    amount_cents: int = Field(ge=0, le=100_000_000)
    refund_id: str | None = Field(default=None, max_length=64)
    occurred_at: str | None = Field(default=None, max_length=40)


class WebhookAck(BaseModel):
    accepted: bool
    duplicate: bool = False
    #: signalled | amount_mismatch | case_closed (what became of the event)
    outcome: str = "signalled"


Claim = tuple[str, str | None]  # (what to do: signal | duplicate | mismatch, case id)


def _claim(s: Session, ev: WebhookEvent) -> Claim:
    """Record the delivery before the case is told, so that five deliveries at once still make
    one signal; book a payment received in the ledger (once per payment)."""
    who = ledger.owner(s, ev.payment_id)
    if who is None:
        raise NotFound("no case is waiting for this payment")
    now = utcnow()
    seen = s.get(WebhookDelivery, ev.event_id, with_for_update=True)
    if seen is not None:
        if seen.outcome == "received" and seen.received_at < now - CLAIM_STALE:
            seen.received_at = now  # an earlier delivery died before telling the case: take it over
            return "signal", who.case_id
        return "duplicate", who.case_id
    mismatch = ev.status == "paid" and not who.settled_by(ev.amount_cents)
    try:
        with s.begin_nested():
            s.add(WebhookDelivery(event_id=ev.event_id, payment_id=ev.payment_id, case_id=who.case_id,
                                  status=ev.status, amount_cents=ev.amount_cents, received_at=now,
                                  outcome="amount_mismatch" if mismatch else "received"))
    except IntegrityError:  # a concurrent delivery of the same event came first
        return "duplicate", who.case_id
    if mismatch:
        log.error("payment.amount_mismatch", case_id=who.case_id, expected_cents=who.amount_cents,
                  got_cents=ev.amount_cents)
        records.audit(s, actor="payment-provider", role="system", action="payment.amount_mismatch",
                      target_type="payment", target_id=ev.payment_id, case_id=who.case_id,
                      reason=f"paid {ev.amount_cents} cents, {who.amount_cents} asked for",
                      details={"event_id": ev.event_id})
        return "mismatch", who.case_id
    if ev.status == "paid":
        ledger.receive(s, case_id=who.case_id, payment_id=ev.payment_id, amount_cents=ev.amount_cents,
                       source="callback", event_id=ev.event_id)
    else:
        ledger.set_status(s, ev.payment_id, ev.status)
    return "signal", who.case_id


def _settle(s: Session, event_id: str, outcome: str) -> None:
    row = s.get(WebhookDelivery, event_id)
    if row is not None:
        row.outcome = outcome


def _release(s: Session, event_id: str) -> None:
    """The case could not be told: forget the claim so that the provider's retry tells it."""
    s.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id == event_id,
                                            WebhookDelivery.outcome == "received"))


@router.post("/webhook", response_model=WebhookAck,
             responses={401: {"description": "bad or stale signature"}, 404: {"description": "unknown payment"},
                        422: {"description": "malformed event"}, 503: {"description": "retry later"}})
async def payment_webhook(request: Request, ctx: Ctx,
                          x_payment_signature: str = Header(default="", alias="X-Payment-Signature")) -> WebhookAck:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("callback body too large")
    if not verify_signature(ctx.settings.payment_webhook_secret, x_payment_signature, body,
                            tolerance_s=ctx.settings.payment_webhook_tolerance_seconds):
        raise Unauthorized("missing, invalid or stale payment signature")
    try:
        event = WebhookEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(f"malformed payment event: {exc}") from exc
    structlog.contextvars.bind_contextvars(payment_id=event.payment_id, event_id=event.event_id)

    action, case_id = await ctx.db(lambda s: _claim(s, event))
    if action == "duplicate":
        log.info("payment.webhook_duplicate", case_id=case_id)
        return WebhookAck(accepted=True, duplicate=True, outcome="duplicate")
    if action == "mismatch":
        return WebhookAck(accepted=True, outcome="amount_mismatch")
    assert case_id is not None
    try:
        await ctx.client().get_workflow_handle(case_id).signal(
            "payment_event", c.PaymentEvent(payment_id=event.payment_id, event_id=event.event_id,
                                            status=event.status, amount_cents=event.amount_cents))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the case has finished: nothing waits for this any more
            await ctx.db(lambda s: _settle(s, event.event_id, "case_closed"))
            log.warning("payment.webhook_case_closed", case_id=case_id, status=event.status)
            return WebhookAck(accepted=True, outcome="case_closed")
        await ctx.db(lambda s: _release(s, event.event_id))
        raise translate(exc) from exc
    except Exception:
        await ctx.db(lambda s: _release(s, event.event_id))
        raise
    await ctx.db(lambda s: _settle(s, event.event_id, "signalled"))
    log.info("payment.webhook_accepted", case_id=case_id, status=event.status)
    return WebhookAck(accepted=True)
