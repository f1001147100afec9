"""Retention rules: where the retention period comes from, and how a disposal rule reads."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from eakte.aktenplan import load_aktenplan
from eakte.models import Akte
from eakte.retention import PROPOSAL, offer_of, rule_text
from intake.catalog import load_catalog

CATALOG = Path(__file__).resolve().parents[2] / "intake" / "catalog.yaml"


def test_a_service_without_its_own_retention_takes_the_file_plans(tmp_path: Path) -> None:
    raw = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    for s in raw["services"]:
        if s["key"] == "99006003001000":  # Geburtsurkunde, filed under 34.20 Geburten (110 years)
            del s["retention_years"]
        if s["key"] == "99115005012000":  # Meldebescheinigung keeps its own period
            s["retention_years"] = 7
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    catalog = load_catalog(path, load_aktenplan())
    assert catalog.services["99006003001000"].retention_years == 110
    assert catalog.services["99115005012000"].retention_years == 7


def test_the_disposal_rule_names_file_plan_period_legal_basis_and_date() -> None:
    plan = load_aktenplan()
    akte = Akte(id="a1", aktenzeichen="32.10-2026-000001", file_plan="32.10", title="Meldebescheinigung",
                retention_years=5, retention_until=dt.date(2031, 3, 1))
    assert rule_text(akte, plan.entry("32.10")) == (
        "Aktenplan 32.10 Meldewesen, 5 Jahre nach Abschluss (§ 14 BMG), Frist bis 2031-03-01")
    assert offer_of(akte, plan).proposed_action == "destroy"


def test_the_appraisal_proposes_the_action() -> None:
    assert PROPOSAL == {"A": "archive", "V": "destroy", "B": "appraise"}
    plan = load_aktenplan()
    birth = Akte(id="a2", aktenzeichen="34.20-2026-000001", file_plan="34.20", title="Geburt", retention_years=110,
                 retention_until=dt.date(2136, 1, 1))
    assert offer_of(birth, plan).proposed_action == "archive"
