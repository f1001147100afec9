"""The service catalog (Leistungskatalog): loaded from YAML, validated, served read-only.

`ServiceEntry` (intake/service.py) is a plain dataclass so that a case workflow can snapshot the entry it
started with (it travels in the workflow input; no personal data in it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eakte.aktenplan import Aktenplan
from intake.service import ClassificationRules, FeeExemption, ServiceEntry


@dataclass(frozen=True)
class Department:
    key: str
    name: str


@dataclass(frozen=True)
class Catalog:
    authority_name: str
    authority_address: tuple[str, ...]
    departments: dict[str, Department]
    services: dict[str, ServiceEntry]
    aktenplan: Aktenplan | None = None

    def service(self, key: str) -> ServiceEntry | None:
        return self.services.get(key)


def _fold(word: str) -> str:
    return word.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")


class _ClassificationModel(BaseModel):
    """Validated `classification:` block of a service: regexes must compile, words are folded like terms."""

    model_config = ConfigDict(extra="forbid")
    regex: list[str] = []
    all: list[list[str]] = []
    any: list[str] = []
    fuzzy: list[str] = []

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        out = []
        for pattern in v:
            if not pattern or len(pattern) > 200:
                raise ValueError(f"classification regex must have 1 to 200 characters: {pattern!r}")
            folded = _fold(pattern)
            try:
                re.compile(folded, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"classification regex {pattern!r} does not compile: {exc}") from exc
            out.append(folded)
        return out

    @field_validator("any", "fuzzy")
    @classmethod
    def _words(cls, v: list[str]) -> list[str]:
        for w in v:
            if not re.fullmatch(r"[a-zäöüß]{3,}", w.lower()):
                raise ValueError(f"classification word {w!r} must be a single word of at least 3 letters")
        return [_fold(w) for w in v]

    @field_validator("all")
    @classmethod
    def _groups(cls, v: list[list[str]]) -> list[list[str]]:
        for group in v:
            if len(group) < 2 or not all(re.fullmatch(r"[a-zäöüß]{3,}", w.lower()) for w in group):
                raise ValueError(f"classification `all` group {group!r} needs at least two single words")
        return [[_fold(w) for w in group] for group in v]


class _FeeExemptionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,39}$")
    values: list[str] = Field(min_length=1)
    reason: str = Field(min_length=1, max_length=300)


DISPATCH_CHANNELS = ("portal", "email", "post", "webhook")


class _ServiceModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=r"^\d{14}$")
    name: str = Field(min_length=1)
    department: str
    file_plan: str = Field(pattern=r"^\d{2}\.\d{2}$")
    required_documents: list[str] = []
    fee_cents: int = Field(ge=0)
    decision_required: bool
    certificate: bool
    processing_days: int = Field(gt=0)
    payment_days: int = Field(gt=0)
    keywords: list[str] = []
    retention_years: int | None = Field(default=None, gt=0)  # None: the Aktenplan's default for file_plan
    classification: _ClassificationModel = _ClassificationModel()
    four_eyes: bool = False
    fee_per_item_cents: int = Field(default=0, ge=0)
    fee_item_field: str = Field(default="", pattern=r"^([a-z_][a-z0-9_]{0,39})?$")
    fee_max_items: int = Field(default=10, gt=0, le=1000)
    fee_exemptions: list[_FeeExemptionModel] = []
    payment_timing: str = Field(default="after_decision", pattern="^(after_decision|before_decision)$")
    payment_reminder_days: int = Field(default=3, ge=0)
    deadline_reminder_days: int = Field(default=2, ge=0)
    documents_days: int = Field(default=14, gt=0)
    dispatch_channels: list[str] = Field(default=["portal"], min_length=1)

    @field_validator("dispatch_channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        unknown = [ch for ch in v if ch not in DISPATCH_CHANNELS]
        if unknown:
            raise ValueError(f"unknown dispatch channel(s) {unknown}; known: {', '.join(DISPATCH_CHANNELS)}")
        return v

    @model_validator(mode="after")
    def _fee_rules(self) -> _ServiceModel:
        if self.fee_per_item_cents and not self.fee_item_field:
            raise ValueError(f"service {self.key}: fee_per_item_cents needs fee_item_field")
        if self.payment_timing == "before_decision" and not (self.fee_cents or self.fee_per_item_cents):
            raise ValueError(f"service {self.key}: payment_timing before_decision needs a fee")
        return self

    @field_validator("keywords")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [k.lower() for k in v]


class _CatalogModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    authority: dict[str, object]
    departments: dict[str, dict[str, str]]
    services: list[_ServiceModel]

    @model_validator(mode="after")
    def _consistent(self) -> _CatalogModel:
        keys = [s.key for s in self.services]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            raise ValueError(f"duplicate service keys: {sorted(dupes)}")
        for s in self.services:
            if s.department not in self.departments:
                raise ValueError(f"service {s.key} names unknown department {s.department!r}")
        return self


DEFAULT_RETENTION_YEARS = 10


class CatalogError(ValueError):
    pass


def _retention_years(s: _ServiceModel, aktenplan: Aktenplan | None) -> int:
    """The service's own retention period wins; otherwise the file plan's default (10 years without a plan)."""
    if s.retention_years is not None:
        return s.retention_years
    entry = aktenplan.entry(s.file_plan) if aktenplan is not None else None
    return entry.retention_years if entry is not None else DEFAULT_RETENTION_YEARS


def load_catalog(path: Path, aktenplan: Aktenplan | None = None) -> Catalog:
    """Load and validate the catalog; with an Aktenplan, every service's file-plan number must be in it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        model = _CatalogModel.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise CatalogError(f"service catalog {path} is invalid: {exc}") from exc
    if aktenplan is not None:
        for s in model.services:
            entry = aktenplan.entry(s.file_plan)
            if entry is None or entry.retired:
                raise CatalogError(f"service catalog {path} is invalid: service {s.key} ({s.name}) is filed under "
                                   f"{s.file_plan}, which is {'retired in' if entry else 'not in'} the Aktenplan")
    authority = model.authority
    return Catalog(
        authority_name=str(authority.get("name", "")),
        authority_address=tuple(str(x) for x in authority.get("address_lines", []) or []),  # type: ignore[union-attr]
        departments={k: Department(key=k, name=v.get("name", k)) for k, v in model.departments.items()},
        services={s.key: ServiceEntry(**{**s.model_dump(exclude={"classification", "fee_exemptions"}),
                                         "retention_years": _retention_years(s, aktenplan)},
                                      department_name=model.departments[s.department].get("name", s.department),
                                      classification=ClassificationRules(**s.classification.model_dump()),
                                      fee_exemptions=[FeeExemption(**x.model_dump()) for x in s.fee_exemptions])
                  for s in model.services},
        aktenplan=aktenplan,
    )
