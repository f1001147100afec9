"""Rendering of official documents (certificates, rejection notices, requests for missing
documents, cancellation and withdrawal notices) as PDF/A-2b.

Framework-free: this module only depends on reportlab, pikepdf and the standard library.
It must never import FastAPI or Temporal, and never read ``os.environ``.

The output is *deterministic*: the same :class:`DocumentData` always renders to
byte-identical PDF bytes.  The PDF is stored content-addressed, so an activity
retry must not produce a second, different certificate.  To achieve that we

* render with reportlab's ``invariant=1`` mode,
* derive the PDF creation/modification date from ``issued_on`` (midnight UTC),
* derive the PDF trailer ``/ID`` from the document data (not from the clock),
* only use the TrueType fonts bundled with reportlab (Bitstream Vera), so the
  result does not depend on the fonts installed on the host.

Layout follows DIN 5008 form B loosely: letterhead, address window
(20 mm from the left, 45 mm from the top, 85 x 45 mm), information block at
125 mm, body from ~98 mm, fold and hole marks, and a footer carrying the
verification code, verification URL and a QR code of that URL on every page.

The wording comes from the per-service templates (intake/templates.yaml, filled by
intake/templates.py) as ``heading``/``intro``/``closing``; the structured parts (facts table,
list of missing documents with the deadline, detail lines, reason, fee, legal remedy notice)
are placed here per kind. Without template text the built-in wording is used.

PDF/A: reportlab cannot write PDF/A itself, so the rendered file is post-processed with
pikepdf (:func:`_make_pdfa`): XMP metadata claiming PDF/A-2b and agreeing with the Info
dictionary, an sRGB output intent, the print flag on every annotation, no empty/undefined Info
entries. All fonts are embedded subsets (Bitstream Vera), there is no encryption, no
JavaScript and no transparency. The seal (eakte/seal.py) is appended later as an incremental
update, which PDF/A-2 allows. Not checked here with a conformance validator (veraPDF is not
available on this machine).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import io
import os.path
import re
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from xml.sax.saxutils import escape as _xml_escape

import reportlab
from PIL import Image
from reportlab.graphics.barcode import qrencoder
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    KeepInFrame,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

__all__ = [
    "Authority",
    "DocumentData",
    "VERIFICATION_ALPHABET",
    "render_document",
    "verification_code",
]

DocumentKind = Literal["certificate", "rejection", "nachforderung", "cancellation", "withdrawal"]
_KINDS: Final = ("certificate", "rejection", "nachforderung", "cancellation", "withdrawal")
#: kinds that are administrative acts (Bescheide) and carry a legal remedy notice
_REMEDY_KINDS: Final = ("rejection", "cancellation")


# --------------------------------------------------------------------------
# Public data model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """The issuing municipality."""

    name: str  # e.g. "Stadt Musterstadt"
    department: str  # e.g. "Bürgerbüro"
    address_lines: tuple[str, ...]
    verify_base_url: str  # e.g. "http://127.0.0.1:8000/v1/verify/"


@dataclass(frozen=True)
class DocumentData:
    """Everything that ends up on the document. Equal data -> identical PDF."""

    kind: DocumentKind
    authority: Authority
    service_name: str  # e.g. "Meldebescheinigung"
    aktenzeichen: str  # e.g. "32.10-2026-000042"
    applicant_name: str
    applicant_address_lines: tuple[str, ...]
    issued_on: datetime.date
    verification_code: str  # e.g. "K7QF-9M2X-4TPA"
    facts: tuple[tuple[str, str], ...] = ()  # label/value rows
    reason: str | None = None  # rejection reason (required for kind="rejection")
    fee_cents: int = 0
    applicant_ref: str | None = None  # the applicant's reference number, e.g. "B-7K2M-Q9XA"
    # template text (intake/templates.py), already filled: heading replaces the built-in title,
    # intro/closing paragraphs frame the structured parts; **text** is printed bold
    heading: str | None = None
    intro: tuple[str, ...] = ()
    closing: tuple[str, ...] = ()
    items: tuple[str, ...] = ()  # nachforderung: the missing documents
    due_on: datetime.date | None = None  # nachforderung: the deadline for them
    details: tuple[tuple[str, str], ...] = ()  # fee lines, exemption, refund ...: label/value rows
    sealed: bool = False  # the footer says the document carries the authority's electronic seal

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def title(self) -> str:
        if self.heading and self.heading.strip():
            return self.heading
        return {
            "rejection": f"Ablehnungsbescheid: {self.service_name}",
            "nachforderung": f"Nachforderung von Unterlagen: {self.service_name}",
            "cancellation": f"Einstellung des Verfahrens: {self.service_name}",
            "withdrawal": f"Bestätigung der Antragsrücknahme: {self.service_name}",
        }.get(self.kind, self.service_name)

    @property
    def verify_url(self) -> str:
        return verify_url(self.authority.verify_base_url, self.verification_code)


def _validate(data: DocumentData) -> None:
    if data.kind not in _KINDS:
        raise ValueError(f"unknown document kind {data.kind!r}; expected one of {_KINDS}")
    if data.kind in ("rejection", "cancellation") and (data.reason is None or not data.reason.strip()):
        raise ValueError(f"a {data.kind} notice requires a non-empty reason")
    if data.kind == "nachforderung":
        if not data.items or not all(i.strip() for i in data.items):
            raise ValueError("a nachforderung requires the list of missing documents")
        if not isinstance(data.due_on, datetime.date):
            raise ValueError("a nachforderung requires the deadline due_on")
    if isinstance(data.fee_cents, bool) or not isinstance(data.fee_cents, int):
        raise ValueError(f"fee_cents must be an int, got {data.fee_cents!r}")
    if data.fee_cents < 0:
        raise ValueError(f"fee_cents must not be negative, got {data.fee_cents}")
    if not isinstance(data.issued_on, datetime.date):
        raise ValueError(f"issued_on must be a date, got {data.issued_on!r}")


# --------------------------------------------------------------------------
# Verification code
# --------------------------------------------------------------------------

#: 32 symbols: digits and upper-case letters without the ambiguous 0/O/1/I.
VERIFICATION_ALPHABET: Final = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
assert len(VERIFICATION_ALPHABET) == 32 and len(set(VERIFICATION_ALPHABET)) == 32

_CODE_CHARS: Final = 12
_CODE_GROUP: Final = 4


def verification_code(secret: bytes, subject: str) -> str:
    """Deterministic, unguessable verification code for ``subject``.

    HMAC-SHA256(secret, subject as UTF-8); the first 60 bits of the MAC are
    encoded as 12 symbols of :data:`VERIFICATION_ALPHABET` (exactly 5 bits per
    symbol, so there is no modulo bias) and grouped ``XXXX-XXXX-XXXX``.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError("secret must be bytes")
    if not secret:
        raise ValueError("secret must not be empty")
    mac = hmac.new(bytes(secret), subject.encode("utf-8"), hashlib.sha256).digest()
    bits = int.from_bytes(mac[:8], "big") >> (64 - 5 * _CODE_CHARS)
    chars = [
        VERIFICATION_ALPHABET[(bits >> (5 * (_CODE_CHARS - 1 - i))) & 0x1F]
        for i in range(_CODE_CHARS)
    ]
    code = "".join(chars)
    return "-".join(code[i : i + _CODE_GROUP] for i in range(0, _CODE_CHARS, _CODE_GROUP))


