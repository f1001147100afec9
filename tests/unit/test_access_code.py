"""The citizen's access code, the status page's guessing throttle, and the team-lead role."""

from __future__ import annotations

import re

import pytest

from api.routers.status import FailureThrottle
from eakte import inbox
from eakte.access import Principal, is_teamlead_of
from eakte.citizen_status import _milestone
from eakte.inbox import ACCESS_ALPHABET, access_code, access_code_matches, normalise_access_code
from eakte.render import verification_code
from workflows import contracts as c

SECRET = "a-test-secret-that-is-long-enough"


def test_the_code_is_ten_unambiguous_symbols_in_two_groups() -> None:
    code = access_code(SECRET, "case-0123")
    assert re.fullmatch(r"[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{5}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{5}", code), code
    assert not set("01OIL") & set(ACCESS_ALPHABET)


def test_the_code_is_deterministic_so_a_repeated_submission_gets_the_same_one() -> None:
    assert access_code(SECRET, "case-0123") == access_code(SECRET, "case-0123")


def test_codes_differ_per_case_and_per_secret_and_spread_over_the_alphabet() -> None:
    codes = {access_code(SECRET, f"case-{i}") for i in range(2000)}
    assert len(codes) == 2000
    assert access_code("another-secret", "case-0") != access_code(SECRET, "case-0")
    used = {ch for code in codes for ch in code.replace("-", "")}
    assert used == set(ACCESS_ALPHABET)


def test_the_code_is_not_the_certificate_verification_code_under_the_same_secret() -> None:
    case_id = "case-0123"
    plain = access_code(SECRET, case_id).replace("-", "")
    for subject in (case_id, f"{case_id}:issue:certificate", f"{case_id}:issue:rejection"):
        assert not verification_code(SECRET.encode(), subject).replace("-", "").startswith(plain[:8])


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        access_code("", "case-1")


def test_typed_codes_match_regardless_of_case_spaces_and_dashes() -> None:
    code = access_code(SECRET, "case-7")
    for typed in (code, code.lower(), code.replace("-", ""), code.replace("-", " "), f" {code} "):
        assert normalise_access_code(typed) == code
        assert access_code_matches(SECRET, "case-7", typed)
    assert not access_code_matches(SECRET, "case-7", "")
    assert not access_code_matches(SECRET, "case-8", code)
    assert not access_code_matches(SECRET, "case-7", code[:-1] + ("2" if code[-1] != "2" else "3"))
    assert not access_code_matches(SECRET, "case-7", code + "X" * 200)


def test_inbox_status_values_are_the_workflows_ones() -> None:
    assert inbox.AWAITING_DECISION == c.AWAITING_DECISION
    assert inbox.AWAITING_COSIGN == c.AWAITING_COSIGN
    assert inbox.AWAITING_DOCUMENTS == c.AWAITING_DOCUMENTS
    assert set(inbox.FINAL_STATUSES) == set(c.FINAL_STATUSES)


# --------------------------------------------------------------------------- throttle


def test_the_throttle_blocks_after_the_limit_and_releases_after_the_window() -> None:
    t = FailureThrottle(limit=3, window_s=600)
    for now in (0.0, 10.0, 20.0):
        assert t.retry_after("k", now) == 0
        t.fail("k", now)
    assert t.retry_after("k", 30.0) == 571  # until the first failure leaves the window
    assert t.retry_after("other", 30.0) == 0
    assert t.retry_after("k", 600.5) == 0  # the first failure is out of the window
    t.fail("k", 601.0)
    assert t.retry_after("k", 602.0) > 0
    assert t.retry_after("k", 1300.0) == 0


def test_the_throttle_keeps_bounded_memory() -> None:
    t = FailureThrottle(limit=1, window_s=600, max_keys=100)
    for i in range(1000):
        t.fail(f"k{i}", float(i) / 1000)
    assert len(t._hits) == 100
    assert t.retry_after("k999", 1.0) > 0 and t.retry_after("k0", 1.0) == 0


# --------------------------------------------------------------------------- milestones and roles


def test_a_report_reads_eingegangen_in_bearbeitung_erledigt() -> None:
    steps = [("intake", "received"), ("routing", "received"), ("archive", "completed")]
    assert [_milestone(s, st, report=True, decision=None) for s, st in steps] == [
        ("received", "Meldung eingegangen"), ("in_progress", "In Bearbeitung"), ("closed", "Erledigt")]
    assert _milestone("archive", "completed", report=False, decision="approved") == ("closed", "Abgeschlossen")


def test_internal_steps_are_no_milestones() -> None:
    assert _milestone("routing", "triage", report=False, decision=None) is None
    assert _milestone("escalation", "", report=False, decision=None) is None
    assert _milestone("decision", "awaiting_cosign", report=False, decision=None) == ("in_progress", "In Bearbeitung")


def test_a_teamlead_is_a_clerk_of_their_departments() -> None:
    lead = Principal(sub="lead-1", roles=("teamlead",), departments=("buergerbuero",))
    assert lead.has("clerk") and lead.primary_role == "teamlead" and lead.named_roles == ()
    assert is_teamlead_of(lead, "buergerbuero") and not is_teamlead_of(lead, "standesamt")
    clerk = Principal(sub="c", roles=("clerk",), departments=("buergerbuero",))
    assert not is_teamlead_of(clerk, "buergerbuero") and clerk.primary_role == "clerk"
