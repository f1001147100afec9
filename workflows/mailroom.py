"""MailItemWorkflow: one incoming letter in the digital mailroom (Poststelle).

register → OCR (own task queue, separate process) → reference detection → file into the
case and signal its workflow, or wait in triage; unreadable or hostile files end failed
with a reason a clerk understands.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import contracts as c

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
OCR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2),
                        maximum_attempts=5, non_retryable_error_types=["IntakeRejected"])


@workflow.defn(name="MailItemWorkflow")
class MailItemWorkflow:
    @workflow.init
    def __init__(self, inp: c.MailInput) -> None:
        self.inp = inp
        self.state = c.MailStatus(item_id=inp.item_id, status="received")
        self.assignment: str | None = None

    @workflow.run
    async def run(self, inp: c.MailInput) -> c.MailStatus:
        await self._act(c.ACT_REGISTER_MAIL, inp, None)
        await self._set("processing")
        ocr: c.OcrSummary = await workflow.execute_activity(
            c.ACT_OCR_MAIL, inp.item_id, result_type=c.OcrSummary, task_queue=inp.ocr_task_queue, start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(seconds=60), retry_policy=OCR_RETRY,
        )
        if ocr.status != "processed":
            return await self._set("failed", reason_code=ocr.code, reason=ocr.reason)
        if ocr.empty:
            return await self._set("failed", reason_code="empty", reason=ocr.reason or
                                   "The scan contains only blank pages.")
        match: c.MatchedReference = await self._act(c.ACT_MATCH_REFERENCE, [inp.item_id, None], c.MatchedReference)
        if match.case_id is not None:
            return await self._file(match, filed_by="system")
        await self._set("triage")
        await workflow.wait_condition(lambda: self.state.status == "filed" and workflow.all_handlers_finished())
        return self.state

    async def _file(self, match: c.MatchedReference, *, filed_by: str) -> c.MailStatus:
        assert match.case_id is not None
        dokument_id: str = await self._act(c.ACT_FILE_LETTER, c.FileLetterParams(
            item_id=self.inp.item_id, case_id=match.case_id, filed_by=filed_by), str)
        case = workflow.get_external_workflow_handle(match.case_id)
        try:
            await case.signal("letter_filed", c.LetterFiled(mail_item_id=self.inp.item_id, dokument_id=dokument_id))
        except ApplicationError:
            workflow.logger.info("case workflow no longer running; letter filed into its Akte only")
        self.state.aktenzeichen = match.aktenzeichen
        return await self._set("filed", case_id=match.case_id)

    @workflow.update(name="assign")
    async def assign(self, req: c.AssignLetter) -> c.MailStatus:
        self.assignment = req.aktenzeichen
        match: c.MatchedReference = await self._act(c.ACT_MATCH_REFERENCE, [self.inp.item_id, req.aktenzeichen],
                                                    c.MatchedReference)
        if match.case_id is None:
            self.assignment = None
            raise ApplicationError(f"no case with Aktenzeichen {req.aktenzeichen}", type=c.ERR_INVALID,
                                   non_retryable=True)
        return await self._file(match, filed_by=req.actor.sub)

    @assign.validator
    def _validate_assign(self, req: c.AssignLetter) -> None:
        if "mailroom" not in req.actor.roles:
            raise ApplicationError("only the mailroom may file letters", type=c.ERR_FORBIDDEN, non_retryable=True)
        if self.state.status != "triage" or self.assignment is not None:
            raise ApplicationError(f"the letter is not waiting in triage (status: {self.state.status})",
                                   type=c.ERR_STATE, non_retryable=True)

    @workflow.query(name="status")
    def status(self) -> c.MailStatus:
        return self.state

    async def _set(self, status: str, *, reason_code: str | None = None, reason: str | None = None,
                   case_id: str | None = None) -> c.MailStatus:
        self.state.status, self.state.reason_code, self.state.reason = status, reason_code, reason
        if case_id:
            self.state.case_id = case_id
        await self._act(c.ACT_MAIL_STATUS, c.MailStatusParams(item_id=self.inp.item_id, status=status,
                                                              reason_code=reason_code, reason=reason,
                                                              case_id=case_id), None)
        return self.state

    async def _act(self, name: str, arg: object, result_type: type | None):  # type: ignore[no-untyped-def]
        args = arg if isinstance(arg, list) else [arg]
        return await workflow.execute_activity(name, args=args, result_type=result_type,
                                               start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY)
