"""CaseWorkflow: one citizen request, from intake to archive.

intake → routing → clerk decision → payment → certificate → dispatch → archive.
Deterministic orchestration only: every side effect is an activity (called by name),
every activity is idempotent under a key derived from the workflow id and the step.
Human steps are Updates with validators; the payment provider's confirmation is a
Signal; the status is a Query plus search attributes.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from intake.service import ServiceEntry
    from workflows import contracts as c
    from workflows import search

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

    # -- run ---------------------------------------------------------------------------
    @workflow.run
    async def run(self, inp: c.CaseInput) -> c.CaseResult:
        svc = inp.service
        opened: c.OpenedCase = await self._act(c.ACT_OPEN_CASE, c.OpenCaseParams(
            case_id=inp.case_id, integrator=inp.integrator, fingerprint=inp.fingerprint, applicant=inp.applicant,
            service=svc, requested_service_key=inp.requested_service_key, form=inp.form, channel=inp.channel,
            year=workflow.now().year,
        ), c.OpenedCase)
        self.aktenzeichen = opened.aktenzeichen
        self.documents.append(opened.application_document_id)
        self._note("intake", c.RECEIVED, f"Antrag eingegangen, Aktenzeichen {opened.aktenzeichen}")
        self._upsert()

        # routing: a request without a known service waits for the mailroom to assign one
        if svc is None:
            await self._progress("routing", c.TRIAGE, "Keine Leistung zugeordnet: an die Poststelle zur Klärung")
            await workflow.wait_condition(lambda: self.route_request is not None)
            assert self.route_request is not None
            svc = self.service = self.route_request.service
            await self._progress("routing", c.RECEIVED, f"Von der Poststelle zugeordnet: {svc.name}",
                                 service_key=svc.key, service_name=svc.name, fee_cents=svc.fee_cents,
                                 retention_years=svc.retention_years)
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

    @workflow.update(name="decide")
    async def decide(self, d: c.Decision) -> c.DecisionOutcome:
        self.decision = d
        await workflow.wait_condition(lambda: self.outcome is not None)
        assert self.outcome is not None
        return self.outcome

    @decide.validator
    def _validate_decide(self, d: c.Decision) -> None:
        if "clerk" not in d.actor.roles or self.department not in d.actor.departments:
            raise ApplicationError("only a clerk of the responsible department may decide this case",
                                   type=c.ERR_FORBIDDEN, non_retryable=True)
        if self.decision is not None:
            raise ApplicationError("this case has already been decided", type=c.ERR_STATE, non_retryable=True)
        if self.status != c.AWAITING_DECISION:
            raise ApplicationError(f"this case is not waiting for a decision (status: {self.status})",
                                   type=c.ERR_STATE, non_retryable=True)
        if not d.approve and not (d.reason or "").strip():
            raise ApplicationError("a rejection needs a reason", type=c.ERR_INVALID, non_retryable=True)

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

    @workflow.query(name="status")
    def query_status(self) -> c.CaseStatus:
        return c.CaseStatus(
            case_id=self.inp.case_id, aktenzeichen=self.aktenzeichen, status=self.status, step=self.step,
            service_key=self.service.key if self.service else None, department=self.department,
            payment_url=self.payment.payment_url if self.payment and not self._confirmed_payment() else None,
            decision=("approved" if self.decision.approve else "rejected") if self.decision else None,
            history=list(self.history), documents=list(self.documents),
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
        workflow.upsert_search_attributes(updates)

    async def _progress(self, step: str, status: str, message: str, *, public: bool = True,
                        **fields: str | int | None) -> None:
        self._note(step, status, message)
        self._upsert()
        n = len(self.history)
        await self._act(c.ACT_RECORD_PROGRESS, c.ProgressParams(
            case_id=self.inp.case_id, key=f"{self.inp.case_id}:{n}:{step}:{status}", step=step, status=status,
            message=message, public=public, **fields), None)

    async def _act(self, name: str, arg: object, result_type: type | None):  # type: ignore[no-untyped-def]
        return await workflow.execute_activity(
            name, arg, result_type=result_type, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=DEFAULT_RETRY,
        )
