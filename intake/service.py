"""The catalog entry as a plain dataclass: light enough to travel in workflow inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