def verify_url(verify_base_url: str, code: str) -> str:
    """``verify_base_url + code`` (the code is percent-quoted; valid codes are unchanged)."""
    return verify_base_url + urllib.parse.quote(code, safe="-")


# --------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------


def format_date_de(d: datetime.date) -> str:
    """German date format, e.g. ``21.11.2026``."""
    return f"{d.day:02d}.{d.month:02d}.{d.year:04d}"


def format_eur(cents: int) -> str:
    """German currency format, e.g. ``1.234,50 EUR``."""
    euros, rest = divmod(cents, 100)
    return f"{euros:,}".replace(",", ".") + f",{rest:02d} EUR"


# C0/C1 control characters (except TAB/LF/CR) have no business in a document and
# can confuse the paragraph parser; they are dropped.
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    text = _CONTROL_RE.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")


def _esc(text: str) -> str:
    """Escape user text for reportlab Paragraph markup; newlines become line breaks."""
    return _xml_escape(_clean(text)).replace("\n", "<br/>")


# --------------------------------------------------------------------------
# Fonts and styles
# --------------------------------------------------------------------------

_FONT: Final = "AktenlaufVera"
_FONT_BOLD: Final = "AktenlaufVera-Bold"
_FONT_ITALIC: Final = "AktenlaufVera-Italic"
_FONT_BOLD_ITALIC: Final = "AktenlaufVera-BoldItalic"
_FONT_FILES: Final = {
    _FONT: "Vera.ttf",
    _FONT_BOLD: "VeraBd.ttf",
    _FONT_ITALIC: "VeraIt.ttf",
    _FONT_BOLD_ITALIC: "VeraBI.ttf",
}
_FONT_DIR: Final = os.path.join(os.path.dirname(reportlab.__file__), "fonts")

