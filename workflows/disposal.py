"""DisposalWorkflow: one Aussonderung round, started daily by the Temporal Schedule
``aktenlauf-disposal``.

offer (every closed Akte past retention, not under legal hold) → wait for an archivist's
decision per Akte (Update ``confirm`` with validator: archive | destroy | keep) → execute each
decision at once through an idempotent activity (key: round id + Akte id) → after
``confirm_days`` undecided offers stay offered and are offered again by the next round.
A legal hold placed meanwhile withdraws the offer (Signal ``withdraw``) and is re-checked
inside the execute activity, so it stops a destruction whatever the order of events.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contracts as c
    from workflows import disposal_contracts as d

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=1),
                    non_retryable_error_types=[d.ERR_LEGAL_HOLD, d.ERR_NOT_OFFERED, d.ERR_ARCHIVE_UNAVAILABLE])
STEP_TIMEOUT = timedelta(minutes=1)
EXECUTE_TIMEOUT = timedelta(minutes=30)  # an archive package of a large Akte takes a while


@workflow.defn(name=d.WORKFLOW)
class DisposalWorkflow:
    @workflow.init
    def __init__(self, inp: d.DisposalInput) -> None:
        self.inp = inp
        self.as_of: str | None = None
        self.offers: dict[str, d.OfferedAkte] = {}
        self.decisions: dict[str, str] = {}
        self.accepting = False
        self.deadline: str | None = None

    @workflow.run
    async def run(self, inp: d.DisposalInput) -> d.DisposalResult:
        round_id = workflow.info().workflow_id
        self.as_of = inp.as_of or workflow.now().date().isoformat()
        offers: list[d.OfferedAkte] = await workflow.execute_activity(
            d.ACT_OFFER, d.OfferParams(round_id=round_id, as_of=self.as_of, limit=inp.limit),
            result_type=list[d.OfferedAkte], start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY)
        self.offers = {o.akte_id: o for o in offers}
        workflow.logger.info("disposal round offered %d Akten", len(offers))
        if offers:
            wait = timedelta(days=inp.confirm_days)
            self.deadline = (workflow.now() + wait).isoformat()
            self.accepting = True
            try:
                await workflow.wait_condition(lambda: all(a in self.decisions for a in self.offers), timeout=wait)
            except TimeoutError:
                workflow.logger.info("disposal round: confirmation period over")
            self.accepting = False
            await workflow.wait_condition(workflow.all_handlers_finished)
        pending = [a for a in self.offers if a not in self.decisions]
        unfinished = [a for a in self.offers if self.decisions.get(a) in (None, "held", "withdrawn")]
        if unfinished:  # they stay offered (unless held), no longer bound to this round
            await workflow.execute_activity(d.ACT_END_ROUND, d.EndRoundParams(round_id=round_id, akte_ids=unfinished),
                                            result_type=int, start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY)
        counts = list(self.decisions.values())
        return d.DisposalResult(round_id=round_id, offered=len(self.offers), archived=counts.count("archived"),
                                destroyed=counts.count("destroyed"), kept=counts.count("kept"),
                                held=counts.count("held") + counts.count("withdrawn"), pending=pending)

    # -- the archivist's decision ----------------------------------------------------------
    @workflow.update(name="confirm")
    async def confirm(self, dec: d.DisposalDecision) -> d.DisposalOutcome:
        self.decisions[dec.akte_id] = "executing"
        role = "admin" if "admin" in dec.actor.roles and "archivist" not in dec.actor.roles else "archivist"
        try:
            out: d.DisposalOutcome = await workflow.execute_activity(
                d.ACT_EXECUTE, d.ExecuteParams(
                    round_id=workflow.info().workflow_id, akte_id=dec.akte_id, action=dec.action, actor=dec.actor.sub,
                    role=role, confirmed_at=workflow.now().isoformat(), reason=dec.reason,
                    retain_until=self._retain_until(dec) if dec.action == "keep" else None),
                result_type=d.DisposalOutcome, start_to_close_timeout=EXECUTE_TIMEOUT, retry_policy=RETRY)
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type in (d.ERR_LEGAL_HOLD, d.ERR_NOT_OFFERED):
                self.decisions[dec.akte_id] = "held" if cause.type == d.ERR_LEGAL_HOLD else "withdrawn"
                raise ApplicationError(cause.message, type=c.ERR_STATE, non_retryable=True) from exc
            if isinstance(cause, ApplicationError) and cause.type == d.ERR_ARCHIVE_UNAVAILABLE:
                del self.decisions[dec.akte_id]  # nothing happened: the archivist may decide again
                raise ApplicationError(cause.message, type=c.ERR_STATE, non_retryable=True) from exc
            raise
        self.decisions[dec.akte_id] = out.action
        return out

    @confirm.validator
    def _validate_confirm(self, dec: d.DisposalDecision) -> None:
        if not any(r in dec.actor.roles for r in d.CONFIRMING_ROLES):
            raise ApplicationError("only an archivist or an admin may confirm a disposal", type=c.ERR_FORBIDDEN,
                                   non_retryable=True)
        if dec.action not in d.ACTIONS:
            raise ApplicationError(f"action must be one of {', '.join(d.ACTIONS)}", type=c.ERR_INVALID,
                                   non_retryable=True)
        if dec.akte_id not in self.offers:
            raise ApplicationError("this Akte is not offered in this disposal round", type=c.ERR_STATE,
                                   non_retryable=True)
        if not self.accepting:
            raise ApplicationError("this disposal round no longer accepts decisions; the next round offers the "
                                   "Akte again", type=c.ERR_STATE, non_retryable=True)
        if dec.akte_id in self.decisions:
            raise ApplicationError(f"this Akte has already been decided ({self.decisions[dec.akte_id]})",
                                   type=c.ERR_STATE, non_retryable=True)
        if dec.action == "keep":
            if not (dec.reason or "").strip():
                raise ApplicationError("keeping an Akte beyond its retention needs a reason", type=c.ERR_INVALID,
                                       non_retryable=True)
            try:
                until = dt.date.fromisoformat(self._retain_until(dec))
            except ValueError as exc:
                raise ApplicationError("retain_until must be an ISO date (YYYY-MM-DD)", type=c.ERR_INVALID,
                                       non_retryable=True) from exc
            if self.as_of is not None and until <= dt.date.fromisoformat(self.as_of):
                raise ApplicationError("retain_until must lie in the future", type=c.ERR_INVALID, non_retryable=True)

    def _retain_until(self, dec: d.DisposalDecision) -> str:
        if dec.retain_until:
            return dec.retain_until
        base = dt.date.fromisoformat(self.as_of or workflow.now().date().isoformat())
        try:
            return base.replace(year=base.year + 1).isoformat()
        except ValueError:  # 29 February
            return base.replace(year=base.year + 1, day=28).isoformat()

    # -- a legal hold withdraws an offer -------------------------------------------------------
    @workflow.signal(name="withdraw")
    def withdraw(self, w: d.Withdrawal) -> None:
        if w.akte_id in self.offers and w.akte_id not in self.decisions:
            self.decisions[w.akte_id] = "withdrawn"

    @workflow.query(name="status")
    def status(self) -> d.RoundStatus:
        return d.RoundStatus(round_id=workflow.info().workflow_id, as_of=self.as_of, accepting=self.accepting,
                             deadline=self.deadline, offers=list(self.offers.values()),
                             decisions=dict(self.decisions))
