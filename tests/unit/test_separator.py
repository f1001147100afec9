"""Separator sheets split a scanned stack into letters; the sheet we print is recognised after scanning."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from PIL import Image, ImageChops
from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from intake.barcodes import decode_pdf_barcodes
from intake.separator import SeparatorConfig, render_separator_sheet, separator_pages, split_pdf, split_ranges


def _letter_page(label: str) -> bytes:
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4)
    c.setFont("Helvetica", 12)
    c.drawString(25 * mm, 250 * mm, label)
    c.drawString(25 * mm, 240 * mm, "Bitte legen Sie kein Trennblatt in diesen Brief.")
    c.showPage()
    c.save()
    return buf.getvalue()


def _raster(pdf: bytes, tmp: Path, name: str) -> Image.Image:
    src = tmp / f"{name}.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-gray", "-r", "150", "-singlefile", str(src), str(tmp / name)], check=True)
    with Image.open(tmp / f"{name}.pgm") as img:
        return img.copy()


def _scanned_stack(tmp: Path, layout: list[str]) -> Path:
    """A stack as a scanner delivers it: every page an image, the sheets skewed and speckled (1-bit)."""
    sheet = _raster(render_separator_sheet(), tmp, "sheet")
    pages = []
    for i, kind in enumerate(layout):
        if kind == "S":
            speckle = Image.effect_noise(sheet.size, 50).point(lambda v: 0 if v < 12 else 255)
            img = ImageChops.darker(sheet, speckle).rotate(-2.0 + i, fillcolor=255).convert("1").convert("L")
        else:
            img = _raster(_letter_page(f"Brief {kind}"), tmp, f"page{i}")
        pages.append(img)
    out = tmp / "stack.pdf"
    pages[0].save(out, save_all=True, append_images=pages[1:], resolution=150)
    return out


def test_printed_and_scanned_separator_sheets_split_the_stack(tmp_path: Path) -> None:
    stack = _scanned_stack(tmp_path, ["A1", "A2", "S", "B1", "S", "S", "C1", "S"])
    codes = decode_pdf_barcodes(stack)
    seps = separator_pages([""] * 8, codes)
    assert seps == [3, 5, 6, 8]
    ranges = split_ranges(8, seps)
    assert ranges == [(1, 2), (4, 4), (7, 7)]
    parts = split_pdf(stack, ranges, tmp_path / "parts")
    assert [p.name for p in parts] == ["part-001.pdf", "part-002.pdf", "part-003.pdf"]
    assert [len(PdfReader(p).pages) for p in parts] == [2, 1, 1]


def test_the_separator_sheet_carries_the_marker_in_qr_and_text(tmp_path: Path) -> None:
    pdf = tmp_path / "sheet.pdf"
    pdf.write_bytes(render_separator_sheet())
    assert decode_pdf_barcodes(pdf) == {1: ["AKTENLAUF-TRENNBLATT"]}
    text = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True).stdout.decode()
    assert separator_pages([text], {}) == [1]
    assert render_separator_sheet() == render_separator_sheet()  # reproducible: towns print the same sheet


def test_the_ocr_text_marker_needs_a_line_of_its_own_on_an_otherwise_empty_page() -> None:
    texts = ["Sehr geehrte Damen und Herren,\nanbei mein Antrag.",
             "  TRENN8LATT  \nVor jedes Schriftstück legen.",
             "T R E N N B L A T T",
             "Wir haben Ihr Trennblatt erhalten.\nTRENNBLATT\n" + "Wort " * 60]
    assert separator_pages(texts, {}) == [2, 3]


def test_a_configured_code_and_patch_t_mark_separators_and_other_codes_do_not() -> None:
    cfg = SeparatorConfig(code="POSTSTELLE-TRENNER", text="NAECHSTER BRIEF")
    codes = {1: ["https://x.example/v1/verify/ABCD-EFGH-JKLM"], 2: ["poststelle trenner"], 3: ["PATCH T"],
             4: ["AKTENLAUF-TRENNBLATT"]}
    assert separator_pages(["", "", "", "", "NAECHSTER BRIEF"], codes, cfg) == [2, 3, 5]


def test_a_custom_regex_replaces_the_word() -> None:
    cfg = SeparatorConfig(text_pattern=r"^-{3,} ?NEU ?-{3,}$")
    assert separator_pages(["--- NEU ---", "TRENNBLATT"], {}, cfg) == [1]


def test_split_ranges_drops_separators_and_empty_parts() -> None:
    assert split_ranges(5, []) == [(1, 5)]
    assert split_ranges(5, [1, 2, 5]) == [(3, 4)]
    assert split_ranges(3, [1, 2, 3]) == []
    assert split_ranges(4, [2, 9, 0, 2]) == [(1, 1), (3, 4)]
