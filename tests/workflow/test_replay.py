"""Recorded histories of real runs are replayed against the current workflow code: a change
that would break running cases (non-determinism) fails the build. Record them with
tests/histories/record_scenarios.py (every scenario below) or tests/histories/record.py (one
workflow of a running stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from aktenlauf.settings import DEV_PAYLOAD_KEYS, Settings
from aktenlauf.temporal import data_converter
from workflows.case import CaseWorkflow
from workflows.disposal import DisposalWorkflow
from workflows.mailroom import MailItemWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))
WORKFLOWS = {"case": CaseWorkflow, "mail": MailItemWorkflow, "disposal": DisposalWorkflow}
# every path a running workflow can be on when the code changes (file stem: <type>_<scenario>)
SCENARIOS = {
    "case_happy_path", "case_rejected", "case_payment_expired", "case_triage_no_service",
    "case_triage_then_routed", "mail_filed", "mail_triage", "mail_triage_then_assigned", "mail_failed_invalid",
    # mailroom v2: recognition, classification, separator sheets, triage actions
    "mail_v2_filed_applicant_ref", "mail_v2_classified_new_case", "mail_v2_split_stack", "mail_v2_split_part",
    "mail_v2_routed_closed", "mail_v2_merge_new_case", "mail_v2_merged",
    "disposal_destroyed", "disposal_nothing_due",
    # casework v2: four eyes, Nachforderung, payment declined, refunds, withdrawal, forward, cancel, deadlines
    "case_v2_happy_path", "case_v2_four_eyes_refund", "case_v2_nachforderung_declined", "case_v2_withdrawn",
    "case_v2_forwarded_cancelled", "case_v2_deadline_lapsed",
    # progress recorded alongside the next activity (patch progress-alongside)
    "case_alongside_happy_path", "case_alongside_rejected",
}


def _workflow_type(path: Path) -> str:
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return str(started["workflowType"]["name"])


def test_every_scenario_of_every_workflow_type_has_a_recorded_history() -> None:
    assert SCENARIOS <= {p.stem for p in HISTORIES}
    assert {_workflow_type(p) for p in HISTORIES} == {w.__temporal_workflow_definition.name  # type: ignore[attr-defined]
                                                      for w in WORKFLOWS.values()}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    workflow = WORKFLOWS[path.stem.split("_")[0]]
    assert _workflow_type(path) == workflow.__temporal_workflow_definition.name  # type: ignore[attr-defined]
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[workflow],
                        data_converter=data_converter(Settings(_env_file=None, payload_keys=DEV_PAYLOAD_KEYS)))  # type: ignore[call-arg]
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
