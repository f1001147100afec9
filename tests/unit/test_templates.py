"""Document templates (intake/templates.yaml, intake/templates.py): every kind renders for every
catalog service, placeholders are filled, overrides apply, bad templates refuse to load."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from aktenlauf.settings import Settings
from aktenlauf.wiring import catalog as load_catalog
from eakte.render import Authority, DocumentData, format_date_de, render_document
from intake.templates import KINDS, TemplateError, Templates, load_templates

CATALOG = load_catalog(Settings(environment="test"))
TEMPLATES = load_templates(catalog=CATALOG)
AUTH = Authority(CATALOG.authority_name, "Bürgerbüro", CATALOG.authority_address, "http://127.0.0.1:8000/v1/verify/")
ISSUED, DUE = dt.date(2026, 11, 22), dt.date(2026, 12, 6)
ITEMS = ("Kopie des Personalausweises", "Nachweis des rechtlichen Interesses")
GEBURT = "99006003001000"


def _text(pdf: bytes) -> str:
    return " ".join(" ".join((p.extract_text() or "").split()) for p in PdfReader(io.BytesIO(pdf)).pages)


def _render(kind: str, service_key: str) -> str:
    service = CATALOG.services[service_key]
    values = {"service_name": service.name, "aktenzeichen": "32.10-2026-000042", "applicant_name": "Erika Mustermann",
              "authority": CATALOG.authority_name, "department": service.department_name,
              "issued_on": format_date_de(ISSUED), "fee": "10,00 EUR", "due_on": format_date_de(DUE),
              "items": ", ".join(ITEMS), "reason": "Zahlungsfrist verstrichen"}
    filled = TEMPLATES.fill(kind, service_key, values)
    data = DocumentData(
        kind=kind, authority=AUTH, service_name=service.name, aktenzeichen="32.10-2026-000042",  # type: ignore[arg-type]
        applicant_name="Erika Mustermann", applicant_address_lines=("Hauptstraße 5",), issued_on=ISSUED,
        verification_code="K7QF-9M2X-4TPA", reason="Zahlungsfrist verstrichen", heading=filled.title,
        intro=filled.intro, closing=filled.closing, items=ITEMS if kind == "nachforderung" else (),
        due_on=DUE if kind == "nachforderung" else None, details=(("Erstattung", "10,00 EUR"),))
    return _text(render_document(data))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_for_every_catalog_service_with_its_placeholders_filled(kind: str) -> None:
    for key, service in CATALOG.services.items():
        text = _render(kind, key)
        assert "32.10-2026-000042" in text and "Erika Mustermann" in text, (kind, key)
        assert service.name in text, (kind, key)
        assert "{" not in text and "}" not in text, (kind, key, text[:300])


def test_nachforderung_lists_the_missing_documents_and_the_deadline() -> None:
    text = _render("nachforderung", "99115005012000")
    for item in ITEMS:
        assert item in text
    assert "06.12.2026" in text


def test_every_service_without_an_override_gets_the_default() -> None:
    for kind in KINDS:
        for key in CATALOG.services:
            if (key, kind) not in TEMPLATES.overrides:
                assert TEMPLATES.template(kind, key) is TEMPLATES.defaults[kind]


def test_the_birth_certificate_uses_its_own_wording() -> None:
    assert (GEBURT, "certificate") in TEMPLATES.overrides
    text = _render("certificate", GEBURT)
    assert "Auszug aus dem Geburtenregister" in text and "PStG" in text
    assert "Auszug aus dem Geburtenregister" not in _render("certificate", "99021005001000")


def test_values_are_inserted_as_text_not_as_placeholders() -> None:
    filled = TEMPLATES.fill("rejection", None, {"applicant_name": "{reason} <b>x</b>", "reason": "geheim"})
    assert "{reason} <b>x</b>" in " ".join(filled.intro)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "templates.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _defaults(extra: str = "", **override: str) -> str:
    lines = ["defaults:"]
    for kind in KINDS:
        lines.append(f"  {kind}:")
        lines.append(f"    title: {override.get(kind, repr('Titel {service_name}'))}")
    return "\n".join(lines) + "\n" + extra


def test_a_minimal_valid_file_loads(tmp_path: Path) -> None:
    t = load_templates(_write(tmp_path, _defaults()), CATALOG)
    assert isinstance(t, Templates) and t.template("withdrawal", GEBURT).title == "Titel {service_name}"


@pytest.mark.parametrize(("body", "message"), [
    (_defaults(certificate="'{aplicant_name}'"), r"unknown placeholder\(s\) \{aplicant_name\}"),
    (_defaults(certificate="'Frist {due_on}'"), r"\{due_on\} for kind 'certificate'"),
    (_defaults(rejection="'{reason.upper}'"), "not a plain name"),
    (_defaults(rejection="'{reason!r}'"), "not a plain name"),
    (_defaults(rejection="'{}'"), "not a plain name"),
    (_defaults(rejection="'offen {'"), "bad braces"),
    (_defaults("  urkunde:\n    title: x\n"), r"unknown kind\(s\) \['urkunde'\]"),
    ("defaults:\n  certificate:\n    title: x\n", "no template for kind"),
    (_defaults("services:\n  '00000000000000':\n    certificate:\n      title: x\n"), "no such service"),
    (_defaults(f"services:\n  '{GEBURT}':\n    urkunde:\n      title: x\n"), "unknown kind 'urkunde'"),
    (_defaults(f"services:\n  '{GEBURT}':\n    certificate:\n      titel: x\n"), "Extra inputs"),
    ("defaults: [", "invalid"),
])
def test_a_bad_template_refuses_to_load_with_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        load_templates(_write(tmp_path, body), CATALOG)
