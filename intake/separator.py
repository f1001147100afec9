"""Separator sheets (Trennblätter): a scanned batch stack is split into letters at separator pages.

A page is a separator if it carries a barcode whose payload is one of the configured markers (our own sheet
from :func:`render_separator_sheet` carries a QR code ``AKTENLAUF-TRENNBLATT``; a Code 39 ``PATCHT`` of the
common scanner patch sheets is accepted too), or if its OCR text has a line matching the marker pattern and
little other text (so a letter that merely mentions the word is not cut).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from eakte.render import qr_image

DEFAULT_MARKER = "AKTENLAUF-TRENNBLATT"
DEFAULT_WORD = "TRENNBLATT"


@dataclass(frozen=True)
class SeparatorConfig:
    """What makes a page a separator sheet (from settings: ``mailroom_separator_code`` / ``_text``)."""

    #: Barcode/QR payload of our separator sheet (compared case-insensitively, spaces and hyphens ignored).
    code: str = DEFAULT_MARKER
    #: The word printed on the sheet; matched as a line of its own, tolerant to OCR (B/8, O/0, I/1, S/5, spaces).
    text: str = DEFAULT_WORD
    #: Further accepted payloads: the Code 39 ``PATCHT`` of common scanner patch sheets.
    extra_codes: tuple[str, ...] = ("PATCHT",)
    #: A regular expression (multiline, case-insensitive) used instead of the tolerant ``text`` line.
    text_pattern: str | None = None
    #: A page with the text marker is a separator only if it has at most this many other words.
    max_other_words: int = 40

    def pattern(self) -> re.Pattern[str]:
        if self.text_pattern:
            return re.compile(self.text_pattern, re.IGNORECASE | re.MULTILINE)
        letters = r"\s*".join(_GLYPHS.get(ch, re.escape(ch)) for ch in self.text.upper() if not ch.isspace())
        return re.compile(rf"^[^\w\n]*{letters}[^\w\n]*$", re.IGNORECASE | re.MULTILINE)


#: OCR misreadings of upper-case letters on a separator sheet.
_GLYPHS = {"B": "[B8]", "O": "[O0]", "I": "[I1l|]", "S": "[S5]", "Z": "[Z2]", "E": "[EF]", "T": "[T7]"}


def _squash(payload: str) -> str:
    return re.sub(r"[\s\-_]", "", payload).upper()


def separator_pages(page_texts: Sequence[str], barcodes: dict[int, list[str]],
                    config: SeparatorConfig | None = None) -> list[int]:
    """1-based numbers of the separator pages, ascending."""
    cfg = config or SeparatorConfig()
    markers = {_squash(m) for m in (cfg.code, *cfg.extra_codes)}
    pattern = cfg.pattern()
    found: set[int] = set()
    for page, payloads in barcodes.items():
        if any(_squash(p) in markers for p in payloads):
            found.add(page)
    for i, text in enumerate(page_texts, start=1):
        if i in found:
            continue
        m = pattern.search(text)
        if m and len(re.findall(r"\w{2,}", text[:m.start()] + text[m.end():])) <= cfg.max_other_words:
            found.add(i)
    return sorted(p for p in found if p >= 1)


def split_ranges(page_count: int, separators: Sequence[int]) -> list[tuple[int, int]]:
    """The letters between the separators as inclusive 1-based page ranges; separators and empty parts dropped."""
    cuts = sorted({s for s in separators if 1 <= s <= page_count})
    ranges: list[tuple[int, int]] = []
    start = 1
    for cut in [*cuts, page_count + 1]:
        if cut > start:
            ranges.append((start, cut - 1))
        start = cut + 1
    return ranges


def split_pdf(pdf_path: Path, ranges: Sequence[tuple[int, int]], out_dir: Path) -> list[Path]:
    """Write one PDF per range (``part-001.pdf``, ...) into ``out_dir``; returns their paths in order."""
    reader = PdfReader(pdf_path)
    if reader.is_encrypted:
        reader.decrypt("")
    n = len(reader.pages)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, (first, last) in enumerate(ranges, start=1):
        if not 1 <= first <= last <= n:
            raise ValueError(f"page range {first}-{last} is outside the document's {n} pages")
        writer = PdfWriter()
        for p in range(first - 1, last):
            writer.add_page(reader.pages[p])
        path = out_dir / f"part-{i:03d}.pdf"
        with path.open("wb") as fh:
            writer.write(fh)
        paths.append(path)
    return paths


def render_separator_sheet(marker: str = DEFAULT_MARKER, word: str = DEFAULT_WORD) -> bytes:
    """A printable A4 separator sheet: a large QR code of ``marker``, ``word`` in large letters, a short hint."""
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=1)
    c.setTitle("Trennblatt")
    w, h = A4
    c.setFont("Helvetica-Bold", 64)
    c.drawCentredString(w / 2, h - 70 * mm, word)
    size = 70 * mm
    c.drawImage(ImageReader(qr_image(marker, border=4).convert("L")), (w - size) / 2, h / 2 - size / 2 - 10 * mm,
                size, size)
    c.setFont("Helvetica", 11)
    c.drawCentredString(w / 2, 40 * mm, "Vor jedes Schriftstück legen. Dieses Blatt wird beim Scannen entfernt.")
    c.showPage()
    c.save()
    return buf.getvalue()
