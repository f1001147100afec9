"""MailItemWorkflow: one incoming letter in the digital mailroom (Poststelle).

register → OCR (own task queue, separate process) → barcodes and separator pages (OCR queue)
→ a scanned stack with separator pages becomes one child letter per part → reference
detection (Aktenzeichen, the QR code on our own letters, the applicant's reference number):
file into that case and signal its workflow → otherwise classification: a confident match
starts a new case for that service, anything else waits in triage with its suggestions.

In triage (and after routing to a department) people act through Updates with validators:
file into a case, route to a department, start a new case, split, merge, close without
action. Unreadable or hostile files end failed with a reason a clerk understands.

Histories recorded before the v2 steps (codes, classification) replay through
``workflow.patched(V2)``: the old path is kept as it was.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from workflows import contracts as c

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
# no attempt limit: an OCR step that fails because S3, the database or the OCR worker is away
# waits for them (a bad file is not an error: it ends as an outcome with a reason)
OCR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2),
                        non_retryable_error_types=["IntakeRejected"])
# waiting for a case this letter started to be opened (its Aktenzeichen assigned)
CASE_OPEN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=1.5,
                              maximum_interval=timedelta(seconds=10))
V2 = "mailroom-v2"

#: statuses in which people may still act on the letter
OPEN = ("triage", "routed")
TRIAGE_ROLES = ("mailroom", "admin")


@workflow.defn(name="MailItemWorkflow")
class MailItemWorkflow:
    @workflow.init
    def __init__(self, inp: c.MailInput) -> None:
        self.inp = inp
        self.state = c.MailStatus(item_id=inp.item_id, status="received")
        self.assignment: str | None = None
        self.department: str | None = None
        self.pages = 0
        self.busy = False  # a triage action is being carried out
        self.v2 = False  # started on code with codes/classification/triage actions (see V2)
        self.actions = 0  # triage actions recorded (their keys)

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
        self.pages = ocr.pages
        self.v2 = workflow.patched(V2)
        if not self.v2:
            match: c.MatchedReference = await self._act(c.ACT_MATCH_REFERENCE, [inp.item_id, None], c.MatchedReference)
            if match.case_id is not None:
                return await self._file(match, filed_by="system")
            return await self._triage()

        codes: c.ScannedCodes = await workflow.execute_activity(
            c.ACT_SCAN_CODES, inp.item_id, result_type=c.ScannedCodes, task_queue=inp.ocr_task_queue,
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=timedelta(seconds=60), retry_policy=OCR_RETRY)
        if len(codes.parts) > 1:  # a scanned stack: one letter per part between separator pages
            return await self._split(codes.parts, actor="system", reason="Trennblatt erkannt")
        match = await self._act(c.ACT_MATCH_REFERENCE_V2, c.MatchParams(item_id=inp.item_id, codes=codes),
                                c.MatchedReference)
        if match.case_id is not None:
            return await self._file(match, filed_by="system")
        classified: c.Classified = await self._act(c.ACT_CLASSIFY_MAIL, inp.item_id, c.Classified)
        if classified.confident and classified.suggestions:
            return await self._new_case(classified.suggestions[0].service_key, actor="system", role="system",
                                        method="classified")
        return await self._triage()

    async def _triage(self) -> c.MailStatus:
        await self._set("triage")
        await workflow.wait_condition(lambda: self.state.status not in OPEN and not self.busy
                                      and workflow.all_handlers_finished())
        return self.state

    # -- outcomes --------------------------------------------------------------------------
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
        return await self._set("filed", case_id=match.case_id, match_method=match.method)

    async def _new_case(self, service_key: str, *, actor: str, role: str, method: str) -> c.MailStatus:
        """Start a case for this letter (a child workflow that outlives this one), wait until it
        has its Aktenzeichen, then file the letter into it."""
        prepared: c.CaseFromLetter = await self._act(c.ACT_CASE_FROM_LETTER, c.CaseFromLetterParams(
            item_id=self.inp.item_id, service_key=service_key, actor=actor), c.CaseFromLetter)
        if prepared.case_input is None or prepared.case_id is None:
            raise ApplicationError(f"unknown service {service_key}", type=c.ERR_INVALID, non_retryable=True)
        try:
            await workflow.start_child_workflow(
                "CaseWorkflow", prepared.case_input, id=prepared.case_id, task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON)
        except WorkflowAlreadyStartedError:  # the case id is derived from the letter: started already
            workflow.logger.info("case for this letter already started")
        aktenzeichen: str = await workflow.execute_activity(
            c.ACT_AWAIT_CASE_OPEN, prepared.case_id, result_type=str, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=CASE_OPEN_RETRY)
        await self._record(c.TriageRecord(item_id=self.inp.item_id, action="new_case", key=self._key("new_case"), actor=actor, role=role,
                                          service_key=service_key, case_id=prepared.case_id))
        return await self._file(c.MatchedReference(case_id=prepared.case_id, aktenzeichen=aktenzeichen, method=method),
                                filed_by=actor)

    async def _split(self, parts: list[list[int]], *, actor: str, reason: str) -> c.MailStatus:
        result: c.SplitResult = await self._act(c.ACT_SPLIT_MAIL, c.SplitParams(
            item_id=self.inp.item_id, parts=parts, actor=actor, reason=reason), c.SplitResult)
        for child in result.children:
            try:
                await workflow.start_child_workflow(
                    "MailItemWorkflow", child, id=child.item_id, task_queue=workflow.info().task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON)
            except WorkflowAlreadyStartedError:
                workflow.logger.info("letter part already started")
        return await self._set("split", reason=f"{reason}: {len(result.children)} Schreiben")

    async def _record(self, rec: c.TriageRecord) -> None:
        await self._act(c.ACT_RECORD_TRIAGE, rec, None)

    def _key(self, action: str) -> str:
        self.actions += 1
        return f"{self.inp.item_id}:{self.actions}:{action}"

    # -- triage: people act through Updates ---------------------------------------------------
    def _check_actor(self, actor: c.Actor, *, department_clerks: bool = True) -> None:
        if any(r in actor.roles for r in TRIAGE_ROLES):
            return
        if (department_clerks and "clerk" in actor.roles and self.state.status == "routed"
                and self.department in actor.departments):
            return
        raise ApplicationError("only the mailroom (or, once routed, the department's clerks) may act on letters",
                               type=c.ERR_FORBIDDEN, non_retryable=True)

    def _check_open(self) -> None:
        if self.state.status not in OPEN or self.busy or self.assignment is not None:
            raise ApplicationError(f"the letter is not waiting in triage (status: {self.state.status})",
                                   type=c.ERR_STATE, non_retryable=True)

    def _begin(self) -> None:
        """Handlers run one at a time until their first await: this check-and-set is atomic."""
        self._check_open()
        self.busy = True

    @workflow.update(name="assign")
    async def assign(self, req: c.AssignLetter) -> c.MailStatus:
        if self.v2:
            self._begin()
        self.assignment = req.aktenzeichen
        try:
            if self.v2:
                match: c.MatchedReference = await self._act(c.ACT_MATCH_REFERENCE_V2, c.MatchParams(
                    item_id=self.inp.item_id, aktenzeichen=req.aktenzeichen), c.MatchedReference)
            else:
                match = await self._act(c.ACT_MATCH_REFERENCE, [self.inp.item_id, req.aktenzeichen],
                                        c.MatchedReference)
            if match.case_id is None:
                self.assignment = None
                raise ApplicationError(f"no case with Aktenzeichen {req.aktenzeichen}", type=c.ERR_INVALID,
                                       non_retryable=True)
            match.method = "mailroom"
            if self.v2:
                await self._record(c.TriageRecord(item_id=self.inp.item_id, action="file", key=self._key("file"), actor=req.actor.sub,
                                                  role=self._role(req.actor), case_id=match.case_id))
            return await self._file(match, filed_by=req.actor.sub)
        finally:
            self.busy = False

    @assign.validator
    def _validate_assign(self, req: c.AssignLetter) -> None:
        if not self.v2:
            if "mailroom" not in req.actor.roles:
                raise ApplicationError("only the mailroom may file letters", type=c.ERR_FORBIDDEN, non_retryable=True)
            if self.state.status != "triage" or self.assignment is not None:
                raise ApplicationError(f"the letter is not waiting in triage (status: {self.state.status})",
                                       type=c.ERR_STATE, non_retryable=True)
            return
        self._check_actor(req.actor)
        self._check_open()

    @workflow.update(name="route")
    async def route(self, req: c.RouteLetter) -> c.MailStatus:
        self._begin()
        try:
            await self._record(c.TriageRecord(item_id=self.inp.item_id, action="route", key=self._key("route"), actor=req.actor.sub,
                                              role=self._role(req.actor), department=req.department,
                                              reason=req.reason or None))
            self.department = req.department
            return await self._set("routed", department=req.department)
        finally:
            self.busy = False

    @route.validator
    def _validate_route(self, req: c.RouteLetter) -> None:
        self._check_actor(req.actor, department_clerks=False)  # re-routing elsewhere is the mailroom's call
        self._check_open()
        if not req.department:
            raise ApplicationError("a department is required", type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="new_case")
    async def new_case(self, req: c.NewCaseFromLetter) -> c.MailStatus:
        self._begin()
        try:
            return await self._new_case(req.service_key, actor=req.actor.sub, role=self._role(req.actor),
                                        method="mailroom")
        finally:
            self.busy = False

    @new_case.validator
    def _validate_new_case(self, req: c.NewCaseFromLetter) -> None:
        self._check_actor(req.actor)
        self._check_open()
        if not req.service_key:
            raise ApplicationError("a service_key is required", type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="split")
    async def split(self, req: c.SplitLetter) -> c.MailStatus:
        self._begin()
        try:
            await self._record(c.TriageRecord(item_id=self.inp.item_id, action="split", key=self._key("split"), actor=req.actor.sub,
                                              role=self._role(req.actor), reason=req.reason or None,
                                              details={"parts": ";".join(f"{a}-{b}" for a, b in req.parts)}))
            return await self._split(req.parts, actor=req.actor.sub, reason=req.reason or "Von der Poststelle getrennt")
        finally:
            self.busy = False

    @split.validator
    def _validate_split(self, req: c.SplitLetter) -> None:
        self._check_actor(req.actor)
        self._check_open()
        problem = split_problem(req.parts, self.pages)
        if problem:
            raise ApplicationError(problem, type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="merge")
    async def merge(self, req: c.MergeLetters) -> c.MailStatus:
        self._begin()
        try:
            self.pages = await self._act(c.ACT_MERGE_MAIL, c.MergeParams(
                item_id=self.inp.item_id, others=req.item_ids, actor=req.actor.sub), int)
            for other in req.item_ids:
                try:
                    await workflow.get_external_workflow_handle(other).signal(
                        "merged_into", c.MergedInto(item_id=self.inp.item_id, actor=req.actor.sub))
                except ApplicationError:
                    workflow.logger.info("merged letter's workflow no longer running")
            await self._record(c.TriageRecord(item_id=self.inp.item_id, action="merge", key=self._key("merge"), actor=req.actor.sub,
                                              role=self._role(req.actor), reason=req.reason or None,
                                              details={"merged": ",".join(req.item_ids)}))
            return self.state
        finally:
            self.busy = False

    @merge.validator
    def _validate_merge(self, req: c.MergeLetters) -> None:
        self._check_actor(req.actor, department_clerks=False)
        self._check_open()
        if not req.item_ids or self.inp.item_id in req.item_ids or len(set(req.item_ids)) != len(req.item_ids):
            raise ApplicationError("name the other letters to merge into this one (not this one, no repeats)",
                                   type=c.ERR_INVALID, non_retryable=True)

    @workflow.update(name="close")
    async def close(self, req: c.CloseLetter) -> c.MailStatus:
        self._begin()
        try:
            await self._record(c.TriageRecord(item_id=self.inp.item_id, action="close", key=self._key("close"), actor=req.actor.sub,
                                              role=self._role(req.actor), reason=req.reason))
            return await self._set("closed", reason_code="no_action", reason=req.reason)
        finally:
            self.busy = False

    @close.validator
    def _validate_close(self, req: c.CloseLetter) -> None:
        self._check_actor(req.actor)
        self._check_open()
        if not req.reason.strip():
            raise ApplicationError("a reason is required", type=c.ERR_INVALID, non_retryable=True)

    @workflow.signal(name="merged_into")
    async def merged_into(self, ev: c.MergedInto) -> None:
        """Another letter took this one's pages (the merge activity already checked it was in triage)."""
        if self.state.status in OPEN and not self.busy:
            self.state.status = "merged"  # stop accepting actions before the activity runs
            await self._set("merged", reason=f"zusammengeführt mit {ev.item_id}")

    @workflow.query(name="status")
    def status(self) -> c.MailStatus:
        return self.state

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _role(actor: c.Actor) -> str:
        for r in ("mailroom", "admin", "clerk"):
            if r in actor.roles:
                return r
        return actor.roles[0] if actor.roles else "unknown"

    async def _set(self, status: str, *, reason_code: str | None = None, reason: str | None = None,
                   case_id: str | None = None, department: str | None = None,
                   match_method: str | None = None) -> c.MailStatus:
        self.state.status, self.state.reason_code, self.state.reason = status, reason_code, reason
        if case_id:
            self.state.case_id = case_id
        if department:
            self.state.department = department
        await self._act(c.ACT_MAIL_STATUS, c.MailStatusParams(item_id=self.inp.item_id, status=status,
                                                              reason_code=reason_code, reason=reason,
                                                              case_id=case_id, department=department,
                                                              match_method=match_method), None)
        return self.state

    async def _act(self, name: str, arg: object, result_type: type | None):  # type: ignore[no-untyped-def]
        args = arg if isinstance(arg, list) else [arg]
        return await workflow.execute_activity(name, args=args, result_type=result_type,
                                               start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY)


def split_problem(parts: list[list[int]], pages: int) -> str | None:
    """Why these page ranges cannot split a letter of ``pages`` pages (None: they can)."""
    if len(parts) < 2:
        return "a split needs at least two parts"
    seen: set[int] = set()
    for part in parts:
        if len(part) != 2 or part[0] > part[1]:
            return f"each part is [first page, last page]; got {part}"
        first, last = part
        if first < 1 or last > pages:
            return f"pages {first}-{last} are outside the letter's {pages} pages"
        rng = set(range(first, last + 1))
        if rng & seen:
            return f"pages {first}-{last} overlap another part"
        seen |= rng
    return None
