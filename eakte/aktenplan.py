"""The Aktenplan (file plan): numbered subject groups every Akte is filed under.

Loaded from YAML like the service catalog, validated, read-only. Its number is the first
part of every Aktenzeichen; its retention period and archival appraisal (A/B/V) drive the
Aussonderung (eakte/retention.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PATH = Path(__file__).resolve().parent / "aktenplan.yaml"
UNASSIGNED = "00.00"  # letters and requests that arrive without a service
APPRAISALS = {"A": "archivwürdig", "B": "bewerten", "V": "vernichten"}


@dataclass(frozen=True)
class PlanEntry:
    number: str
    title: str
    group: str
    group_title: str
    retention_years: int
    appraisal: str
    legal_basis: str
    retired: bool = False


@dataclass(frozen=True)
class Aktenplan:
    groups: dict[str, str]
    entries: dict[str, PlanEntry]

    def entry(self, number: str) -> PlanEntry | None:
        return self.entries.get(number)

    def require(self, number: str) -> PlanEntry:
        e = self.entries.get(number)
        if e is None:
            raise AktenplanError(f"file-plan number {number!r} is not in the Aktenplan")
        if e.retired:
            raise AktenplanError(f"file-plan number {number!r} is retired; new Akten cannot be filed under it")
        return e


class AktenplanError(ValueError):
    pass


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(pattern=r"^\d{2}\.\d{2}$")
    title: str = Field(min_length=1, max_length=200)
    retention_years: int = Field(gt=0, le=200)
    appraisal: str = Field(pattern=r"^[ABV]$")
    legal_basis: str = ""
    retired: bool = False


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    groups: dict[str, dict[str, str]]
    entries: list[_Entry]

    @model_validator(mode="after")
    def _consistent(self) -> _Plan:
        numbers = [e.number for e in self.entries]
        dupes = sorted({n for n in numbers if numbers.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate file-plan numbers: {dupes}")
        for e in self.entries:
            if e.number[:2] not in self.groups:
                raise ValueError(f"entry {e.number} belongs to no main group {e.number[:2]!r}")
        if UNASSIGNED not in numbers:
            raise ValueError(f"the Aktenplan needs the entry {UNASSIGNED} for unassigned mail")
        return self


def load_aktenplan(path: Path = DEFAULT_PATH) -> Aktenplan:
    try:
        model = _Plan.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise AktenplanError(f"Aktenplan {path} is invalid: {exc}") from exc
    groups = {k: str(v.get("title", k)) for k, v in model.groups.items()}
    return Aktenplan(groups=groups, entries={
        e.number: PlanEntry(number=e.number, title=e.title, group=e.number[:2], group_title=groups[e.number[:2]],
                            retention_years=e.retention_years, appraisal=e.appraisal, legal_basis=e.legal_basis,
                            retired=e.retired)
        for e in model.entries})
