"""QR codes on scanned pages: our verification URLs are read from real rendered and rasterised pages."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from pypdf import PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from eakte.render import qr_image, verification_code
from intake.barcodes import MAX_PAGE_PIXELS, decode_pdf_barcodes, page_dpi, verification_codes_from_payloads

CODE = verification_code(b"test-secret", "doc-1")
URL = f"https://service.musterstadt.example/v1/verify/{CODE}"


def _letter_with_qr(pages: int = 2, qr_page: int = 2) -> bytes:
    """A letter whose ``qr_page`` carries our 25 mm verification QR code, like eakte.render prints it."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4)
    for p in range(1, pages + 1):
        c.setFont("Helvetica", 11)
        c.drawString(25 * mm, 270 * mm, f"Bescheid, Seite {p}")
        if p == qr_page:
            c.drawImage(ImageReader(qr_image(URL).convert("L")), 160 * mm, 20 * mm, 25 * mm, 25 * mm)
        c.showPage()
    c.save()
    return buf.getvalue()


def _scanned(pdf: bytes, tmp: Path, angle: float = 2.5) -> Path:
    """The PDF printed and scanned back: rasterised at 200 dpi, speckled, skewed, wrapped as an image PDF."""
    src = tmp / "src.pdf"
    src.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-gray", "-r", "200", str(src), str(tmp / "pg")], check=True)
    images = []
    for png in sorted(tmp.glob("pg*.pgm")):
        with Image.open(png) as img:
            speckle = Image.effect_noise(img.size, 50).point(lambda v: 0 if v < 15 else 255)
            images.append(ImageChops.darker(img, speckle).rotate(angle, resample=Image.Resampling.BICUBIC,
                                                                 fillcolor=255))
    out = tmp / "scan.pdf"
    images[0].save(out, save_all=True, append_images=images[1:], resolution=200)
    return out


def test_the_qr_code_of_our_letter_is_read_from_a_skewed_noisy_scan(tmp_path: Path) -> None:
    scan = _scanned(_letter_with_qr(), tmp_path)
    found = decode_pdf_barcodes(scan)
    assert found == {1: [], 2: [URL]}
    assert verification_codes_from_payloads(found[2]) == [CODE]


def test_only_the_requested_pages_are_rendered(tmp_path: Path) -> None:
    pdf = tmp_path / "letter.pdf"
    pdf.write_bytes(_letter_with_qr(pages=3, qr_page=3))
    assert decode_pdf_barcodes(pdf, pages=[3, 7]) == {3: [URL]}


def test_a_page_of_absurd_size_is_skipped_not_rendered(tmp_path: Path) -> None:
    w = PdfWriter()
    w.add_blank_page(width=72 * 2000, height=72 * 2000)  # 2000 x 2000 inches
    w.add_blank_page(width=595, height=842)
    pdf = tmp_path / "huge.pdf"
    with pdf.open("wb") as f:
        w.write(f)
    assert decode_pdf_barcodes(pdf) == {2: []}
    assert page_dpi(72 * 2000, 72 * 2000, 150) is None
    a0 = page_dpi(2384, 3370, 300)  # A0 at 300 dpi would be 140 MP: rendered at a lower resolution
    assert a0 is not None and a0 < 300 and (2384 / 72 * a0) * (3370 / 72 * a0) <= MAX_PAGE_PIXELS


def test_verification_codes_are_taken_only_from_our_verify_urls() -> None:
    payloads = [URL, URL, f"https://x.example/v1/verify/{CODE.lower()}?utm=1", "https://x.example/other/ABCD",
                "https://x.example/v1/verify/0000-1111-OOOO", "AKTENLAUF-TRENNBLATT",
                f"https://x.example/v1/verify/{CODE.replace('-', '%2D')}"]
    assert verification_codes_from_payloads(payloads) == [CODE]


def test_a_file_that_is_not_a_pdf_is_refused(tmp_path: Path) -> None:
    from intake.barcodes import BarcodeError
    bad = tmp_path / "x.pdf"
    bad.write_bytes(b"not a pdf at all")
    with pytest.raises(BarcodeError):
        decode_pdf_barcodes(bad)
