"""CaseWorkflow: one citizen request, from intake to archive.

intake → routing → clerk decision → payment → certificate → dispatch → archive.
Deterministic orchestration only: every side effect is an activity (called by name),
every activity is idempotent under a key derived from the workflow id and the step.
Human steps are Updates with validators; the payment provider's confirmation is a
Signal; the status is a Query plus search attributes.

Casework v2 (``workflow.patched("casework-v2")``; cases started earlier finish on the v1 path):
decisions with Nachforderung (request missing documents: the case waits for the citizen, a
document uploaded or a letter filed resumes it, a deadline ends it) and forwarding; the
Vier-Augen-Prinzip (a second clerk co-signs, never the first); the processing deadline as a
durable timer that pauses while the case waits for the citizen, reminds the department before
it expires and escalates to the team lead when it passes, extendable with a reason; fees from
the catalog's rules, paid before or after the decision, with reminders, a status poll when the
provider's callback is lost, a new payment after a declined or expired one, and cancellation
after the deadline; withdrawal by the applicant and cancellation by an admin, each with its
compensations (open payment cancelled, paid fee refunded), recorded step by step.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from intake.fees import FeeAssessment, assess, euro
    from intake.service import ServiceEntry
    from workflows import contracts as c
    from workflows import search

V2 = "casework-v2"
#: bookkeeping alongside the work: a timeline/read-model step that only announces what comes next
#: is recorded while that next activity already runs (see _progress(alongside=True))
ALONGSIDE = "progress-alongside"
#: statuses in which the applicant may still withdraw (before the decision)
WITHDRAWABLE = (c.RECEIVED, c.TRIAGE, c.AWAITING_DECISION, c.AWAITING_DOCUMENTS, c.AWAITING_COSIGN)
#: statuses in which the case waits (for a person, the citizen or the payment): an admin may cancel there
WAITING = WITHDRAWABLE + (c.AWAITING_PAYMENT,)
#: first status poll at the payment provider when no callback has arrived; doubles up to POLL_MAX
POLL_DEFAULT = timedelta(minutes=10)
POLL_MAX = timedelta(hours=6)


_CHANNEL_NAMES = {"portal": "im Postfach bereitgestellt", "email": "per E-Mail", "post": "per Post",
                  "webhook": "an das Portal übermittelt"}


class _Abort(Exception):
    """Raised out of a wait when the case is withdrawn or cancelled: the run unwinds to the compensations."""

DEFAULT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=1))
# Every case activity is a short database/S3/HTTP step: a worker that dies mid-step is
# noticed after this long and the step retried elsewhere.
ACTIVITY_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="CaseWorkflow")
class CaseWorkflow:
    @workflow.init
    def __init__(self, inp: c.CaseInput) -> None:
        self.inp = inp
        self.service: ServiceEntry | None = inp.service
        self.route_request: c.RouteCase | None = None
        self.aktenzeichen: str | None = None
        self.status = c.RECEIVED
        self.step = "intake"
        self.department: str | None = None
        self.decision: c.Decision | None = None
        self.outcome: c.DecisionOutcome | None = None
        self.payment: c.PaymentRequested | None = None
        self.payment_events: list[c.PaymentEvent] = []
        self.history: list[c.HistoryEntry] = []
        self.documents: list[str] = []
        self.letters: list[c.LetterFiled] = []
        self.closed = False
        # -- casework v2 --
        self.v2 = False
        self.alongside = False
        #: the last record_progress still running (progress steps are recorded one after another)
        self.progress_tail: asyncio.Task[None] | None = None
        self.fee: FeeAssessment | None = None
        self.pending: c.Decision | None = None  # a decision handed in, not yet processed by the run
        self.pending_cosign: c.CoSign | None = None
        self.first: c.Decision | None = None  # four-eyes: the decision waiting for its co-signature
        self.abort: tuple[str, c.Actor, str] | None = None  # (withdrawn|cancelled, who, why)
        self.received_docs = 0  # documents uploaded or letters filed: resumes a Nachforderung
        self.waiting_for: list[str] = []
        self.deadline_at = None  # datetime while the processing deadline runs
        self.deadline_left: timedelta | None = None  # while it is paused
        self.deadline_version = 0  # bumped on pause/resume/extension: wakes the deadline watcher
        self.deadline_done = False
        self.reminded = False
        self.escalated = False
        self.payment_amount = 0
        self.payment_attempt = 0
        self.paid: c.PaymentEvent | None = None
        self.seq: dict[str, int] = {}

    # -- run ---------------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: c.CaseInput) -> c.CaseResult:
        if workflow.patched(V2):
            self.v2 = True
            self.alongside = workflow.patched(ALONGSIDE)
            return await self._run_v2(inp)
        svc = inp.service
        opened = await self._open(inp)

        # routing: a request without a known service waits for the mailroom to assign one
        if svc is None:
            svc = await self._routed_by_mailroom(workflow.wait_condition)
        self.department = svc.department
        due = (workflow.now() + timedelta(days=svc.processing_days)).date().isoformat()
        await self._progress("routing", c.RECEIVED, f"Zuständig: {svc.department_name or svc.department}", department=svc.department, due_on=due)

        # clerk decision
        if svc.decision_required:
            await self._progress("decision", c.AWAITING_DECISION, "In Bearbeitung")
            await workflow.wait_condition(lambda: self.decision is not None)
            assert self.decision is not None
            d = self.decision
            verdict = "approved" if d.approve else "rejected"
            await self._progress("decision", c.APPROVED if d.approve else c.ISSUING,
                                 "Antrag bewilligt" if d.approve else "Antrag abgelehnt",
                                 decision=verdict, decided_by=d.actor.sub, decision_reason=d.reason)
            if not d.approve:
                self._finish_decision(c.DecisionOutcome(decision=verdict, status=c.REJECTED))
                return await self._close(c.REJECTED, issue="rejection", reason=d.reason)

        # payment
        if svc.fee_cents > 0:
            self.payment = await self._act(c.ACT_REQUEST_PAYMENT, c.PaymentParams(
                case_id=inp.case_id, aktenzeichen=opened.aktenzeichen, amount_cents=svc.fee_cents,
                purpose=f"{svc.name} {opened.aktenzeichen}"), c.PaymentRequested)
            await self._progress("payment", c.AWAITING_PAYMENT, "Gebühr fällig", payment_status="open")
            self._finish_decision(c.DecisionOutcome(decision="approved", status=c.AWAITING_PAYMENT,
                                                    payment_url=self.payment.payment_url))
            paid_in_time = await self._wait(lambda: self._confirmed_payment() is not None,
                                            timedelta(days=svc.payment_days))
            if not paid_in_time:
                await self._act(c.ACT_CANCEL_PAYMENT, self.payment.payment_id, None)
                await self._progress("payment", c.CANCELLED, "Zahlungsfrist abgelaufen: Antrag storniert",
                                     payment_status="expired")
                return await self._close(c.CANCELLED)
            await self._progress("payment", c.ISSUING, "Gebühr bezahlt", payment_status="paid")
        self._finish_decision(c.DecisionOutcome(decision="approved", status=c.ISSUING))

        if not svc.certificate:
            return await self._close(c.COMPLETED)
        return await self._close(c.COMPLETED, issue="certificate")

    async def _open(self, inp: c.CaseInput) -> c.OpenedCase:
        """Akte, Vorgang and Aktenzeichen (both versions of the run)."""
        opened: c.OpenedCase = await self._act(c.ACT_OPEN_CASE, c.OpenCaseParams(
            case_id=inp.case_id, integrator=inp.integrator, fingerprint=inp.fingerprint, applicant=inp.applicant,
            service=inp.service, requested_service_key=inp.requested_service_key, form=inp.form, channel=inp.channel,
            year=workflow.now().year, notify_url=inp.notify_url,
        ), c.OpenedCase)
        self.aktenzeichen = opened.aktenzeichen
        self.documents.append(opened.application_document_id)
        self._note("intake", c.RECEIVED, f"Antrag eingegangen, Aktenzeichen {opened.aktenzeichen}")
        self._upsert()
        return opened

    async def _close(self, status: str, *, issue: str | None = None, reason: str | None = None) -> c.CaseResult:
        issued: str | None = None
        if issue is not None:
            await self._progress("certificate", self.status, "Bescheid wird erstellt")
            issued = await self._act(c.ACT_ISSUE_DOCUMENT, c.IssueParams(
                case_id=self.inp.case_id, kind=issue, reason=reason, issued_on=workflow.now().date().isoformat()), str)
            self.documents.append(issued)
            await self._act(c.ACT_DISPATCH, c.DispatchParams(case_id=self.inp.case_id, dokument_id=issued), str)
            await self._progress("dispatch", self.status, "Bescheid im Postfach bereitgestellt")
        await self._act(c.ACT_ARCHIVE, c.ArchiveParams(case_id=self.inp.case_id, final_status=status), None)
        final_msg = {c.COMPLETED: "Abgeschlossen", c.REJECTED: "Abgelehnt", c.CANCELLED: "Storniert"}[status]
        await self._progress("archive", status, final_msg)
        self.closed = True
        assert self.aktenzeichen is not None
        return c.CaseResult(status=status, aktenzeichen=self.aktenzeichen, issued_document_id=issued)

    # -- casework v2 ---------------------------------------------------------------------
    async def _routed_by_mailroom(self, wait) -> ServiceEntry:  # type: ignore[no-untyped-def]
        """A request without a known service waits in triage until the Poststelle assigns one."""
        await self._progress("routing", c.TRIAGE, "Keine Leistung zugeordnet: an die Poststelle zur Klärung")
        await wait(lambda: self.route_request is not None)
        assert self.route_request is not None
        svc = self.service = self.route_request.service
        await self._progress("routing", c.RECEIVED, f"Von der Poststelle zugeordnet: {svc.name}",
                             service_key=svc.key, service_name=svc.name, fee_cents=svc.fee_cents,
                             retention_years=svc.retention_years)
        return svc

    async def _run_v2(self, inp: c.CaseInput) -> c.CaseResult:
        svc = inp.service
        await self._open(inp)
        try:
            if svc is None:
                svc = await self._routed_by_mailroom(self._wait_for)  # a withdrawal ends the wait
            self.department = svc.department
            fee = self.fee = assess(svc, inp.form)
            self.deadline_at = workflow.now() + timedelta(days=svc.processing_days)
            asyncio.create_task(self._deadline_watch(svc))  # ends with the deadline (_stop_deadline)
            await self._progress("routing", c.RECEIVED, f"Zuständig: {svc.department_name or svc.department}",
                                 department=svc.department, due_on=self.deadline_at.date().isoformat(),
                                 deadline_at=self.deadline_at.isoformat(), fee_cents=fee.amount_cents)
            if fee.exempt_reason:
                await self._progress("payment", c.RECEIVED, f"Gebührenbefreiung: {fee.exempt_reason}",
                                     payment_status="exempt", reason=fee.exempt_reason)
            if fee.amount_cents > 0 and svc.payment_timing == "before_decision":
                self._pause_deadline()  # the case waits for the citizen's payment
                if not await self._collect_payment(svc, before_decision=True):
                    return await self._unpaid()
                self._resume_deadline()
                await self._progress("payment", c.RECEIVED, "Gebühr bezahlt: Antrag wird bearbeitet",
                                     payment_status="paid", deadline_at=self.deadline_at.isoformat())

            verdict, reason = "approved", None
            if svc.decision_required:
                verdict, reason = await self._decision_loop(svc)
            self._stop_deadline()
            if verdict != "approved":
                if self.paid is not None:
                    await self._refund(reason or "Antrag abgelehnt")
                self._finish_decision(c.DecisionOutcome(decision="rejected", status=c.REJECTED))
                return await self._close_v2(c.REJECTED, issue="rejection", reason=reason)

            if fee.amount_cents > 0 and svc.payment_timing != "before_decision":
                if not await self._collect_payment(svc, before_decision=False):
                    return await self._unpaid()
                await self._progress("payment", c.ISSUING, "Gebühr bezahlt", payment_status="paid", alongside=True)
            self._finish_decision(c.DecisionOutcome(decision="approved", status=c.ISSUING))
            return await self._close_v2(c.COMPLETED, issue="certificate" if svc.certificate else None)
        except _Abort:
            return await self._aborted()

    async def _decision_loop(self, svc: ServiceEntry) -> tuple[str, str | None]:
        """Until the case is decided: ("approved" | "rejected", reason). Nachforderungen and forwards loop."""
        await self._progress("decision", c.AWAITING_DECISION, "In Bearbeitung")
        while True:
            await self._wait_for(lambda: self.pending is not None)
            d = self.pending
            assert d is not None
            action = d.action or ("approve" if d.approve else "reject")
            if action == "forward":
                old = self.department
                self.department = d.department
                await self._progress("decision", c.AWAITING_DECISION, f"Weitergeleitet von {old} an {d.department}",
                                     public=False, department=d.department, actor=d.actor.sub, reason=d.reason,
                                     audit_action="case.forward")
                self._answer(c.DecisionOutcome(decision="forwarded", status=c.AWAITING_DECISION))
                continue
            if action == "request_documents":
                if not await self._request_documents(svc, d):
                    missing = ", ".join(d.missing)
                    reason = f"Die nachgeforderten Unterlagen ({missing}) sind nicht fristgerecht eingegangen."
                    self.decision = c.Decision(actor=c.Actor(sub="system"), approve=False, reason=reason)
                    await self._progress("decision", c.ISSUING, "Antrag abgelehnt: Unterlagen nicht eingegangen",
                                         decision="rejected", decision_reason=reason, deadline_at="",
                                         reason=reason, audit_action="case.rejected.lapsed")
                    return "rejected", reason
                continue
            verdict = "approved" if action == "approve" else "rejected"
            cosigner: str | None = None
            if svc.four_eyes:
                self.first = d
                label = "Bewilligung" if verdict == "approved" else "Ablehnung"
                await self._progress("decision", c.AWAITING_COSIGN, f"{label} zur Mitzeichnung vorgelegt", public=False,
                                     first_decision_by=d.actor.sub, actor=d.actor.sub, reason=d.reason,
                                     audit_action=f"case.{verdict}.first")
                self._answer(c.DecisionOutcome(decision=verdict, status=c.AWAITING_COSIGN))
                await self._wait_for(lambda: self.pending_cosign is not None)
                cs = self.pending_cosign
                assert cs is not None
                if not cs.agree:
                    self.first = None
                    await self._progress("decision", c.AWAITING_DECISION,
                                         "Mitzeichnung verweigert: zurück an die Sachbearbeitung", public=False,
                                         first_decision_by="", actor=cs.actor.sub, reason=cs.reason,
                                         audit_action="case.cosign.refused")
                    self.pending_cosign = None
                    self._answer(c.DecisionOutcome(decision="cosign_refused", status=c.AWAITING_DECISION))
                    continue
                cosigner = cs.actor.sub
            self.decision = c.Decision(actor=d.actor, approve=verdict == "approved", reason=d.reason)
            await self._progress("decision", c.APPROVED if verdict == "approved" else c.ISSUING,
                                 "Antrag bewilligt" if verdict == "approved" else "Antrag abgelehnt",
                                 decision=verdict, decided_by=d.actor.sub, decision_reason=d.reason,
                                 cosigned_by=cosigner, deadline_at="", alongside=True)
            return verdict, d.reason

    async def _request_documents(self, svc: ServiceEntry, d: c.Decision) -> bool:
        """Nachforderung: tell the citizen what is missing and wait. True when something arrived in time."""
        days = d.days or svc.documents_days
        until = (workflow.now() + timedelta(days=days)).date().isoformat()
        mark = self.received_docs  # anything arriving from now on counts, even while the notice is issued
        requested_at = workflow.now()
        self.waiting_for = list(d.missing)
        self._pause_deadline()
        await self._progress("documents", c.AWAITING_DOCUMENTS,
                             f"Unterlagen nachgefordert: {', '.join(d.missing)} (bis {until})",
                             waiting_for=list(d.missing), waiting_until=until, deadline_at="",
                             actor=d.actor.sub, reason=d.reason, audit_action="case.request_documents")
        self._answer(c.DecisionOutcome(decision="documents_requested", status=c.AWAITING_DOCUMENTS))
        notice = await self._issue("nachforderung", reason=d.reason, items=list(d.missing), due_on=until)
        await self._dispatch(notice)
        arrived = await self._wait_for(lambda: self.received_docs > mark,
                                       requested_at + timedelta(days=days) - workflow.now())
        self.waiting_for = []
        if not arrived:
            await self._progress("documents", c.AWAITING_DOCUMENTS,
                                 "Frist für die nachgeforderten Unterlagen abgelaufen", waiting_for=[], waiting_until="")
            return False
        self._resume_deadline()
        assert self.deadline_at is not None
        await self._progress("decision", c.AWAITING_DECISION, "Unterlagen eingegangen: Bearbeitung wird fortgesetzt",
                             waiting_for=[], waiting_until="", deadline_at=self.deadline_at.isoformat(),
                             due_on=self.deadline_at.date().isoformat())
        return True

    async def _collect_payment(self, svc: ServiceEntry, *, before_decision: bool) -> bool:
        """Request the fee and wait for it; True once paid. A declined or expired payment is replaced by a
        new one while the deadline lasts; the provider is asked (status poll) when no callback arrives."""
        assert self.fee is not None and self.aktenzeichen is not None
        amount = self.payment_amount = self.fee.amount_cents
        deadline = workflow.now() + timedelta(days=svc.payment_days)
        reminder_at = deadline - timedelta(days=svc.payment_reminder_days) if svc.payment_reminder_days else None
        poll_first = timedelta(seconds=self.inp.payment_poll_s) if self.inp.payment_poll_s > 0 else POLL_DEFAULT
        while True:
            self.payment = await self._act(c.ACT_REQUEST_PAYMENT, c.PaymentParams(
                case_id=self.inp.case_id, aktenzeichen=self.aktenzeichen, amount_cents=amount,
                purpose=f"{svc.name} {self.aktenzeichen}", attempt=self.payment_attempt), c.PaymentRequested)
            msg = f"Gebühr fällig: {euro(amount)}" if self.payment_attempt == 0 else \
                f"Neue Zahlungsaufforderung über {euro(amount)}"
            await self._progress("payment", c.AWAITING_PAYMENT, msg, payment_status="open", fee_cents=amount)
            if not before_decision:
                self._finish_decision(c.DecisionOutcome(decision="approved", status=c.AWAITING_PAYMENT,
                                                        payment_url=self.payment.payment_url))
            poll_in = poll_first
            while True:
                now = workflow.now()
                if now >= deadline:
                    late: c.PaymentPolled = await self._act(c.ACT_CANCEL_PAYMENT, self.payment.payment_id,
                                                            c.PaymentPolled)
                    if late.status == "paid" and late.amount_cents == amount:  # paid at the last moment
                        self.payment_event(c.PaymentEvent(payment_id=late.payment_id, event_id=f"cancel:{late.payment_id}",
                                                          status="paid", amount_cents=late.amount_cents))
                        break
                    return False
                wake = min(deadline, now + poll_in)
                if reminder_at is not None and now < reminder_at:
                    wake = min(wake, reminder_at)
                settled = await self._wait_for(lambda: self._payment_outcome() is not None, wake - now)
                if settled:
                    break
                if reminder_at is not None and workflow.now() >= reminder_at:
                    reminder_at = None
                    await self._notify("applicant", "payment-reminder", "Zahlungserinnerung",
                                       f"Für Ihren Antrag {self.aktenzeichen} ist noch eine Gebühr von {euro(amount)} "
                                       f"offen. Bitte bezahlen Sie bis {deadline.date().isoformat()}: "
                                       f"{self.payment.payment_url}")
                    await self._event("payment", "Zahlungserinnerung versandt")
                elif workflow.now() < deadline:
                    polled: c.PaymentPolled = await self._act(c.ACT_POLL_PAYMENT, self.payment.payment_id,
                                                              c.PaymentPolled)
                    if polled.status in ("paid", "declined", "expired"):
                        self.payment_event(c.PaymentEvent(payment_id=polled.payment_id,
                                                          event_id=f"poll:{polled.payment_id}:{polled.status}",
                                                          status=polled.status, amount_cents=polled.amount_cents))
                    poll_in = min(poll_in * 2, POLL_MAX)
            outcome = self._payment_outcome()
            assert outcome is not None
            if outcome.status == "paid":
                self.paid = outcome
                return True
            # declined or expired at the provider: a new payment, as long as our deadline lasts
            self.payment_attempt += 1
            what = "abgelehnt" if outcome.status == "declined" else "abgelaufen"
            await self._progress("payment", c.AWAITING_PAYMENT, f"Zahlung {what}", payment_status=outcome.status)
            await self._notify("applicant", f"payment-{outcome.status}", "Zahlung nicht abgeschlossen",
                               f"Die Zahlung für Ihren Antrag {self.aktenzeichen} wurde {what}. "
                               "Sie erhalten eine neue Zahlungsaufforderung.")

    def _payment_outcome(self) -> c.PaymentEvent | None:
        """The current payment's outcome: paid (with the requested amount), declined or expired."""
        if self.payment is None:
            return None
        for ev in self.payment_events:
            if ev.payment_id != self.payment.payment_id:
                continue
            if ev.status == "paid" and ev.amount_cents == self.payment_amount:
                return ev
            if ev.status in ("declined", "expired"):
                return ev
        return None

    async def _unpaid(self) -> c.CaseResult:
        self._stop_deadline()
        await self._progress("payment", c.CANCELLED, "Zahlungsfrist abgelaufen: Antrag storniert",
                             payment_status="expired")
        self._finish_decision(c.DecisionOutcome(decision="cancelled", status=c.CANCELLED))
        return await self._close_v2(c.CANCELLED, issue="cancellation",
                                    reason="Die Gebühr wurde nicht innerhalb der Zahlungsfrist bezahlt.")

    async def _refund(self, reason: str) -> None:
        """Compensation: pay a paid fee back (recorded in the Akte and the audit trail)."""
        assert self.paid is not None and self.payment is not None
        refunded: c.Refunded = await self._act(c.ACT_REFUND_PAYMENT, c.RefundParams(
            case_id=self.inp.case_id, payment_id=self.payment.payment_id, amount_cents=self.paid.amount_cents,
            reason=reason), c.Refunded)
        await self._progress("compensation", self.status, f"Gebühr von {euro(self.paid.amount_cents)} erstattet",
                             payment_status="refunded" if refunded.status == "refunded" else "refund_pending",
                             reason=reason, audit_action="case.compensation.refund")

    async def _aborted(self) -> c.CaseResult:
        """Withdrawn by the applicant or cancelled by an admin: compensate, tell, archive."""
        assert self.abort is not None
        kind, actor, reason = self.abort
        self._stop_deadline()
        label = "Antrag zurückgenommen" if kind == "withdrawn" else "Verfahren eingestellt"
        await self._progress("compensation", self.status, f"{label}: Ausgleichsschritte laufen", public=False,
                             actor=actor.sub, reason=reason, audit_action=f"case.{kind}")
        if self.paid is not None:
            await self._refund(reason or label)
        elif self.payment is not None:
            late: c.PaymentPolled = await self._act(c.ACT_CANCEL_PAYMENT, self.payment.payment_id, c.PaymentPolled)
            if late.status == "paid":  # paid a moment before the cancellation: pay it back
                self.paid = c.PaymentEvent(payment_id=late.payment_id, event_id=f"cancel:{late.payment_id}",
                                           status="paid", amount_cents=late.amount_cents)
                await self._refund(reason or label)
                return await self._aborted_close(kind, reason, label)
            await self._progress("compensation", self.status, "Zahlungsaufforderung storniert",
                                 payment_status="cancelled", reason=reason, audit_action="case.compensation.cancel_payment")
        return await self._aborted_close(kind, reason, label)

    async def _aborted_close(self, kind: str, reason: str, label: str) -> c.CaseResult:
        final = c.WITHDRAWN if kind == "withdrawn" else c.CANCELLED
        self._finish_decision(c.DecisionOutcome(decision=kind, status=final))
        return await self._close_v2(final, issue="withdrawal" if kind == "withdrawn" else "cancellation",
                                    reason=reason or None, message=label)

    async def _close_v2(self, status: str, *, issue: str | None, reason: str | None = None,
                        message: str | None = None) -> c.CaseResult:
        issued: str | None = None
        if issue is not None:
            await self._progress("certificate", self.status, "Bescheid wird erstellt", alongside=True)
            issued = await self._issue(issue, reason=reason)
            channels = await self._dispatch(issued)
            # the last channel delivered it; any before it failed for good and were replaced
            await self._progress("dispatch", self.status, f"Bescheid versandt ({_CHANNEL_NAMES.get(channels[-1], channels[-1])})",
                                 alongside=True)
        await self._act(c.ACT_ARCHIVE, c.ArchiveParams(case_id=self.inp.case_id, final_status=status), None)
        final_msg = message or {c.COMPLETED: "Abgeschlossen", c.REJECTED: "Abgelehnt", c.CANCELLED: "Storniert",
                                c.WITHDRAWN: "Antrag zurückgenommen"}[status]
        await self._progress("archive", status, final_msg, waiting_for=[], deadline_at="")
        self.closed = True
        assert self.aktenzeichen is not None
        return c.CaseResult(status=status, aktenzeichen=self.aktenzeichen, issued_document_id=issued)

    async def _issue(self, kind: str, *, reason: str | None = None, items: list[str] | None = None,
                     due_on: str = "") -> str:
        n = self.seq.get(kind, 0)
        self.seq[kind] = n + 1
        details: dict[str, str] = {}
        if self.fee is not None:
            details.update({f"fee_line_{i}": line for i, line in enumerate(self.fee.lines)})
            if self.fee.exempt_reason:
                details["exempt_reason"] = self.fee.exempt_reason
        if self.paid is not None:
            details["paid"] = euro(self.paid.amount_cents)
        doc: str = await self._act(c.ACT_ISSUE_DOCUMENT, c.IssueParams(
            case_id=self.inp.case_id, kind=kind, reason=reason, issued_on=workflow.now().date().isoformat(),
            items=list(items or []), due_on=due_on, seq=n, details=details), str)
        if doc not in self.documents:
            self.documents.append(doc)
        return doc

    async def _dispatch(self, dokument_id: str) -> list[str]:
        # channel "": the catalog and the applicant's choice decide (activities/dispatch.py)
        sent: list[c.DispatchResult] = await self._act(
            c.ACT_DISPATCH_V2, c.DispatchParams(case_id=self.inp.case_id, dokument_id=dokument_id, channel=""),
            list[c.DispatchResult])
        return [x.channel for x in sent] or ["portal"]

    async def _notify(self, audience: str, name: str, subject: str, text: str) -> None:
        n = self.seq.get(f"notify:{name}", 0)
        self.seq[f"notify:{name}"] = n + 1
        await self._act(c.ACT_NOTIFY, c.Notification(case_id=self.inp.case_id,
                                                     key=f"{self.inp.case_id}:notify:{name}:{n}",
                                                     audience=audience, subject=subject, text=text), None)

    async def _event(self, step: str, message: str, *, public: bool = False, **fields: object) -> None:
        """A timeline entry beside the main flow (reminders, escalations, extensions): the case's status and
        step stay as they are (empty step/status), so it cannot race the main flow's progress."""
        n = self.seq.get("event", 0)
        self.seq["event"] = n + 1
        self.history.append(c.HistoryEntry(at=workflow.now().isoformat(), step=step, status=self.status,
                                           message=message))
        await self._act(c.ACT_RECORD_PROGRESS, c.ProgressParams(
            case_id=self.inp.case_id, key=f"{self.inp.case_id}:event:{n}:{step}", step="", status="",
            message=message, public=public, **fields), None)  # type: ignore[arg-type]

    # -- the processing deadline ---------------------------------------------------------
    def _deadline_remaining(self) -> timedelta | None:
        """Time left on the processing deadline (running or paused); None once it has ended."""
        if self.deadline_done:
            return None
        return self.deadline_at - workflow.now() if self.deadline_at is not None else self.deadline_left

    def _pause_deadline(self) -> None:
        if self.deadline_at is not None:
            self.deadline_left = self._deadline_remaining()
            self.deadline_at = None
            self.deadline_version += 1
            self._upsert()

    def _resume_deadline(self) -> None:
        if self.deadline_at is None and self.deadline_left is not None:
            self.deadline_at = workflow.now() + self.deadline_left
            self.deadline_left = None
            self.deadline_version += 1
            self._upsert()

    def _stop_deadline(self) -> None:
        self.deadline_done = True
        self.deadline_version += 1
        self.deadline_at = None
        self._upsert()

    async def _deadline_watch(self, svc: ServiceEntry) -> None:
        """Reminder before the processing deadline, escalation when it passes. Wakes on every pause,
        resume or extension (deadline_version) and recomputes from the real remaining time."""
        while not self.deadline_done:
            version = self.deadline_version
            changed = lambda: self.deadline_version != version or self.deadline_done  # noqa: E731
            due = self.deadline_at
            if due is None or self.escalated:
                await workflow.wait_condition(changed)
                continue
            remind_at = due - timedelta(days=svc.deadline_reminder_days)
            if not self.reminded and svc.deadline_reminder_days > 0 and workflow.now() < due:
                target, what = remind_at, "remind"
            else:
                target, what = due, "escalate"
            delay = target - workflow.now()
            if delay > timedelta(0) and await self._wait(changed, delay):
                continue
            if self.deadline_done or self.deadline_version != version:
                continue
            if what == "remind":
                self.reminded = True
                await self._notify("assignee", "deadline-reminder", "Bearbeitungsfrist läuft ab",
                                   f"Die Bearbeitungsfrist für {self.aktenzeichen} läuft am "
                                   f"{due.date().isoformat()} ab.")
                await self._event("deadline", f"Erinnerung: Bearbeitungsfrist endet am {due.date().isoformat()}")
            else:
                self.escalated = True
                await self._notify("teamlead", "deadline-escalation", "Bearbeitungsfrist überschritten",
                                   f"Die Bearbeitungsfrist für {self.aktenzeichen} ist am {due.date().isoformat()} "
                                   "abgelaufen; der Fall ist an die Teamleitung eskaliert.")
                await self._event("deadline", "Bearbeitungsfrist überschritten: an die Teamleitung eskaliert",
                                  escalated=True, audit_action="case.escalated")

    async def _wait_for(self, cond, timeout: timedelta | None = None) -> bool:  # type: ignore[no-untyped-def]
        """wait_condition that also ends when the case is withdrawn or cancelled (raises _Abort then)."""
        def ready() -> bool:
            return self.abort is not None or cond()
        if timeout is None:
            await workflow.wait_condition(ready)
            ok = True
        else:
            ok = await self._wait(ready, max(timeout, timedelta(seconds=1)))
        if self.abort is not None:
            raise _Abort()
        return ok

    def _answer(self, outcome: c.DecisionOutcome) -> None:
        """The answer to the decide/co-sign Update in flight; frees the way for the next one."""
        self.outcome = outcome
        self.pending = None
        self.pending_cosign = None

    # -- updates -----------------------------------------------------------------------
    @workflow.update(name="register")
    async def register(self, reg: c.Registration) -> c.Registered:
        await workflow.wait_condition(lambda: self.aktenzeichen is not None)
        assert self.aktenzeichen is not None
        return c.Registered(case_id=self.inp.case_id, aktenzeichen=self.aktenzeichen, status=self.status)

    @register.validator
    def _validate_register(self, reg: c.Registration) -> None:
        if reg.fingerprint != self.inp.fingerprint:
            raise ApplicationError("Idempotency-Key was already used with a different request body",
                                   type=c.ERR_IDEMPOTENCY, non_retryable=True)

    async def _outcome(self) -> c.DecisionOutcome:
        """The answer to the decide/co-sign/forward Update in flight, once the run has set it."""
        await workflow.wait_condition(lambda: self.outcome is not None)
        assert self.outcome is not None
        tail = self.progress_tail
        if tail is not None:  # a step recorded alongside: in the read model before the caller hears the outcome
            await workflow.wait_condition(tail.done)
        return self.outcome

    def _clerk_of_department(self, actor: c.Actor) -> bool:
        return "clerk" in actor.roles and self.department in actor.departments

    @workflow.update(name="decide")
    async def decide(self, d: c.Decision) -> c.DecisionOutcome:
        if self.v2:
            self.outcome = None
            self.pending = d
        else:
            self.decision = d
        return await self._outcome()

    @decide.validator
    def _validate_decide(self, d: c.Decision) -> None:
        if not self._clerk_of_department(d.actor):
            raise ApplicationError("only a clerk of the responsible department may decide this case",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        if self.v2:
            self._validate_decision_v2(d)
            return
        if self.decision is not None:
            raise ApplicationError("this case has already been decided", type=c.ERR_STATE, non_retryable=True)
        if self.status != c.AWAITING_DECISION:
            raise ApplicationError(f"this case is not waiting for a decision (status: {self.status})",
                                   type=c.ERR_STATE, non_retryable=True)
        if not d.approve and not (d.reason or "").strip():
            raise ApplicationError("a rejection needs a reason", type=c.ERR_INVALID, non_retryable=True)

    def _validate_decision_v2(self, d: c.Decision) -> None:
        if self.status != c.AWAITING_DECISION or self.pending is not None or self.abort is not None or self.closed:
            raise ApplicationError(f"this case is not waiting for a decision (status: {self.status})",
                                   type=c.ERR_STATE, non_retryable=True)
        action = d.action or ("approve" if d.approve else "reject")
        if action not in ("approve", "reject", "request_documents", "forward"):
            raise ApplicationError(f"unknown decision {action!r}", type=c.ERR_INVALID, non_retryable=True)
        if action in ("reject", "forward") and not (d.reason or "").strip():
            raise ApplicationError(f"{'a rejection' if action == 'reject' else 'a forward'} needs a reason",
                                   type=c.ERR_INVALID, non_retryable=True)
        if action == "request_documents":
            if not d.missing or len(d.missing) > 20 or any(not m.strip() or len(m) > 300 for m in d.missing):
                raise ApplicationError("say which documents are missing (1 to 20 items of up to 300 characters)",
                                       type=c.ERR_INVALID, non_retryable=True)
            if not 0 <= d.days <= 180:
                raise ApplicationError("the time for the documents must be 1 to 180 days", type=c.ERR_INVALID,
                                       non_retryable=True)
        if action == "forward" and (not d.department or d.department == self.department):
            raise ApplicationError("forward to another department", type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="cosign")
    async def cosign(self, cs: c.CoSign) -> c.DecisionOutcome:
        self.outcome = None
        self.pending_cosign = cs
        return await self._outcome()

    @cosign.validator
    def _validate_cosign(self, cs: c.CoSign) -> None:
        if not self._clerk_of_department(cs.actor):
            raise ApplicationError("only a clerk of the responsible department may co-sign",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        if not self.v2 or self.status != c.AWAITING_COSIGN or self.first is None or self.pending_cosign is not None \
                or self.abort is not None:
            raise ApplicationError(f"this case is not waiting for a co-signature (status: {self.status})",
                                   type=c.ERR_STATE, non_retryable=True)
        if cs.actor.sub == self.first.actor.sub:
            raise ApplicationError("Vier-Augen-Prinzip: the co-signature must come from a second clerk, not from "
                                   "the one who decided", type=c.ERR_FORBIDDEN, non_retryable=True)
        if not cs.agree and not cs.reason.strip():
            raise ApplicationError("refusing to co-sign needs a reason", type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="forward")
    async def forward(self, f: c.Forward) -> c.DecisionOutcome:
        self.outcome = None
        self.pending = c.Decision(actor=f.actor, approve=False, action="forward", department=f.department,
                                  reason=f.reason)
        return await self._outcome()

    @forward.validator
    def _validate_forward(self, f: c.Forward) -> None:
        staff = "admin" in f.actor.roles or self._clerk_of_department(f.actor)
        if not staff:
            raise ApplicationError("only an admin or a clerk of the responsible department may forward this case",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        if not self.v2:
            raise ApplicationError("this case was started before forwarding existed", type=c.ERR_STATE,
                                   non_retryable=True)
        if not f.reason.strip():
            raise ApplicationError("a forward needs a reason", type=c.ERR_INVALID, non_retryable=True)
        self._validate_decision_v2(c.Decision(actor=f.actor, approve=False, action="forward",
                                              department=f.department, reason=f.reason))

    @workflow.update(name="extend_deadline")
    async def extend_deadline(self, e: c.ExtendDeadline) -> str:
        extra = timedelta(days=e.days)
        if self.deadline_at is not None:
            self.deadline_at += extra
            due = self.deadline_at
        else:
            assert self.deadline_left is not None
            self.deadline_left += extra
            due = workflow.now() + self.deadline_left
        self.reminded = self.escalated = False
        self.deadline_version += 1
        self._upsert()
        fields: dict[str, object] = {"due_on": due.date().isoformat(), "escalated": False}
        if self.deadline_at is not None:
            fields["deadline_at"] = self.deadline_at.isoformat()
        await self._event("deadline", f"Bearbeitungsfrist um {e.days} Tage verlängert bis {due.date().isoformat()}",
                          actor=e.actor.sub, reason=e.reason, audit_action="case.deadline.extend", **fields)
        return due.isoformat()

    @extend_deadline.validator
    def _validate_extend(self, e: c.ExtendDeadline) -> None:
        lead = "teamlead" in e.actor.roles and self.department in e.actor.departments
        clerk = self._clerk_of_department(e.actor)
        if not (lead or clerk or "admin" in e.actor.roles):
            raise ApplicationError("only the responsible department or an admin may extend the deadline",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        if not self.v2 or self.deadline_done or (self.deadline_at is None and self.deadline_left is None) \
                or self.abort is not None:
            raise ApplicationError(f"this case has no running processing deadline (status: {self.status})",
                                   type=c.ERR_STATE, non_retryable=True)
        if not 1 <= e.days <= 365:
            raise ApplicationError("extend by 1 to 365 days", type=c.ERR_INVALID, non_retryable=True)
        if not e.reason.strip():
            raise ApplicationError("an extension needs a reason", type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="withdraw")
    async def withdraw(self, w: c.Withdrawal) -> str:
        self.abort = ("withdrawn", w.actor, w.reason)
        return c.WITHDRAWN

    @withdraw.validator
    def _validate_withdraw(self, w: c.Withdrawal) -> None:
        if w.actor.sub != self.inp.integrator and "citizen" not in w.actor.roles and "admin" not in w.actor.roles:
            raise ApplicationError("only the applicant (through the portal that submitted the case) may withdraw it",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        self._validate_abort(WITHDRAWABLE + ((c.AWAITING_PAYMENT,) if self._paying_first() else ()),
                             "it can only be withdrawn before the decision")

    @workflow.update(name="admin_cancel")
    async def admin_cancel(self, a: c.AdminCancel) -> str:
        self.abort = ("cancelled", a.actor, a.reason)
        return c.CANCELLED

    @admin_cancel.validator
    def _validate_admin_cancel(self, a: c.AdminCancel) -> None:
        if "admin" not in a.actor.roles:
            raise ApplicationError("only an admin may cancel a case", type=c.ERR_FORBIDDEN, non_retryable=True)
        if not a.reason.strip():
            raise ApplicationError("a cancellation needs a reason", type=c.ERR_INVALID, non_retryable=True)
        self._validate_abort(WAITING, "only a waiting case can be cancelled")

    def _paying_first(self) -> bool:
        return self.service is not None and self.service.payment_timing == "before_decision" \
            and self.decision is None and self.pending is None

    def _validate_abort(self, allowed: tuple[str, ...], why: str) -> None:
        if not self.v2:
            raise ApplicationError("this case was started before withdrawal and cancellation existed",
                                   type=c.ERR_STATE, non_retryable=True)
        busy = self.pending is not None or self.pending_cosign is not None
        if self.closed or self.abort is not None or busy or self.status not in allowed:
            raise ApplicationError(f"the case is {self.status}: {why}", type=c.ERR_STATE, non_retryable=True)

    @workflow.update(name="route")
    async def route(self, r: c.RouteCase) -> str:
        self.route_request = r
        await workflow.wait_condition(lambda: self.department is not None)
        return self.status

    @route.validator
    def _validate_route(self, r: c.RouteCase) -> None:
        if "mailroom" not in r.actor.roles:
            raise ApplicationError("only the mailroom may route a case", type=c.ERR_FORBIDDEN, non_retryable=True)
        if self.status != c.TRIAGE or self.route_request is not None:
            raise ApplicationError(f"the case is not waiting in triage (status: {self.status})", type=c.ERR_STATE,
                                   non_retryable=True)

    @workflow.update(name="add_document")
    async def add_document(self, a: c.AddDocument) -> str:
        doc_id: str = await self._act(c.ACT_FILE_DOCUMENT, c.FileDocumentParams(
            case_id=self.inp.case_id, key=f"{self.inp.case_id}:upload:{a.upload_id}", ref=a.ref, kind=a.kind,
            title=a.title or a.ref.filename, created_by=a.actor.sub, supersedes=a.supersedes, reason=a.reason), str)
        if doc_id not in self.documents:
            self.documents.append(doc_id)
            if a.kind != "Vermerk":
                self.received_docs += 1  # resumes a Nachforderung
        return doc_id

    @add_document.validator
    def _validate_add_document(self, a: c.AddDocument) -> None:
        if self.closed or self.status in c.FINAL_STATUSES:
            raise ApplicationError("the case is closed; no documents can be added", type=c.ERR_STATE,
                                   non_retryable=True)
        if self.aktenzeichen is None:
            raise ApplicationError("the case is still being registered; retry shortly", type=c.ERR_STATE,
                                   non_retryable=True)
        if a.supersedes and not a.reason.strip():
            raise ApplicationError("a new version needs a reason", type=c.ERR_INVALID, non_retryable=True)

    # -- signals and query ---------------------------------------------------------------
    @workflow.signal(name="payment_event")
    def payment_event(self, ev: c.PaymentEvent) -> None:
        # Kept even when it arrives before the payment request's result is applied (a fast
        # payer): _confirmed_payment() matches events against the payment once it is known.
        if all(e.event_id != ev.event_id for e in self.payment_events):
            self.payment_events.append(ev)

    def _confirmed_payment(self) -> c.PaymentEvent | None:
        if self.payment is None:
            return None
        fee = self.service.fee_cents if self.service else 0
        for ev in self.payment_events:
            if ev.payment_id == self.payment.payment_id and ev.status == "paid" and ev.amount_cents == fee:
                return ev
        return None

    @workflow.signal(name="letter_filed")
    def letter_filed(self, ev: c.LetterFiled) -> None:
        if all(x.mail_item_id != ev.mail_item_id for x in self.letters):
            self.letters.append(ev)
            if ev.dokument_id not in self.documents:
                self.documents.append(ev.dokument_id)
            self.received_docs += 1  # a letter by post answers a Nachforderung too

    @workflow.query(name="status")
    def query_status(self) -> c.CaseStatus:
        return c.CaseStatus(
            case_id=self.inp.case_id, aktenzeichen=self.aktenzeichen, status=self.status, step=self.step,
            service_key=self.service.key if self.service else None, department=self.department,
            payment_url=self.payment.payment_url if self.payment and not self._confirmed_payment()
            and self.paid is None else None,
            decision=("approved" if self.decision.approve else "rejected") if self.decision else None,
            history=list(self.history), documents=list(self.documents),
            deadline_at=self.deadline_at.isoformat() if self.deadline_at is not None else None,
            deadline_remaining_s=int(left.total_seconds()) if (left := self._deadline_remaining()) is not None else None,
            waiting_for=list(self.waiting_for),
            first_decision_by=self.first.actor.sub if self.first is not None else None,
        )

    # -- helpers -----------------------------------------------------------------------
    def _finish_decision(self, outcome: c.DecisionOutcome) -> None:
        if self.outcome is None:
            self.outcome = outcome

    async def _wait(self, cond, timeout: timedelta) -> bool:  # type: ignore[no-untyped-def]
        try:
            await workflow.wait_condition(cond, timeout=timeout)
            return True
        except TimeoutError:
            return False

    def _note(self, step: str, status: str, message: str) -> None:
        self.step, self.status = step, status
        self.history.append(c.HistoryEntry(at=workflow.now().isoformat(), step=step, status=status, message=message))

    def _upsert(self) -> None:
        updates = [search.STATUS.value_set(self.status), search.STEP.value_set(self.step)]
        if self.aktenzeichen:
            updates.append(search.AKTENZEICHEN.value_set(self.aktenzeichen))
        if self.service is not None:
            updates.append(search.SERVICE.value_set(self.service.key))
        if self.department:
            updates.append(search.DEPARTMENT.value_set(self.department))
        if self.v2:
            updates.append(search.DEADLINE.value_set(self.deadline_at) if self.deadline_at is not None
                           else search.DEADLINE.value_unset())
        workflow.upsert_search_attributes(updates)

    async def _progress(self, step: str, status: str, message: str, *, public: bool = True, alongside: bool = False,
                        **fields: str | int | None) -> None:
        """Record a step in the read model and timeline (activity record_progress).

        Progress steps are recorded strictly one after another. With ``alongside`` (cases started
        with the ALONGSIDE patch) the caller does not wait for it: it announces the activity that
        comes next, which then runs while it is recorded. Every later progress step waits for it, and
        so does everything that answers a caller or ends the case (they all record a step first)."""
        self._note(step, status, message)
        self._upsert()
        n = len(self.history)
        params = c.ProgressParams(case_id=self.inp.case_id, key=f"{self.inp.case_id}:{n}:{step}:{status}", step=step,
                                  status=status, message=message, public=public, **fields)
        if not self.alongside:
            await self._act(c.ACT_RECORD_PROGRESS, params, None)
            return
        before = self.progress_tail

        async def record() -> None:
            if before is not None:
                await before
            await self._act(c.ACT_RECORD_PROGRESS, params, None)

        tail = self.progress_tail = asyncio.ensure_future(record())
        if not alongside:
            await tail

    async def _act(self, name: str, arg: object, result_type: type | None):  # type: ignore[no-untyped-def]
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=DEFAULT_RETRY,
        )