# reportlab keeps global registries (fonts, ...); we serialise rendering so that
# concurrent activity threads cannot interfere with each other.
_LOCK: Final = threading.RLock()
_fonts_registered = False


def _register_fonts() -> None:
    global _fonts_registered
    if _fonts_registered:
        return
    registered = set(pdfmetrics.getRegisteredFontNames())
    for name, filename in _FONT_FILES.items():
        if name not in registered:
            pdfmetrics.registerFont(TTFont(name, os.path.join(_FONT_DIR, filename)))
    pdfmetrics.registerFontFamily(
        _FONT, normal=_FONT, bold=_FONT_BOLD, italic=_FONT_ITALIC, boldItalic=_FONT_BOLD_ITALIC
    )
    _fonts_registered = True


_INK: Final = colors.HexColor("#1a1a1a")
_GREY: Final = colors.HexColor("#555555")
_ACCENT: Final = colors.HexColor("#1f4e79")
_RULE: Final = colors.HexColor("#9aa5b1")
_TABLE_BG: Final = colors.HexColor("#eef2f6")


def _style(name: str, size: float, *, bold: bool = False, leading: float | None = None,
           color: colors.Color = _INK, align: int = TA_LEFT, space_before: float = 0,
           space_after: float = 0) -> ParagraphStyle:
    return ParagraphStyle(
        name,
        fontName=_FONT_BOLD if bold else _FONT,
        fontSize=size,
        leading=leading if leading is not None else size * 1.3,
        textColor=color,
        alignment=align,
        spaceBefore=space_before,
        spaceAfter=space_after,
        splitLongWords=1,
        allowWidows=0,
        allowOrphans=0,
    )


@dataclass(frozen=True)
class _Styles:
    body: ParagraphStyle
    title: ParagraphStyle
    heading: ParagraphStyle
    label: ParagraphStyle
    value: ParagraphStyle
    small: ParagraphStyle
    small_bold: ParagraphStyle
    tiny: ParagraphStyle
    return_line: ParagraphStyle
    address: ParagraphStyle
    head_name: ParagraphStyle
    head_dept: ParagraphStyle
    head_addr: ParagraphStyle
    info_label: ParagraphStyle
    info_value: ParagraphStyle
    right_tiny: ParagraphStyle


def _styles() -> _Styles:
    return _Styles(
        body=_style("body", 10, leading=14, space_after=6),
        title=_style("title", 14, bold=True, leading=18, color=_ACCENT, space_after=10),
        heading=_style("heading", 10.5, bold=True, leading=14, space_before=8, space_after=4),
        label=_style("label", 9, bold=True, leading=12),
        value=_style("value", 9, leading=12),
        small=_style("small", 8, leading=10.5, color=_GREY),
        small_bold=_style("small_bold", 9, bold=True, leading=11.5),
        tiny=_style("tiny", 7, leading=9, color=_GREY),
        return_line=_style("return_line", 6.5, leading=8, color=_GREY),
        address=_style("address", 10, leading=12.5),
        head_name=_style("head_name", 16, bold=True, leading=20, color=_ACCENT),
        head_dept=_style("head_dept", 10.5, leading=14, color=_INK),
        head_addr=_style("head_addr", 8, leading=10.5, color=_GREY, align=TA_RIGHT),
        info_label=_style("info_label", 7.5, leading=9.5, color=_GREY),
        info_value=_style("info_value", 9.5, leading=12),
        right_tiny=_style("right_tiny", 7, leading=9, color=_GREY, align=TA_RIGHT),
    )


# --------------------------------------------------------------------------
# Page geometry (A4 portrait, DIN 5008 form B)
# --------------------------------------------------------------------------

PAGE_W, PAGE_H = A4
_LEFT: Final = 25 * mm
_RIGHT: Final = 20 * mm
_TEXT_W: Final = PAGE_W - _LEFT - _RIGHT

_WINDOW_X: Final = 20 * mm
_WINDOW_TOP: Final = PAGE_H - 45 * mm
_WINDOW_W: Final = 85 * mm
_WINDOW_H: Final = 45 * mm
_WINDOW_PAD: Final = 5 * mm
_WINDOW_NOTE_H: Final = 17.7 * mm  # Zusatz- und Vermerkzone

_INFO_X: Final = 125 * mm
_INFO_TOP: Final = PAGE_H - 50 * mm
_INFO_W: Final = PAGE_W - _RIGHT - _INFO_X

