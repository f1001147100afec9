"""QR codes and barcodes on scanned pages: our own letters' verification QR codes, separator sheets.

Pages are rendered one at a time with poppler's ``pdftoppm`` (grey, into a private temporary directory,
with a timeout) and decoded with zxing-cpp, so memory stays bounded by one page raster. A page whose raster
would exceed :data:`MAX_PAGE_PIXELS` is rendered at a lower resolution; a page that would still be absurd
at :data:`MIN_DPI` (a hostile or broken PDF) is skipped, not rendered.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import structlog
import zxingcpp
from PIL import Image
from pypdf import PdfReader

log = structlog.get_logger(__name__)

PDFTOPPM = "pdftoppm"
#: Largest raster rendered for one page (a grey A4 page at 300 dpi is ~8.7 million pixels).
MAX_PAGE_PIXELS = 40_000_000
#: Below this resolution a barcode cannot be read any more; a page this large is skipped.
MIN_DPI = 50
RENDER_TIMEOUT_S = 60.0

_VERIFY = re.compile(r"/v1/verify/([^/?#\s]+)")
_VERIFICATION_CODE = re.compile(r"^[23456789A-HJ-NP-Z]{4}-[23456789A-HJ-NP-Z]{4}-[23456789A-HJ-NP-Z]{4}$")


class BarcodeError(RuntimeError):
    """The PDF cannot be rendered at all (not a PDF, encrypted with a user password, ...)."""


def _page_sizes(pdf_path: Path) -> list[tuple[float, float]]:
    """Width and height of every page in points (the crop box, as pdftoppm renders it)."""
    try:
        reader = PdfReader(pdf_path)
        if reader.is_encrypted:
            reader.decrypt("")
        return [(abs(float(p.cropbox.width)), abs(float(p.cropbox.height))) for p in reader.pages]
    except Exception as exc:  # pypdf raises many types on broken files
        raise BarcodeError(f"{pdf_path.name} cannot be read as a PDF: {exc}") from exc


def page_dpi(width_pt: float, height_pt: float, dpi: int) -> int | None:
    """The resolution a page is rendered at: ``dpi``, or less to stay under the pixel cap; None = skip it."""
    inches = max(width_pt, 1.0) / 72.0 * max(height_pt, 1.0) / 72.0
    fit = int(math.sqrt(MAX_PAGE_PIXELS / inches))
    eff = min(dpi, fit)
    return eff if eff >= MIN_DPI else None


def render_page(pdf_path: Path, page: int, dpi: int, out_dir: Path) -> Path:
    """Render one page (1-based) as a grey PGM file with pdftoppm."""
    prefix = out_dir / f"p{page}"
    try:
        subprocess.run([PDFTOPPM, "-gray", "-r", str(dpi), "-f", str(page), "-l", str(page), "-singlefile",
                        str(pdf_path), str(prefix)], check=True, capture_output=True, timeout=RENDER_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        raise BarcodeError(f"pdftoppm failed on page {page}: {exc.stderr.decode(errors='replace')[:300]}") from exc
    return prefix.with_suffix(".pgm")


def decode_image(image: Image.Image) -> list[str]:
    """Payloads of all barcodes zxing-cpp finds in ``image``, in its order, without duplicates."""
    out: list[str] = []
    for code in zxingcpp.read_barcodes(image):
        if code.valid and code.text and code.text not in out:
            out.append(code.text)
    return out


def decode_pdf_barcodes(pdf_path: Path, dpi: int = 150, pages: Iterable[int] | None = None) -> dict[int, list[str]]:
    """1-based page number → barcode payloads on that page, for every (or every listed) page.

    Pages without barcodes map to an empty list; skipped pages (absurd size) are absent.
    """
    sizes = _page_sizes(pdf_path)
    wanted = sorted({p for p in pages if 1 <= p <= len(sizes)}) if pages is not None else range(1, len(sizes) + 1)
    result: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="barcodes-") as tmp:
        for page in wanted:
            eff = page_dpi(*sizes[page - 1], dpi)
            if eff is None:
                log.warning("barcodes.page_skipped", page=page, size_pt=sizes[page - 1])
                continue
            path = render_page(pdf_path, page, eff, Path(tmp))
            try:
                with Image.open(path) as img:
                    result[page] = decode_image(img)
            finally:
                path.unlink(missing_ok=True)
    return result


def verification_codes_from_payloads(payloads: Iterable[str]) -> list[str]:
    """Verification codes of our own documents' QR codes (URLs ending in ``/v1/verify/{code}``), in order.

    Only well-formed codes (``XXXX-XXXX-XXXX`` over eakte.render.VERIFICATION_ALPHABET) are returned; a
    lower-case or percent-quoted code is normalised. Foreign URLs with another path are ignored.
    """
    out: list[str] = []
    for payload in payloads:
        for m in _VERIFY.finditer(payload):
            code = urllib.parse.unquote(m.group(1)).strip().upper()
            if _VERIFICATION_CODE.match(code) and code not in out:
                out.append(code)
    return out
