"""`aktenlauf eakte search|audit|aktenplan`: the operator's view of the eAkte, audited like the API's."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aktenlauf import cli
from eakte.models import AuditEvent
from tests.integration.helpers import MELDE, application, wait_for_case

@pytest.fixture
def operator_env(stack, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    s = stack.settings
    for name, value in (("ENVIRONMENT", "test"), ("DATABASE_URL", s.database_url), ("S3_ENDPOINT", s.s3_endpoint),
                        ("S3_ACCESS_KEY", s.s3_access_key), ("S3_SECRET_KEY", s.s3_secret_key),
                        ("S3_BUCKET", s.s3_bucket)):
        monkeypatch.setenv(name, value)


async def test_operators_search_and_read_the_audit_trail_from_the_cli(stack, operator_env, capsys) -> None:
    portal = stack.token("portal-cli", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE, name="Clio Kommandozeile"), headers=portal)
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
    capsys.readouterr()
    assert cli.main(["eakte", "search", "Meldebescheinigung", "--actor", "ops-test", "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert "hits" in out and "32.10-" in out
    assert cli.main(["eakte", "audit", "--case", case_id, "--actor", "ops-test", "--reason", "Prüfung"]) == 0
    out = capsys.readouterr().out
    assert "case.create" in out and case_id in out
    assert cli.main(["eakte", "search", "\"\"", "--actor", "ops-test"]) == 2  # nothing searchable
    assert cli.main(["eakte", "aktenplan"]) == 0
    assert "32.10  Meldewesen" in capsys.readouterr().out
    with stack.sessions()() as s:
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.actor == "cli:ops-test")))
    assert {"document.search", "audit.read"} <= actions