_BODY_TOP_FIRST: Final = PAGE_H - 98.5 * mm
_BODY_TOP_LATER: Final = PAGE_H - 30 * mm
_FOOTER_TOP: Final = 40 * mm
_BODY_BOTTOM: Final = _FOOTER_TOP + 4 * mm
_QR_SIZE: Final = 25 * mm


def _fit(text: str, font: str, size: float, max_width: float) -> str:
    """Truncate ``text`` with an ellipsis so that it fits into ``max_width``."""
    if pdfmetrics.stringWidth(text, font, size) <= max_width:
        return text
    while text and pdfmetrics.stringWidth(text + "…", font, size) > max_width:
        text = text[:-1]
    return text + "…"


def _draw_box(c: Canvas, flowables: list[Flowable], x: float, top: float, width: float,
              height: float) -> float:
    """Draw flowables in a box (shrinking them if they do not fit); return used height."""
    box = KeepInFrame(width, height, flowables, mode="shrink")
    _, h = box.wrapOn(c, width, height)
    box.drawOn(c, x, top - h)
    return h


class _LetterDoc(BaseDocTemplate):
    """Doc template that pins the PDF dates and /ID to values derived from the data."""

    def __init__(self, buf: io.BytesIO, *, pdf_date: str, pdf_id: bytes, **kw: object) -> None:
        self._pdf_date = pdf_date
        self._pdf_id = pdf_id
        super().__init__(buf, **kw)

    def beforeDocument(self) -> None:
        pdf_date = self._pdf_date
        self.canv.setDateFormatter(lambda *_: pdf_date)
        # invariant mode already makes /ID constant, but reportlab would still
        # mix in SOURCE_DATE_EPOCH from the environment; pin it explicitly.
        pdf_doc = getattr(self.canv, "_doc", None)
        if pdf_doc is not None and hasattr(pdf_doc, "_ID"):
            pdf_doc._ID = self._pdf_id


def _pdf_id(data: DocumentData) -> bytes:
    digest = hashlib.sha256(repr(data).encode("utf-8")).hexdigest()[:32].upper()
    return f"\n[<{digest}><{digest}>]\n% aktenlauf generated PDF document\n".encode("ascii")


# --------------------------------------------------------------------------
# Page decorations
# --------------------------------------------------------------------------


