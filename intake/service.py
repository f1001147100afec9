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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
