"""Our payment ledger: which payments a case asked for, what the provider told us about them,
the payments received (exactly one receipt per payment) and the refunds made.

Written by the payment activities (request, poll, cancel, refund) and by the provider's
signed callback (api/routers/payments.py). Framework-free like the rest of eakte.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from eakte.models import PaymentReceipt, PaymentRecord, PaymentRefund, Vorgang, utcnow

#: statuses a payment can have, at the provider and in our ledger
STATUSES = ("open", "paid", "declined", "expired", "cancelled", "refunded")
#: once a payment reached one of these, a later 'open' (a stale poll) does not move it back
SETTLED = ("paid", "declined", "expired", "cancelled", "refunded")


@dataclass(frozen=True)
class PaymentOwner:
    """The case a payment belongs to and the amount it asked for."""

    case_id: str
    amount_cents: int | None

    def settled_by(self, amount_cents: int) -> bool:
        """Does a payment of ``amount_cents`` settle what was asked for? (An unknown amount: yes.)"""
        return self.amount_cents is None or amount_cents == self.amount_cents


def register(s: Session, *, case_id: str, payment_id: str, payment_url: str, attempt: int,
             idempotency_key: str, amount_cents: int) -> PaymentRecord:
    """Record a payment the provider created for a case (idempotent: a retry finds its row)."""
    rec = s.get(PaymentRecord, payment_id)
    if rec is None:
        rec = PaymentRecord(payment_id=payment_id, case_id=case_id, attempt=attempt, idempotency_key=idempotency_key,
                            amount_cents=amount_cents, payment_url=payment_url, status="open", refunded_cents=0)
        s.add(rec)
        s.flush()
    v = s.get(Vorgang, case_id)
    if v is not None:
        v.payment_amount_cents = amount_cents
    return rec


def owner(s: Session, payment_id: str) -> PaymentOwner | None:
    """Whose payment is this? The ledger knows every attempt; payments requested before the
    ledger existed are found on the Vorgang (the fee was the amount asked for)."""
    rec = s.get(PaymentRecord, payment_id)
    if rec is not None:
        return PaymentOwner(case_id=rec.case_id, amount_cents=rec.amount_cents)
    row = s.execute(select(Vorgang.id, Vorgang.payment_amount_cents, Vorgang.fee_cents)
                    .where(Vorgang.payment_id == payment_id)).first()
    if row is None:
        return None
    return PaymentOwner(case_id=row[0], amount_cents=row[1] if row[1] is not None else row[2])


def set_status(s: Session, payment_id: str, status: str) -> None:
    """What the provider says now. 'open' never overwrites a settled status (a poll answered
    before a callback is applied after it)."""
    rec = s.get(PaymentRecord, payment_id)
    if rec is None or rec.status == status or (status == "open" and rec.status in SETTLED):
        return
    if status == "refunded" and rec.refunded_cents < rec.amount_cents and rec.status == "paid":
        return  # a partial refund leaves the payment paid (refunded_cents tells how much went back)
    rec.status, rec.updated_at = status, utcnow()


def receive(s: Session, *, case_id: str, payment_id: str, amount_cents: int, source: str,
            event_id: str | None = None) -> bool:
    """Book the receipt of a payment. True when this call booked it, False when it was booked
    already (another delivery of the callback, or the poll, came first): exactly one row."""
    if s.get(PaymentReceipt, payment_id) is not None:
        return False
    try:
        with s.begin_nested():
            s.add(PaymentReceipt(payment_id=payment_id, case_id=case_id, amount_cents=amount_cents, source=source,
                                 event_id=event_id))
    except IntegrityError:  # a concurrent delivery booked it between our look and our insert
        return False
    set_status(s, payment_id, "paid")
    return True


def refund_key(case_id: str, payment_id: str) -> str:
    """The refund's idempotency key: one refund per case and payment, however often retried."""
    return f"{case_id}:{payment_id}:refund"


def find_refund(s: Session, case_id: str, payment_id: str) -> PaymentRefund | None:
    return s.scalar(select(PaymentRefund).where(PaymentRefund.idempotency_key == refund_key(case_id, payment_id)))


def record_refund(s: Session, *, refund_id: str, case_id: str, payment_id: str, amount_cents: int, reason: str,
                  status: str) -> bool:
    """Book a refund the provider confirmed. True when this call booked it (then the caller
    audits it), False when it was booked already."""
    if s.get(PaymentRefund, refund_id) is not None or find_refund(s, case_id, payment_id) is not None:
        return False
    try:
        with s.begin_nested():
            s.add(PaymentRefund(refund_id=refund_id, idempotency_key=refund_key(case_id, payment_id), case_id=case_id,
                                payment_id=payment_id, amount_cents=amount_cents, reason=reason, status=status))
    except IntegrityError:
        return False
    rec = s.get(PaymentRecord, payment_id)
    if rec is not None:
        rec.refunded_cents += amount_cents
        set_status(s, payment_id, "refunded")
    v = s.get(Vorgang, case_id)
    if v is not None:
        v.refunded_cents = (v.refunded_cents or 0) + amount_cents
        paid = (rec.amount_cents if rec is not None else None) or v.payment_amount_cents or v.fee_cents
        if v.payment_id == payment_id and v.refunded_cents >= paid:
            v.payment_status = "refunded"
        v.updated_at = utcnow()
    return True
