"""Fuzz the whole API from its own OpenAPI schema (schemathesis), with a bounded budget.

For every operation in ``/openapi.json`` and every role, schemathesis generates requests
(valid ones, and invalid ones for the admin) with a fixed seed, sends them to the real
API of the ``stack`` and checks each response:

* no server error (5xx) — except a 503 with Retry-After, which is the declared answer to
  an unavailable backing service;
* the status code is one the schema declares for the operation;
* the Content-Type is one the schema declares for that status;
* the body matches the declared schema (problem+json for every 4xx).

Runs are derandomized (the same requests every time) and bounded by ``ROLES``' example
counts. No operation is excluded. The sandbox provider's ``callback_url`` is steered to the
stack's own webhook (``_steer``) so the server never calls generated hosts. Invalid-input
(negative) generation is left out only where no input can be invalid (no body, no query,
only unconstrained path strings); those are listed in the printed summary. Admin and clerk
also fuzz every ``{case_id}`` operation against a real case, past the "unknown id" 404.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.openapi  # noqa: F401 - imported now, not lazily while worker threads compile
import schemathesis.specs.openapi.schemas  # noqa: F401
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.conftest import Stack
from tests.integration.helpers import MELDE, application

pytestmark = pytest.mark.integration

CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = [not_a_server_error, *CONFORMANCE]

# role → (token sub, role, departments, examples per operation and generation mode)
ROLES: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "admin": ("fuzz-admin", "admin", (), 4),
    "clerk": ("fuzz-clerk", "clerk", ("buergerbuero",), 2),
    "integrator": ("fuzz-portal", "integrator", (), 2),
    "mailroom": ("fuzz-post", "mailroom", (), 2),
    "archivist": ("fuzz-archiv", "archivist", (), 2),
}


@dataclass
class Findings:
    requests: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # "METHOD /path [mode]" → its failures
    unsatisfiable: list[str] = field(default_factory=list)


def _steer(stack: Stack, case: Any) -> None:
    """Keep generated requests inside the stack under test.

    * ``POST /sandbox-pay/api/payments``: the sandbox provider calls the (generated)
      ``callback_url`` back over HTTP with retries; point it at the stack's own webhook so
      the fuzzer does not make the server call arbitrary hosts.
    """
    if case.operation.path == "/sandbox-pay/api/payments" and isinstance(case.body, dict):
        case.body["callback_url"] = f"{stack.base_url}/v1/payments/webhook"


def _fuzz_operation(stack: Stack, operation: Any, headers: dict[str, str], mode: GenerationMode,
                    examples: int, findings: Findings, path_parameters: dict[str, str] | None = None) -> None:
    label = f"{operation.method.upper()} {operation.path} [{mode.value}{', real ids' if path_parameters else ''}]"

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        _steer(stack, case)
        response = case.call(base_url=stack.base_url, headers=headers, timeout=30)
        findings.requests += 1
        findings.statuses.setdefault(label, set()).add(response.status_code)
        busy = response.status_code == 503 and response.headers.get("retry-after")
        # 503 with Retry-After is the declared answer to a busy backing service, not a crash
        case.validate_response(response, checks=CONFORMANCE if busy else CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:
        # negative mode only: the operation has no input that could be invalid (no
        # parameters, or only unconstrained strings), so there is nothing to send
        assert mode is GenerationMode.NEGATIVE, label
        findings.unsatisfiable.append(label)
    except (Exception, FailureGroup) as exc:  # noqa: BLE001 - collect every operation's failures, report all at once
        findings.failures[label] = _summary(exc)


def _summary(exc: BaseException) -> str:
    parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    return "\n".join(f"  {type(e).__name__}: {str(e).strip()[:600]}" for e in parts)


def _real_case(stack: Stack) -> dict[str, str]:
    """A real Meldebescheinigung case (of the clerk's department), so the fuzzer also reaches
    past the "unknown id" 404 into the handlers that act on an existing case."""
    portal = {**stack.token("fuzz-portal", "integrator"), "Idempotency-Key": uuid.uuid4().hex}
    r = httpx.post(f"{stack.base_url}/v1/cases", json=application(MELDE), headers=portal, timeout=30)
    assert r.status_code == 201, r.text
    return {"case_id": r.json()["case_id"]}


def _fuzz_role(stack: Stack, role: str) -> Findings:
    sub, system_role, departments, examples = ROLES[role]
    headers = stack.token(sub, system_role, *departments)
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    findings = Findings()
    real_ids = _real_case(stack) if role in ("admin", "clerk") else None
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if role == "admin" else [GenerationMode.POSITIVE]
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:
            if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
                # only unconstrained path strings (or nothing): no input can be invalid, and
                # hypothesis would spend seconds proving that
                findings.unsatisfiable.append(f"{operation.method.upper()} {operation.path} [negative]")
                continue
            _fuzz_operation(stack, operation, headers, mode, examples, findings)
        if real_ids and "{case_id}" in operation.path:
            _fuzz_operation(stack, operation, headers, GenerationMode.POSITIVE, examples, findings,
                            path_parameters=real_ids)
    return findings


@pytest.mark.parametrize("role", list(ROLES))
def test_every_operation_answers_within_its_schema(stack: Stack, role: str) -> None:
    started = time.monotonic()
    findings = _fuzz_role(stack, role)
    elapsed = time.monotonic() - started
    print(f"\n[{stack.backend}] fuzz as {role}: {findings.requests} requests over "
          f"{len(findings.statuses)} operation/mode pairs in {elapsed:.1f} s; no invalid input exists for "
          f"{len(findings.unsatisfiable)}")
    assert findings.requests > 60, "the fuzzer barely ran"
    report = "\n\n".join(f"{label}:\n{msg}" for label, msg in sorted(findings.failures.items()))
    assert not findings.failures, f"{len(findings.failures)} operation(s) answered outside the schema:\n\n{report}"
