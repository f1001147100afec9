"""Finding our Aktenzeichen in OCR text."""

from __future__ import annotations

import pytest

from intake.reference import find_references


@pytest.mark.parametrize("text", [
    "Ihr Zeichen: 32.10-2026-000042 vom 3. März",
    "Az. 32.1O - 2026 - 00OO42",           # O read for 0
    "Aktenzeichen 32,10-2026-000042",        # comma for the dot
    "32.10–2026–000042",                     # en dashes
    "Bezug: 32.10-2026-\n000042",            # line broken inside
    "AZ 32.10-2O26-OOOO4Z",                  # garbled year and Z for 2
])
def test_garbled_and_broken_references_are_normalised(text: str) -> None:
    assert find_references(text) == ["32.10-2026-000042"]


def test_phone_numbers_and_longer_digit_runs_are_not_references() -> None:
    assert find_references("Tel. 0171-2026-123456, Kto 3210-2026-000042, 32.10-2026-0000421") == []


def test_several_references_are_returned_once_each_in_order() -> None:
    text = "32.10-2026-000001 und 66.20-2025-000007, nochmals 32.10-2026-000001"
    assert find_references(text) == ["32.10-2026-000001", "66.20-2025-000007"]
