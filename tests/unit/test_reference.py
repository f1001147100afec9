"""Finding our Aktenzeichen and the applicant reference number in OCR text."""

from __future__ import annotations

import io
import random
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from intake.reference import (
    APPLICANT_ALPHABET,
    applicant_ref_for,
    applicant_ref_valid,
    find_applicant_refs,
    find_reference_candidates,
    find_references,
    near_variants,
)

AZ = "32.10-2026-000042"
REF = applicant_ref_for("case-0001")


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


@pytest.mark.parametrize("text", [
    "Az.: 32.10~2026=000042",                # hyphens read as ~ and =
    "Aktenzeichen: 32.10 2026 000042",       # hyphens read as spaces
    "Aktenzeichen: 32.102026000042",         # hyphens lost
    "Ihr Zeichen 32. 10-2026-00 0042",       # extra spaces
    "Zeichen: 32.10-2026-0000G2",            # G for 6? no: G is read for a 6, here it replaces the 4
    "mein Vorgang 32.10-\n2026-000042",      # broken after the file plan
])
def test_odd_separators_and_letters_still_give_a_candidate(text: str) -> None:
    cands = find_reference_candidates(text)
    assert cands, text
    best = cands[0]
    assert best.value == AZ or AZ in near_variants(best.value)
    assert not best.exact and best.confidence < 1.0


def test_a_digit_read_as_an_unrelated_letter_is_reachable_through_near_variants() -> None:
    (cand,) = find_reference_candidates("Az. 32.10-2026-0000x2")
    assert cand.value == "32.10-2026-000002"
    assert "32.10-2026-000042" in near_variants(cand.value)
    assert cand.confidence < find_reference_candidates("Az. 32.10-2026-000042")[0].confidence


def test_exact_and_labelled_candidates_rank_first() -> None:
    text = "am 12.03.2026 123456 EUR überwiesen. Ihr Zeichen: 32.10-2026-000042, alt: 66.20-2025-OOOO07"
    cands = find_reference_candidates(text)
    assert cands[0].value == AZ and cands[0].exact and cands[0].labelled and cands[0].confidence == 1.0
    assert text[cands[0].span[0]:cands[0].span[1]] == AZ
    date_like = next(c for c in cands if c.value == "12.03-2026-123456")
    assert date_like.confidence < 0.7 < cands[0].confidence


def test_phone_numbers_and_longer_digit_runs_are_not_references() -> None:
    assert find_references("Tel. 0171-2026-123456, Kto 3210-2026-000042, 32.10-2026-0000421") == []


def test_ordinary_prose_with_dates_and_amounts_has_no_candidates() -> None:
    text = ("Sehr geehrte Damen und Herren, am 01.02.2026 habe ich 120,00 EUR überwiesen (IBAN DE12 3456 7890 "
            "1234 5678 90). Meine Telefonnummer: 0171 2345678. Mit freundlichen Grüßen, Jürgen Weiß")
    assert find_reference_candidates(text) == []


def test_several_references_are_returned_once_each_in_order() -> None:
    text = "32.10-2026-000001 und 66.20-2025-000007, nochmals 32.10-2026-000001"
    assert find_references(text) == ["32.10-2026-000001", "66.20-2025-000007"]


def test_near_variants_are_exactly_the_one_digit_substitutions() -> None:
    variants = near_variants(AZ)
    assert len(variants) == len(set(variants)) == 12 * 9
    assert AZ not in variants
    assert "32.10-2026-000043" in variants and "33.10-2026-000042" in variants and "32.10-2025-000042" in variants
    for v in variants:
        assert sum(a != b for a, b in zip(v, AZ, strict=True)) == 1 and v[6:8] == "20"
    with pytest.raises(ValueError):
        near_variants("32.10-2026-42")


def test_applicant_refs_are_deterministic_well_formed_and_spread() -> None:
    assert applicant_ref_for("case-0001") == REF
    refs = {applicant_ref_for(f"case-{i}") for i in range(2000)}
    assert len(refs) == 2000
    assert all(applicant_ref_valid(r) and r.startswith("B-") and len(r) == 11 for r in refs)
    first = {r[2] for r in refs}
    assert first == set(APPLICANT_ALPHABET)  # every symbol occurs: no modulo bias towards a few
    assert applicant_ref_for("case-0001", attempt=1) != REF


def test_the_check_symbol_catches_every_single_substitution_and_neighbour_swap() -> None:
    body = REF[2:6] + REF[7:]
    for i in range(8):
        for ch in APPLICANT_ALPHABET:
            if ch != body[i]:
                wrong = body[:i] + ch + body[i + 1:]
                assert not applicant_ref_valid(f"B-{wrong[:4]}-{wrong[4:]}")
    for i in range(7):
        if body[i] != body[i + 1]:
            swapped = body[:i] + body[i + 1] + body[i] + body[i + 2:]
            assert not applicant_ref_valid(f"B-{swapped[:4]}-{swapped[4:]}")


def _garble(ref: str) -> str:
    """OCR-style damage: hyphens lost or turned into ~, 8 for the B, D read as 0."""
    return ref.replace("D", "0")


