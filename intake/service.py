"""The catalog entry as a plain dataclass: light enough to travel in workflow inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ClassificationRules:
    """How a scanned letter is recognised as being about this service (intake/classify.py; catalog.yaml).

    ``regex``: patterns searched case-insensitively in the letter's folded text (umlauts → ae/oe/ue, ß → ss,
    whitespace collapsed, words hyphenated across lines joined); ``all``: groups of words that must all occur;
    ``any``: words each of which counts; ``fuzzy``: words also recognised when OCR garbled a letter or two.
    """

    regex: list[str] = field(default_factory=list)
    all: list[list[str]] = field(default_factory=list)
    any: list[str] = field(default_factory=list)
    fuzzy: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeeExemption:
    """No fee when the form field ``field`` has one of ``values`` (case-insensitive); ``reason`` is recorded."""

    field: str
    values: list[str]
    reason: str


@dataclass(frozen=True)
class ServiceEntry:
    key: str
    name: str
    department: str
    file_plan: str
    required_documents: list[str] = field(default_factory=list)
    fee_cents: int = 0
    decision_required: bool = True
    certificate: bool = True
    processing_days: int = 14
    payment_days: int = 14
    keywords: list[str] = field(default_factory=list)
    retention_years: int = 10
    department_name: str = ""
    classification: ClassificationRules = field(default_factory=ClassificationRules)
    # -- casework (issue 5); defaults keep older workflow inputs decodable --------------------
    #: a second clerk, never the first, must co-sign the decision (Vier-Augen-Prinzip)
    four_eyes: bool = False
    #: per-item fee on top of fee_cents: the form field ``fee_item_field`` holds the number of items
    fee_per_item_cents: int = 0
    fee_item_field: str = ""
    fee_max_items: int = 10
    fee_exemptions: list[FeeExemption] = field(default_factory=list)
    #: "after_decision" (pay for an approved case) or "before_decision" (Vorkasse: pay first, refund on rejection)
    payment_timing: str = "after_decision"
    #: reminders this many days before the payment / processing deadline
    payment_reminder_days: int = 3
    deadline_reminder_days: int = 2
    #: default time the citizen gets to send missing documents (Nachforderung)
    documents_days: int = 14
    #: dispatch channels this service allows, the default first (portal | email | post | webhook)
    dispatch_channels: list[str] = field(default_factory=lambda: ["portal"])

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
