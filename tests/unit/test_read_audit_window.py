"""ReadAuditWindow: one audit event per caller, record and window; marks only after commit."""

from __future__ import annotations

from eakte.audit import ReadAuditWindow


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_view_is_due_again_only_after_the_window() -> None:
    clock = Clock()
    w = ReadAuditWindow(300, clock=clock)
    key = ("portal-a", "case.read", "case-1")
    assert w.due(key)
    assert w.due(key)  # not marked yet (the event's transaction has not committed): still due
    w.mark(key)
    assert not w.due(key)
    assert w.due(("portal-b", "case.read", "case-1")) and w.due(("portal-a", "case.read", "case-2"))
    clock.t += 299.9
    assert not w.due(key)
    clock.t += 0.1
    assert w.due(key)
    assert w.details() == {"covers_repeated_reads_for_s": 300}


def test_window_zero_audits_every_view() -> None:
    w = ReadAuditWindow(0)
    key = ("portal-a", "case.read", "case-1")
    w.mark(key)
    assert w.due(key) and w.details() == {}


def test_memory_is_bounded_and_fresh_entries_survive_a_trim() -> None:
    clock = Clock()
    w = ReadAuditWindow(300, max_entries=100, clock=clock)
    for i in range(100):
        w.mark(("a", "case.read", f"old-{i}"))
        clock.t += 1
    clock.t += 300  # the first entries have expired
    for i in range(60):
        w.mark(("a", "case.read", f"new-{i}"))
    assert len(w._seen) <= 100
    assert all(not w.due(("a", "case.read", f"new-{i}")) for i in range(60))
