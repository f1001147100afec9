from __future__ import annotations

import datetime
import io
import re
from dataclasses import replace

import pytest
from pypdf import PdfReader

from eakte.render import (
    VERIFICATION_ALPHABET,
    Authority,
    DocumentData,
    render_document,
    verification_code,
)

AUTHORITY = Authority(
    name="Stadt Musterstadt",
    department="Bürgerbüro",
    address_lines=("Marktplatz 1", "12345 Musterstadt"),
    verify_base_url="http://127.0.0.1:8000/v1/verify/",
)

CERTIFICATE = DocumentData(
    kind="certificate",
    authority=AUTHORITY,
    service_name="Meldebescheinigung",
    aktenzeichen="32.10-2026-000042",
    applicant_name="Jürgen Müller",
    applicant_address_lines=("Große Straße 5", "12345 Musterstadt"),
    issued_on=datetime.date(2026, 11, 21),
    verification_code="K7QF-9M2X-4TPA",
    facts=(("Familienname", "Müller"), ("Anlass", "Mängelmeldung erledigt")),
    fee_cents=1200,
)

REJECTION = replace(
    CERTIFICATE,
    kind="rejection",
    service_name="Sondernutzungserlaubnis",
    reason="Die Fläche ist im beantragten Zeitraum bereits für den Weihnachtsmarkt vergeben.",
    fee_cents=0,
)

CODE_RE = re.compile(r"^[%s]{4}-[%s]{4}-[%s]{4}$" % ((re.escape(VERIFICATION_ALPHABET),) * 3))


def _reader(data: DocumentData) -> PdfReader:
    return PdfReader(io.BytesIO(render_document(data)))


def _text(data: DocumentData) -> str:
    return "\n".join(page.extract_text() for page in _reader(data).pages)


def _flat(text: str) -> str:
    """Whitespace-normalised text (extraction may break lines anywhere)."""
    return " ".join(text.split())


# --- rendering ----------------------------------------------------------------


def test_render_returns_pdf_bytes() -> None:
    assert render_document(CERTIFICATE).startswith(b"%PDF-")


def test_render_is_byte_identical_for_equal_data() -> None:
    first = render_document(CERTIFICATE)
    render_document(REJECTION)  # unrelated render in between must not matter
    assert render_document(replace(CERTIFICATE)) == first


def test_render_differs_for_different_data() -> None:
    assert render_document(CERTIFICATE) != render_document(replace(CERTIFICATE, aktenzeichen="32.10-2026-000043"))


def test_text_contains_applicant_name() -> None:
    assert "Jürgen Müller" in _text(CERTIFICATE)


def test_text_contains_aktenzeichen() -> None:
    assert "32.10-2026-000042" in _text(CERTIFICATE)


def test_text_contains_verification_code() -> None:
    assert "K7QF-9M2X-4TPA" in _text(CERTIFICATE)


def test_text_contains_verify_url() -> None:
    assert "http://127.0.0.1:8000/v1/verify/K7QF-9M2X-4TPA" in _flat(_text(CERTIFICATE))


def test_text_contains_german_umlauts_and_sharp_s() -> None:
    text = _text(CERTIFICATE)
    assert "Straße" in text
    assert "Mängelmeldung" in text
    assert "Bürgerbüro" in text


def test_text_contains_german_date() -> None:
    assert "21.11.2026" in _text(CERTIFICATE)


def test_text_contains_title() -> None:
    assert "Meldebescheinigung" in _text(CERTIFICATE)


def test_fee_is_printed_in_german_format() -> None:
    assert "Gebühr: 12,00 EUR" in _text(CERTIFICATE)


def test_no_fee_line_without_fee() -> None:
    assert "Gebühr" not in _text(replace(CERTIFICATE, fee_cents=0))


def test_large_fee_uses_thousands_separator() -> None:
    assert "Gebühr: 1.234,56 EUR" in _text(replace(CERTIFICATE, fee_cents=123456))


def test_rejection_contains_title_and_reason() -> None:
    text = _flat(_text(REJECTION))
    assert "Ablehnungsbescheid: Sondernutzungserlaubnis" in text
    assert "bereits für den Weihnachtsmarkt vergeben" in text


def test_rejection_contains_legal_remedy_notice() -> None:
    text = _flat(_text(REJECTION))
    assert "Rechtsbehelfsbelehrung" in text
    assert "innerhalb eines Monats" in text
    assert "Widerspruch" in text


def test_certificate_has_no_legal_remedy_notice() -> None:
    assert "Rechtsbehelfsbelehrung" not in _text(CERTIFICATE)


def test_rejection_without_reason_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_document(replace(CERTIFICATE, kind="rejection"))


def test_rejection_with_blank_reason_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_document(replace(CERTIFICATE, kind="rejection", reason="   "))


def test_negative_fee_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_document(replace(CERTIFICATE, fee_cents=-1))


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_document(replace(CERTIFICATE, kind="invoice"))  # type: ignore[arg-type]