class _Decorator:
    def __init__(self, data: DocumentData, st: _Styles, total_pages: int | None) -> None:
        self.data = data
        self.st = st
        self.total_pages = total_pages
        self.url = data.verify_url

    # -- common ---------------------------------------------------------
    def _marks(self, c: Canvas) -> None:
        c.setStrokeColor(_RULE)
        c.setLineWidth(0.4)
        for from_top in (105 * mm, 210 * mm):  # fold marks (form B)
            c.line(3 * mm, PAGE_H - from_top, 8 * mm, PAGE_H - from_top)
        c.line(3 * mm, PAGE_H / 2, 10 * mm, PAGE_H / 2)  # hole mark

    def _footer(self, c: Canvas, page: int) -> None:
        st, data = self.st, self.data
        c.setStrokeColor(_RULE)
        c.setLineWidth(0.5)
        c.line(_LEFT, _FOOTER_TOP, PAGE_W - _RIGHT, _FOOTER_TOP)

        qr_x = PAGE_W - _RIGHT - _QR_SIZE
        qr_y = _FOOTER_TOP - 2 * mm - _QR_SIZE
        _draw_qr(c, self.url, qr_x, qr_y, _QR_SIZE)
        c.linkURL(self.url, (qr_x, qr_y, qr_x + _QR_SIZE, qr_y + _QR_SIZE), relative=0)

        text_w = qr_x - _LEFT - 5 * mm
        url_markup = _esc(self.url)
        _draw_box(
            c,
            [
                Paragraph(f"Prüfcode: {_esc(data.verification_code)}", st.small_bold),
                Spacer(0, 1.5),
                Paragraph(
                    f'Echtheit prüfen: <link href="{_xml_escape(self.url, {chr(34): "&quot;"})}">'
                    f"{url_markup}</link>",
                    st.small,
                ),
                Spacer(0, 1.5),
                Paragraph(
                    (f"Dieses Dokument trägt das elektronische Siegel der Behörde ({_esc(data.authority.name)}) "
                     "und ist ohne Unterschrift gültig. " if data.sealed else
                     "Dieses Dokument wurde maschinell erstellt und ist ohne Unterschrift gültig. ")
                    + "Die Echtheit kann mit dem Prüfcode unter der angegebenen Adresse oder über "
                    "den QR-Code geprüft werden.",
                    st.tiny,
                ),
            ],
            _LEFT,
            _FOOTER_TOP - 2.5 * mm,
            text_w,
            _FOOTER_TOP - 16 * mm,
        )
        total = self.total_pages
        label = f"Seite {page} von {total}" if total else f"Seite {page}"
        c.setFont(_FONT, 7)
        c.setFillColor(_GREY)
        c.drawRightString(PAGE_W - _RIGHT, 8 * mm, label)
        left_text = f"{_clean(data.authority.name)} · Az. {_clean(data.aktenzeichen)}".replace("\n", " ")
        max_w = _TEXT_W - pdfmetrics.stringWidth(label, _FONT, 7) - 8 * mm
        c.drawString(_LEFT, 8 * mm, _fit(left_text, _FONT, 7, max_w))

    # -- first page ---------------------------------------------------------
    def first_page(self, c: Canvas, doc: BaseDocTemplate) -> None:
        c.saveState()
        self._letterhead(c)
        self._address_window(c)
        self._info_block(c)
        self._marks(c)
        self._footer(c, doc.page)
        c.restoreState()

    def _letterhead(self, c: Canvas) -> None:
        st, auth = self.st, self.data.authority
        top = PAGE_H - 14 * mm
        left_w = 100 * mm
        _draw_box(
            c,
            [Paragraph(_esc(auth.name), st.head_name), Paragraph(_esc(auth.department), st.head_dept)],
            _LEFT, top, left_w, 24 * mm,
        )
        addr_x = _LEFT + left_w + 5 * mm
        _draw_box(
            c,
            [Paragraph(_esc(line), st.head_addr) for line in auth.address_lines],
            addr_x, top, PAGE_W - _RIGHT - addr_x, 24 * mm,
        )
        c.setStrokeColor(_ACCENT)
        c.setLineWidth(1.2)
        c.line(_LEFT, PAGE_H - 40 * mm, PAGE_W - _RIGHT, PAGE_H - 40 * mm)

    def _address_window(self, c: Canvas) -> None:
        st, data = self.st, self.data
        auth = data.authority
        inner_x = _WINDOW_X + _WINDOW_PAD
        inner_w = _WINDOW_W - 2 * _WINDOW_PAD
        return_line = " · ".join(
            _clean(p) for p in (auth.name, auth.department, *auth.address_lines) if p.strip()
        )
        # Rücksendeangabe at the bottom of the Zusatz- und Vermerkzone
        note_bottom = _WINDOW_TOP - _WINDOW_NOTE_H
        _draw_box(c, [Paragraph(_xml_escape(return_line), st.return_line)],
                  inner_x, note_bottom + 2 + 2 * st.return_line.leading, inner_w,
                  2 * st.return_line.leading)
        c.setStrokeColor(_RULE)
        c.setLineWidth(0.3)
        c.line(inner_x, note_bottom + 1, inner_x + inner_w, note_bottom + 1)
        lines = [Paragraph(_esc(data.applicant_name), st.address)]
        lines += [Paragraph(_esc(line), st.address) for line in data.applicant_address_lines]
        _draw_box(c, lines, inner_x, note_bottom - 1.5 * mm, inner_w,
                  _WINDOW_H - _WINDOW_NOTE_H - 2 * mm)

    def _info_block(self, c: Canvas) -> None:
        st, data = self.st, self.data
        rows: list[tuple[str, str]] = [
            ("Dienststelle", data.authority.department),
            ("Aktenzeichen", data.aktenzeichen),
            *((("Ihre Vorgangsnummer", data.applicant_ref),) if data.applicant_ref else ()),
            ("Datum", format_date_de(data.issued_on)),
            ("Prüfcode", data.verification_code),
        ]
        flow: list[Flowable] = []
        for label, value in rows:
            flow.append(Paragraph(_esc(label), st.info_label))
            flow.append(Paragraph(_esc(value), st.info_value))
            flow.append(Spacer(0, 2))
        _draw_box(c, flow, _INFO_X, _INFO_TOP, _INFO_W, _INFO_TOP - (_BODY_TOP_FIRST + 3 * mm))

    # -- later pages ----------------------------------------------------
    def later_page(self, c: Canvas, doc: BaseDocTemplate) -> None:
        st, data = self.st, self.data
        c.saveState()
        _draw_box(
            c,
            [
                Paragraph(
                    f"<b>{_esc(data.authority.name)}</b> · {_esc(data.authority.department)}",
                    st.small,
                ),
                Paragraph(
                    f"{_esc(data.title)} · Az. {_esc(data.aktenzeichen)} · "
                    f"{format_date_de(data.issued_on)}",
                    st.small,
                ),
            ],
            _LEFT, PAGE_H - 12 * mm, _TEXT_W, 14 * mm,
        )
        c.setStrokeColor(_ACCENT)
        c.setLineWidth(0.8)
        c.line(_LEFT, PAGE_H - 26 * mm, PAGE_W - _RIGHT, PAGE_H - 26 * mm)
        self._marks(c)
        self._footer(c, doc.page)
        c.restoreState()


