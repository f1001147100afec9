"""Our side of the payment platform: the signed callback (webhook)."""

from __future__ import annotations

import json

import structlog
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.service import RPCError

from activities.payment import verify_signature
from aktenlauf.errors import InvalidInput, NotFound, PayloadTooLarge, Unauthorized
from api.context import Ctx
from api.temporal_errors import translate
from eakte.models import Vorgang, WebhookDelivery
from workflows import contracts as c

router = APIRouter(prefix="/v1/payments", tags=["payments"])
log = structlog.get_logger(__name__)
MAX_BODY = 16 * 1024


class WebhookEvent(BaseModel):
    event_id: str
    payment_id: str
    reference: str
    status: str
    amount_cents: int


class WebhookAck(BaseModel):
    accepted: bool
    duplicate: bool = False


@router.post("/webhook", response_model=WebhookAck,
             responses={401: {"description": "bad or stale signature"}, 404: {"description": "unknown payment"}})
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

    def lookup(s: Session) -> tuple[str | None, bool]:
        case_id = s.scalar(select(Vorgang.id).where(Vorgang.payment_id == event.payment_id))
        seen = s.get(WebhookDelivery, event.event_id) is not None
        return case_id, seen

    case_id, seen = await ctx.db(lookup)
    if case_id is None:
        raise NotFound("no case is waiting for this payment")
    if seen:
        log.info("payment.webhook_duplicate")
        return WebhookAck(accepted=True, duplicate=True)
    try:
        await ctx.client().get_workflow_handle(case_id).signal(
            "payment_event", c.PaymentEvent(payment_id=event.payment_id, event_id=event.event_id,
                                            status=event.status, amount_cents=event.amount_cents))
    except RPCError as exc:
        raise translate(exc) from exc

    def remember(s: Session) -> None:
        s.add(WebhookDelivery(event_id=event.event_id, payment_id=event.payment_id))

    try:
        await ctx.db(remember)
    except IntegrityError:
        return WebhookAck(accepted=True, duplicate=True)
    log.info("payment.webhook_accepted", case_id=case_id, status=event.status)
    return WebhookAck(accepted=True)