def test_metadata_title_author_subject() -> None:
    meta = _reader(REJECTION).metadata
    assert meta is not None
    assert meta.title == "Ablehnungsbescheid: Sondernutzungserlaubnis"
    assert meta.author == "Stadt Musterstadt"
    assert meta.subject == "32.10-2026-000042"


def test_creation_date_is_derived_from_issued_on() -> None:
    meta = _reader(CERTIFICATE).metadata
    assert meta is not None
    assert meta["/CreationDate"].startswith("D:20261121")


def test_fonts_are_embedded() -> None:
    page = _reader(CERTIFICATE).pages[0]
    fonts = page["/Resources"]["/Font"]
    used = [f.get_object() for f in fonts.values() if "Vera" in str(f.get_object()["/BaseFont"])]
    assert used
    assert all("/FontFile2" in f["/FontDescriptor"] for f in used)


@pytest.mark.parametrize(
    "name",
    ["<script>alert(1)</script>", "A & B", "Müller <b>fett</b> &amp; Co", "x]]>&nbsp;<br/>"],
)
def test_markup_in_user_text_renders_literally(name: str) -> None:
    text = _text(replace(CERTIFICATE, applicant_name=name, facts=(("Hinweis", name),)))
    assert name in text


def test_markup_in_rejection_reason_renders_literally() -> None:
    reason = "Unterlagen <fehlen> & Frist abgelaufen"
    assert reason in _text(replace(REJECTION, reason=reason))


def test_sixty_facts_flow_onto_a_second_page() -> None:
    facts = tuple((f"Angabe {i}", f"Wert {i}") for i in range(60))
    reader = _reader(replace(CERTIFICATE, facts=facts))
    assert len(reader.pages) >= 2
    later = "\n".join(p.extract_text() for p in reader.pages[1:])
    assert "Wert 59" in later


def test_very_long_value_wraps_without_error() -> None:
    value = "Sehr langer Text " * 400 + "X" * 500
    reader = _reader(replace(CERTIFICATE, facts=(("Beschreibung", value),), applicant_name="Z" * 300))
    assert len(reader.pages) >= 2


def test_footer_shows_page_x_of_y() -> None:
    facts = tuple((f"Angabe {i}", f"Wert {i}") for i in range(60))
    reader = _reader(replace(CERTIFICATE, facts=facts))
    total = len(reader.pages)
    assert f"Seite {total} von {total}" in reader.pages[-1].extract_text()


# --- verification codes ---------------------------------------------------------


def test_verification_code_is_deterministic() -> None:
    assert verification_code(b"secret", "32.10-2026-000042") == verification_code(b"secret", "32.10-2026-000042")


def test_verification_code_differs_per_subject() -> None:
    assert verification_code(b"secret", "32.10-2026-000042") != verification_code(b"secret", "32.10-2026-000043")


def test_verification_code_differs_per_secret() -> None:
    assert verification_code(b"secret-a", "32.10-2026-000042") != verification_code(b"secret-b", "32.10-2026-000042")


def test_verification_code_format_and_alphabet() -> None:
    for i in range(200):
        code = verification_code(b"secret", f"subject-{i}")
        assert CODE_RE.match(code), code


def test_verification_alphabet_has_no_ambiguous_characters() -> None:
    assert not set("0O1I") & set(VERIFICATION_ALPHABET)


def test_verification_code_rejects_empty_secret() -> None:
    with pytest.raises(ValueError):
        verification_code(b"", "subject")


# --- the QR code -----------------------------------------------------------------


def test_the_qr_matrix_is_the_one_reportlabs_qr_widget_encodes() -> None:
    from reportlab.graphics.barcode.qr import QrCodeWidget

    from eakte.render import qr_modules

    value = "https://aktenlauf.example/v1/verify/K7QF-9M2X-4TPA"
    widget = QrCodeWidget(value, barLevel="M")
    widget.qr.make()
    expected = tuple(tuple(bool(m) for m in row) for row in widget.qr.modules)
    got = qr_modules(value)
    assert got == expected and len(got) >= 21
    # finder pattern in the top-left corner: a 7x7 dark ring around a 3x3 dark core
    assert all(got[0][:7]) and all(got[6][:7]) and got[1][1:6] == (False,) * 5 and all(got[3][2:5])


def test_the_certificate_carries_its_qr_code_pixel_for_module() -> None:
    from eakte.render import qr_modules

    url = AUTHORITY.verify_base_url + CERTIFICATE.verification_code
    images = _reader(CERTIFICATE).pages[0].images
    assert len(images) == 1
    img = images[0].image.convert("1")
    modules = qr_modules(url)
    n = len(modules)
    assert img.size == (n + 4, n + 4)  # a quiet zone of two modules on each side
    got = tuple(tuple(img.getpixel((c + 2, r + 2)) == 0 for c in range(n)) for r in range(n))
    assert got == modules
    assert all(img.getpixel((c, 0)) != 0 for c in range(n + 4))  # the quiet zone is light
