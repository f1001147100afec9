"""Fee rules (Gebührenregeln) from the catalog: fixed, per item, exempt with reason.

Pure and deterministic: the case workflow computes the fee with it (so it is imported
through the sandbox), the API shows the same figure before a case starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from intake.service import ServiceEntry


@dataclass(frozen=True)
class FeeAssessment:
    amount_cents: int
    items: int = 1
    #: set when an exemption applies (amount_cents is then 0)
    exempt_reason: str | None = None
    #: human-readable lines for the payment request and the notice ("Grundgebühr 12,00 EUR", ...)
    lines: list[str] = field(default_factory=list)


def euro(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d} EUR"


def _items(service: ServiceEntry, form: dict[str, str]) -> int:
    if not service.fee_item_field:
        return 1
    raw = str(form.get(service.fee_item_field, "1")).strip()
    try:
        n = int(raw)
    except ValueError:
        return 1
    return max(1, min(n, service.fee_max_items))


def assess(service: ServiceEntry, form: dict[str, str]) -> FeeAssessment:
    """The fee of one application of ``service`` with ``form``."""
    for ex in service.fee_exemptions:
        given = str(form.get(ex.field, "")).strip().casefold()
        if given and given in {v.casefold() for v in ex.values}:
            return FeeAssessment(amount_cents=0, exempt_reason=ex.reason, lines=[f"Gebührenbefreiung: {ex.reason}"])
    items = _items(service, form)
    amount = service.fee_cents + service.fee_per_item_cents * (items - 1)
    lines = [f"Gebühr {euro(service.fee_cents)}"] if service.fee_cents else []
    if items > 1 and service.fee_per_item_cents:
        lines.append(f"{items - 1} weitere Ausfertigung(en) je {euro(service.fee_per_item_cents)}")
    return FeeAssessment(amount_cents=amount, items=items, lines=lines)