@functools.lru_cache(maxsize=32)
def qr_modules(value: str) -> tuple[tuple[bool, ...], ...]:
    """The QR code's module matrix (error correction M), computed once per value: both layout
    passes draw the same code."""
    code = qrencoder.QRCode(None, qrencoder.QRErrorCorrectLevel.M)
    code.addData(value)
    code.make()
    return tuple(tuple(bool(m) for m in row) for row in code.modules)


def qr_image(value: str, border: int = 2) -> Image.Image:
    """The QR code as a 1-bit image, one pixel per module, with a quiet zone of ``border``."""
    rows = qr_modules(value)
    n = len(rows) + 2 * border
    img = Image.new("1", (n, n), 1)
    px = img.load()
    for r, row in enumerate(rows):
        for col, dark in enumerate(row):
            if dark:
                px[col + border, r + border] = 0
    return img


def _draw_qr(c: Canvas, value: str, x: float, y: float, size: float) -> None:
    """Draw the QR code as one small image scaled to ``size`` (PDF viewers do not interpolate
    images unless asked, so the modules stay sharp). As a graphics widget it was ~600 validated
    shape objects, and as vector rectangles it still tripled the cost of extracting the
    certificate's text for the search index."""
    c.drawImage(ImageReader(qr_image(value)), x, y, size, size)


# --------------------------------------------------------------------------
# Story (body content)
# --------------------------------------------------------------------------


def _facts_table(facts: Sequence[tuple[str, str]], st: _Styles) -> Table:
    rows = [
        [Paragraph(_esc(label), st.label), Paragraph(_esc(value), st.value)]
        for label, value in facts
    ]
    label_w = 55 * mm
    table = Table(rows, colWidths=[label_w, _TEXT_W - label_w], hAlign="LEFT",
                  splitByRow=1, splitInRow=1)
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (0, -1), _TABLE_BG),
        ("LINEBELOW", (0, 0), (-1, -1), 0.3, _RULE),
        ("LINEABOVE", (0, 0), (-1, 0), 0.3, _RULE),
        ("LEFTPADDING", (0, 0), (-1, -1), 5),
        ("RIGHTPADDING", (0, 0), (-1, -1), 5),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


def _remedy_notice(auth: Authority) -> str:
    place = ", ".join(_clean(p) for p in (auth.name, auth.department, *auth.address_lines) if p.strip())
    return (
        "Gegen diesen Bescheid kann innerhalb eines Monats nach seiner Bekanntgabe Widerspruch "
        "erhoben werden. Der Widerspruch ist schriftlich, in elektronischer Form oder zur "
        f"Niederschrift einzulegen bei: {_xml_escape(place)}."
    )


_AUTOMATED_NOTE: Final = (
    "Dieses Schreiben wurde mit Hilfe automatischer Einrichtungen erstellt und ist ohne "
    "Unterschrift gültig (§ 37 Abs. 5 VwVfG)."
)


_BOLD_RE: Final = re.compile(r"\*\*(.+?)\*\*", re.S)


def _markup(text: str) -> str:
    """Template text to paragraph markup: escaped, ``**bold**`` and line breaks kept."""
    return _BOLD_RE.sub(r"<b>\1</b>", _esc(text))


def _builtin_intro(data: DocumentData) -> list[str]:
    """The wording used when no template text is given (direct use of this module)."""
    name, service, az = data.applicant_name, data.service_name, data.aktenzeichen
    if data.kind == "certificate":
        return [f"Auf Antrag von **{name}** wird hiermit Folgendes bescheinigt:"]
    if data.kind == "rejection":
        return [f"Guten Tag {name},", f"Ihr Antrag auf **{service}** (Aktenzeichen {az}) wird abgelehnt."]
    if data.kind == "nachforderung":
        return [f"Guten Tag {name},",
                f"um Ihren Antrag auf **{service}** (Aktenzeichen {az}) bearbeiten zu können, benötigen wir "
                "noch die folgenden Unterlagen:"]
    if data.kind == "cancellation":
        return [f"Guten Tag {name},", f"das Verfahren zu Ihrem Antrag auf **{service}** (Aktenzeichen {az}) "
                                      "wird eingestellt."]
    return [f"Guten Tag {name},", f"hiermit bestätigen wir, dass Sie Ihren Antrag auf **{service}** "
                                  f"(Aktenzeichen {az}) zurückgenommen haben. Das Verfahren ist damit beendet."]


