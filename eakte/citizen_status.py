"""What a citizen sees of their case on the public status page: public milestones only.

The page is built from the case's *public* timeline events and a few read-model columns,
but never shows an event's free text: each event is mapped by its (step, status) to one of
a fixed set of milestones with our own wording. So whatever a workflow step writes into a
message (a clerk's name, a department's internal remark) cannot reach the page; steps we do
not know (reminders, escalations, internal bookkeeping) show nothing. Clerk subjects,
decision reasons, notes, documents and audit data are not even loaded.

A report (Mängelmeldung: nothing is applied for, nothing decided, no fee, no certificate)
reads "Meldung eingegangen → In Bearbeitung → Erledigt"; an application "Antrag eingegangen
→ In Bearbeitung → ... → Abgeschlossen".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from eakte.models import TimelineEvent, Vorgang

IN_PROGRESS = ("received", "awaiting_decision", "awaiting_cosign", "approved")
CLOSED_LABELS = {
    "completed": ("closed", "Abgeschlossen"),
    "rejected": ("closed", "Abgeschlossen"),
    "cancelled": ("cancelled", "Storniert"),
    "withdrawn": ("withdrawn", "Zurückgezogen"),
    "terminated": ("closed", "Verfahren beendet"),
}


@dataclass
class Milestone:
    code: str  # received | in_progress | waiting_for_you | payment_due | paid | decided | sent | closed | withdrawn | cancelled
    label: str
    at: dt.datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PublicStatus:
    aktenzeichen: str
    service_name: str | None
    responsible_office: str | None
    status: str
    status_label: str
    timeline: list[Milestone]
    waiting_for: dict[str, Any] | None = None
    payment: dict[str, Any] | None = None


def _milestone(step: str, status: str, *, report: bool, decision: str | None) -> tuple[str, str] | None:
    if step == "intake":
        return ("received", "Meldung eingegangen" if report else "Antrag eingegangen")
    if status in CLOSED_LABELS:
        code, label = CLOSED_LABELS[status]
        if status == "completed" and report:
            label = "Erledigt"
        return code, label
    if status == "awaiting_documents":
        return ("waiting_for_you", "Wir benötigen noch Unterlagen von Ihnen")
    if status == "awaiting_payment":
        return ("payment_due", "Gebühr fällig")
    if step == "payment" and status == "issuing":
        return ("paid", "Gebühr bezahlt")
    if step == "dispatch":
        return ("sent", "Bescheid zugestellt")
    if step == "decision" and status not in ("awaiting_decision", "awaiting_cosign"):
        if decision == "approved" or status == "approved":
            return ("decided", "Antrag bewilligt")
        if decision == "rejected":
            return ("decided", "Antrag abgelehnt")
        return ("decided", "Entschieden")
    if step == "routing" and status == "received":
        return ("in_progress", "In Bearbeitung")
    if status in IN_PROGRESS and step != "routing":
        return ("in_progress", "In Bearbeitung")
    return None  # triage, certificate production, reminders, anything new: not a public milestone


def _money(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d} EUR"


def find_case(session: Session, aktenzeichen: str) -> Vorgang | None:
    return session.scalar(select(Vorgang).where(Vorgang.aktenzeichen == aktenzeichen))


def public_status(session: Session, v: Vorgang, *, report: bool, office: str | None) -> PublicStatus:
    """The status page of ``v``. ``report``: the service is a report (Meldung), not an
    application; ``office``: the responsible department's public name."""
    events = session.execute(
        select(TimelineEvent.at, TimelineEvent.step, TimelineEvent.status)
        .where(TimelineEvent.vorgang_id == v.id, TimelineEvent.public.is_(True))
        .order_by(TimelineEvent.id)).all()
    timeline: list[Milestone] = []
    for e in events:
        m = _milestone(e.step, e.status, report=report, decision=v.decision)
        if m is None or (timeline and timeline[-1].code == m[0]):
            continue
        if m[0] in ("closed", "withdrawn", "cancelled") and timeline and timeline[-1].code in (
                "closed", "withdrawn", "cancelled"):
            continue  # e.g. "payment expired: cancelled" then the archive step's "cancelled"
        timeline.append(Milestone(code=m[0], label=m[1], at=e.at))
    if not timeline or timeline[0].code != "received":
        timeline.insert(0, Milestone(code="received", label="Meldung eingegangen" if report else "Antrag eingegangen",
                                     at=v.created_at))
    waiting = None
    if v.status == "awaiting_documents":
        waiting = {"documents": list(v.waiting_for or []),
                   "until": v.waiting_until.isoformat() if v.waiting_until else None}
        timeline[-1].details = dict(waiting) if timeline[-1].code == "waiting_for_you" else {}
    payment = None
    if v.status == "awaiting_payment" and v.payment_status in (None, "open"):
        cents = getattr(v, "payment_amount_cents", None) or v.fee_cents
        payment = {"amount_cents": cents, "amount": _money(cents), "currency": "EUR", "payment_url": v.payment_url}
        if timeline[-1].code == "payment_due":
            timeline[-1].details = dict(payment)
    current = timeline[-1]
    return PublicStatus(aktenzeichen=v.aktenzeichen, service_name=v.service_name,
                        responsible_office=office if v.department else None, status=current.code,
                        status_label=current.label, timeline=timeline, waiting_for=waiting, payment=payment)