@pytest.mark.parametrize("fmt", ["Vorgangsnummer: {r}", "Ihre Nummer {nohyph}", "Nr. {spaced}", "{eight}",
                                 "Vorgangsnummer {tilde}"])
def test_applicant_refs_are_found_despite_ocr_damage(fmt: str) -> None:
    refs = [applicant_ref_for(f"case-{i}") for i in range(40)]
    for r in refs:
        text = fmt.format(r=_garble(r), nohyph=r.replace("-", ""), spaced=r.replace("-", " - "),
                          eight="8" + r[1:], tilde=r.replace("-", "~"))
        assert find_applicant_refs(text) == [r], text


def test_one_confusable_symbol_is_repaired_when_the_repair_is_unique() -> None:
    hits = 0
    for i in range(200):
        r = applicant_ref_for(f"case-{i}")
        for a, b in (("S", "5"), ("B", "8"), ("Z", "2"), ("G", "6")):
            body = r[2:]
            if a in body:
                garbled = "B-" + body.replace(a, b, 1)
                found = find_applicant_refs(f"Vorgangsnummer {garbled}")
                assert found in ([r], []), (r, garbled, found)  # never a wrong number
                hits += found == [r]
    assert hits > 100


def test_random_text_and_codes_rarely_pass_as_applicant_refs() -> None:
    import random
    rng = random.Random(7)
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    fakes = [f"B-{''.join(rng.choice(alphabet) for _ in range(4))}-{''.join(rng.choice(alphabet) for _ in range(4))}"
             for _ in range(3000)]
    accepted = sum(bool(find_applicant_refs(f)) for f in fakes)
    # 1/32 pass the check; repairing one of 5/S, 8/B, 2/Z, 6/G adds a few more (but never a wrong number for a
    # real one, see above); a false number still has to exist among 32**7 to reach a case
    assert accepted < 3000 * 0.10
    prose = ("BITTE BEACHTEN SIE: Bauantrag B-Plan Nr. 12, Briefkasten Bahnhofstraße, BIC BYLADEM1001, "
             "Behörde Bürgerbüro, B 27 Richtung Bonn")
    assert find_applicant_refs(prose) == []


# --------------------------------------------------------------------------- real OCR output


SCAN_SEED = 11


def _scan_of_letter(tmp: Path) -> Path:
    """A letter rendered, rasterised at 300 dpi, speckled and skewed by 2 degrees: a realistic bad scan."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4)
    _w, h = A4
    c.setFont("Helvetica", 12)
    lines = ["Jürgen Weiß, Lindenstraße 4, 12345 Musterstadt", "", "Stadt Musterstadt", "Bürgerbüro", "",
             f"Ihr Zeichen: {AZ}", "Meine Vorgangsnummer:", "", "Sehr geehrte Damen und Herren,",
             "anbei sende ich die fehlende Kopie meines Personalausweises.", "Mit freundlichen Grüßen"]
    for i, line in enumerate(lines):
        c.drawString(25 * mm, h - 30 * mm - i * 7 * mm, line)
    c.setFont("Helvetica-Bold", 12)  # printed bold, as our letters should print it
    c.drawString(75 * mm, h - 30 * mm - 6 * 7 * mm, REF)
    c.showPage()
    c.save()
    pdf = tmp / "letter.pdf"
    pdf.write_bytes(buf.getvalue())
    subprocess.run(["pdftoppm", "-gray", "-r", "300", "-singlefile", str(pdf), str(tmp / "page")], check=True)
    with Image.open(tmp / "page.pgm") as img:
        # seeded speckle (about 1 % of the pixels): the same scan, and so the same OCR text, every run
        noise = random.Random(SCAN_SEED).randbytes(img.size[0] * img.size[1])
        speckle = Image.frombytes("L", img.size, noise).point(lambda v: 0 if v < 3 else 255)
        scan = ImageChops.darker(img, speckle).rotate(2.0, resample=Image.Resampling.BICUBIC, fillcolor=255)
    scan.save(tmp / "scan.png", dpi=(300, 300))
    return tmp / "scan.png"


@pytest.fixture(scope="module")
def ocr_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    scan = _scan_of_letter(tmp_path_factory.mktemp("ocr"))
    out = subprocess.run(["tesseract", str(scan), "-", "-l", "deu"], check=True, capture_output=True, timeout=120,
                         env={**os.environ, "OMP_THREAD_LIMIT": "1"})  # one thread: the same result every run
    return out.stdout.decode()


def test_real_ocr_of_a_bad_scan_yields_the_aktenzeichen(ocr_text: str) -> None:
    cands = find_reference_candidates(ocr_text)
    assert cands and (cands[0].value == AZ or AZ in near_variants(cands[0].value)), ocr_text


@pytest.mark.xfail(strict=True, reason="known limit: tesseract misreads two symbols of the code on this speckled, "
                   "2-degree-skewed scan (e.g. K→R, 7→T); one error is repaired, two are not")
def test_real_ocr_of_a_bad_scan_yields_the_applicant_ref(ocr_text: str) -> None:
    assert find_applicant_refs(ocr_text) == [REF], ocr_text