def _items_list(items: Sequence[str], st: _Styles) -> list[Flowable]:
    return [Paragraph(_esc(item), st.body, bulletText="•") for item in items]


def _story(data: DocumentData, st: _Styles) -> list[Flowable]:
    story: list[Flowable] = [Paragraph(_esc(data.title), st.title)]
    intro = list(data.intro) or _builtin_intro(data)
    story += [Paragraph(_markup(p), st.body) for p in intro]
    if data.kind == "certificate":
        if data.facts:
            story += [Spacer(0, 2), _facts_table(data.facts, st), Spacer(0, 8)]
    elif data.kind == "nachforderung":
        story += _items_list(data.items, st)
        assert data.due_on is not None  # guaranteed by _validate
        story.append(Paragraph(f"<b>Bitte reichen Sie die Unterlagen bis zum {format_date_de(data.due_on)} "
                               "ein.</b>", st.body))
    elif data.facts:
        story += [Paragraph("Angaben zum Antrag", st.heading), _facts_table(data.facts, st), Spacer(0, 4)]
    if data.reason and data.reason.strip():
        story += [Paragraph("Begründung" if data.kind in _REMEDY_KINDS else "Anmerkung", st.heading),
                  Paragraph(_esc(data.reason), st.body)]
    if data.details:
        story += [Spacer(0, 4), _facts_table(data.details, st), Spacer(0, 6)]
    if data.fee_cents:
        story.append(Paragraph(f"<b>Gebühr: {format_eur(data.fee_cents)}</b>", st.body))
    story += [Paragraph(_markup(p), st.body) for p in data.closing]
    if data.kind in _REMEDY_KINDS:
        story += [Paragraph("Rechtsbehelfsbelehrung", st.heading), Paragraph(_remedy_notice(data.authority), st.body),
                  Spacer(0, 4)]
    story.append(Paragraph(_AUTOMATED_NOTE, st.body))
    return story


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _build(data: DocumentData, total_pages: int | None) -> tuple[bytes, int]:
    st = _styles()
    deco = _Decorator(data, st, total_pages)
    buf = io.BytesIO()
    doc = _LetterDoc(
        buf,
        pdf_date=f"D:{data.issued_on:%Y%m%d}000000+00'00'",
        pdf_id=_pdf_id(data),
        pagesize=A4,
        leftMargin=_LEFT,
        rightMargin=_RIGHT,
        topMargin=PAGE_H - _BODY_TOP_LATER,
        bottomMargin=_BODY_BOTTOM,
        title=_clean(data.title),
        author=_clean(data.authority.name),
        subject=_clean(data.aktenzeichen),
        creator="aktenlauf",
        keywords="",
        lang="de-DE",
        initialFontName=_FONT,
        initialFontSize=10,
        invariant=1,
        pageCompression=1,
    )
    first = Frame(_LEFT, _BODY_BOTTOM, _TEXT_W, _BODY_TOP_FIRST - _BODY_BOTTOM,
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0, id="first")
    later = Frame(_LEFT, _BODY_BOTTOM, _TEXT_W, _BODY_TOP_LATER - _BODY_BOTTOM,
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0, id="later")
    on_first: Callable[[Canvas, BaseDocTemplate], None] = deco.first_page
    on_later: Callable[[Canvas, BaseDocTemplate], None] = deco.later_page
    doc.addPageTemplates([
        PageTemplate(id="first", frames=[first], onPage=on_first, autoNextPageTemplate="later"),
        PageTemplate(id="later", frames=[later], onPage=on_later),
    ])
    doc.build(_story(data, st))
    return buf.getvalue(), doc.page


def document_text(data: DocumentData) -> str:
    """The letter's words as plain text, for the full-text index: letterhead, address, the info
    block and the body in reading order, taken from the content the layout is built from (reading
    them back out of the rendered PDF cost as much as rendering it)."""
    auth = data.authority
    parts: list[str] = [auth.name, auth.department, *auth.address_lines,
                        data.applicant_name, *data.applicant_address_lines,
                        f"Dienststelle {auth.department}", f"Aktenzeichen {data.aktenzeichen}"]
    if data.applicant_ref:
        parts.append(f"Ihre Vorgangsnummer {data.applicant_ref}")
    parts += [f"Datum {format_date_de(data.issued_on)}", f"Prüfcode {data.verification_code}"]

    def plain(flowable: object) -> None:
        if isinstance(flowable, Paragraph):
            parts.append(flowable.getPlainText())
        elif isinstance(flowable, Table):
            for row in flowable._cellvalues:  # noqa: SLF001 - the cells as given to the table
                cells = [c.getPlainText() if isinstance(c, Paragraph) else str(c) for c in row]
                parts.append(" ".join(cells))

    with _LOCK:
        _register_fonts()
        for flowable in _story(data, _styles()):
            plain(flowable)
    return "\n".join(_clean(p).strip() for p in parts if p and p.strip())


