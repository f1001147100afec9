"""Recorded histories of real runs are replayed against the current workflow code: a change
that would break running cases (non-determinism) fails the build. Add histories with
tests/histories/record.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from aktenlauf.settings import DEV_PAYLOAD_KEYS, Settings
from aktenlauf.temporal import data_converter
from workflows.case import CaseWorkflow
from workflows.mailroom import MailItemWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_there_are_recorded_histories_of_both_workflow_types() -> None:
    names = {p.stem.split("_")[0] for p in HISTORIES}
    assert {"case", "mail"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_without_nondeterminism(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[CaseWorkflow, MailItemWorkflow],
                        data_converter=data_converter(Settings(_env_file=None, payload_keys=DEV_PAYLOAD_KEYS)))  # type: ignore[call-arg]
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