def render_document(data: DocumentData) -> bytes:
    """Render ``data`` as a PDF; deterministic (same data -> same bytes)."""
    _validate(data)
    with _LOCK:
        _register_fonts()
        # The footer says "Seite x von y", and y is known only after layout. Most letters have one
        # page, so lay out for one; a longer letter is laid out again with its real page count.
        # The footer never changes the body's flow, so either way the bytes are those of a layout
        # that was told the right total (the same as two passes would give).
        pdf, pages = _build(data, 1)
        if pages != 1:
            pdf, pages2 = _build(data, pages)
            if pages2 != pages:  # pragma: no cover - footer text never affects the body flow
                raise RuntimeError("page count changed between layout passes")
    return _make_pdfa(pdf, data)


# --------------------------------------------------------------------------
# PDF/A-2b
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    """The sRGB ICC profile pikepdf ships for exactly this purpose (PDF/A output intents)."""
    import importlib.resources

    return (importlib.resources.files("pikepdf") / "pdfa" / "data" / "sRGB.icc").read_bytes()


def _xmp_date(d: datetime.date) -> str:
    return f"{d:%Y-%m-%d}T00:00:00+00:00"


def _xmp(data: DocumentData) -> bytes:
    def x(text: str) -> str:
        return _xml_escape(_clean(text).replace("\n", " "), {'"': "&quot;"})

    title, author, subject = x(data.title), x(data.authority.name), x(data.aktenzeichen)
    when = _xmp_date(data.issued_on)
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   <pdfaid:part>2</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>{author}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{subject}</rdf:li></rdf:Alt></dc:description>
   <dc:language><rdf:Bag><rdf:li>de-DE</rdf:li></rdf:Bag></dc:language>
   <xmp:CreatorTool>aktenlauf</xmp:CreatorTool>
   <xmp:CreateDate>{when}</xmp:CreateDate>
   <xmp:ModifyDate>{when}</xmp:ModifyDate>
   <xmp:MetadataDate>{when}</xmp:MetadataDate>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode("utf-8")


def _make_pdfa(pdf: bytes, data: DocumentData) -> bytes:
    """Turn reportlab's output into a file that claims and (as far as we can check) satisfies
    PDF/A-2b; deterministic (pikepdf's content-derived /ID, dates from ``issued_on``)."""
    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as doc:
        pdf_date = f"D:{data.issued_on:%Y%m%d}000000+00'00'"
        info = doc.docinfo
        for key in list(info.keys()):  # keep only entries the XMP above mirrors
            if key not in ("/Title", "/Author", "/Subject", "/Creator", "/CreationDate", "/ModDate"):
                del info[key]
        info.Title, info.Author = _clean(data.title), _clean(data.authority.name)
        info.Subject, info.Creator = _clean(data.aktenzeichen), "aktenlauf"
        info.CreationDate = info.ModDate = pdf_date
        # no /Producer: the seal's incremental update writes one to the Info dictionary and the
        # XMP alike (pyHanko's name); a producer set here would differ between the two afterwards
        meta = pikepdf.Stream(doc, _xmp(data))
        meta.Type, meta.Subtype = pikepdf.Name.Metadata, pikepdf.Name.XML
        doc.Root.Metadata = doc.make_indirect(meta)
        icc = pikepdf.Stream(doc, _srgb_profile())
        icc.N = 3
        doc.Root.OutputIntents = pikepdf.Array([doc.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.OutputIntent, S=pikepdf.Name.GTS_PDFA1,
            OutputConditionIdentifier=pikepdf.String("sRGB IEC61966-2.1"),
            Info=pikepdf.String("sRGB IEC61966-2.1"),
            DestOutputProfile=doc.make_indirect(icc),
        ))])
        for page in doc.pages:
            if "/Trans" in page.obj:
                del page.obj.Trans  # reportlab's empty transition dictionary
            for annot in page.obj.get("/Annots", []):
                annot.F = 4  # PDF/A: annotations are printed, never hidden
        out = io.BytesIO()
        doc.save(out, deterministic_id=True, compress_streams=True,
                 object_stream_mode=pikepdf.ObjectStreamMode.disable, fix_metadata_version=False)
        return out.getvalue()
