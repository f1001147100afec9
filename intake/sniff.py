"""Decide what an incoming file is and whether we may even try to OCR it.

Everything here runs in the parent process (the worker that hosts the Temporal
activity), so it must never decode image data: a 11 KB PDF can declare a
35000 x 35000 pixel image (``hugemono.pdf``), and decoding it would cost
gigabytes of memory and tens of seconds.  Instead we judge files by what they
*declare*:

* PDFs are opened with pikepdf (qpdf), which parses the object structure but
  decodes no streams.  For every page we look at the MediaBox (rendered at
  :data:`RASTER_DPI`) and at the ``/Width`` x ``/Height`` of every image
  XObject reachable from the page, recursively through Form XObjects, tiling
  patterns and soft masks.
* Images are opened lazily with Pillow, which reads only the header; the size
  is checked before anything calls ``load()``.

What this does not see (inline images inside content streams, images placed
at absurd resolutions, streams that inflate to gigabytes) is bounded by the
second line of defence in :mod:`intake.ocr`: the OCR child runs with
``RLIMIT_AS``/``RLIMIT_CPU`` and a wall-clock timeout, and
:mod:`intake.ocr_job` re-checks the raster size ocrmypdf will actually use.

Encryption policy:

* A PDF that needs a *user* password to open is refused (``encrypted``): we
  cannot read it, and guessing passwords is not our business.
* A PDF with only an *owner* password (``encrypted-ownerpw.pdf``) opens
  without a password; the restriction flags (no printing, no copying, ...) are
  advisory.  It is a legitimate letter, so we process it: ``InputInfo`` reports
  ``encrypted=True`` and the OCR child removes the encryption on a private copy
  in its work directory before handing it to ocrmypdf (which refuses any
  encrypted input).  The original file is never modified.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pikepdf
import structlog
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader
from pypdf.errors import PdfReadError

log = structlog.get_logger(__name__)

Kind = Literal["pdf", "png", "tiff", "jpeg"]

MIB = 1024 * 1024
#: Resolution at which a page without images is assumed to be rasterised.
RASTER_DPI = 300
#: A PDF may have junk before its header; readers accept it within 1 KiB.
PDF_HEADER_WINDOW = 1024
#: How deep we follow nested Form XObjects before calling the file hostile.
MAX_XOBJECT_DEPTH = 12

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
_JPEG_MAGIC = b"\xff\xd8\xff"


class IntakeRejected(Exception):
    """A file we refuse to process, with a code for machines and a reason for people.

    ``code`` is stable and machine-readable (``not_a_supported_file``,
    ``unreadable_pdf``, ``encrypted``, ``too_many_pages``, ``image_too_large``,
    ``file_too_large``, ``empty``, ``unsupported_pdf``, ``unreadable_image``,
    ``unreadable_file``, and from the OCR step ``ocr_timeout``, ``ocr_failed``,
    ``resource_limit``, ``digitally_signed``).  ``reason`` is one or two plain
    English sentences a mailroom clerk can act on.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class IntakeLimits:
    """Resource limits for one intake/OCR job."""

    max_bytes: int = 50 * MIB
    max_pages: int = 200
    #: Pixels of the largest image or page (at :data:`RASTER_DPI`), as declared.
    max_page_pixels: int = 120_000_000
    #: Sum over all pages of the per-page pixel count above.
    max_total_pixels: int = 2_000_000_000
    timeout_per_page_s: float = 60.0
    min_timeout_s: float = 60.0
    memory_limit_mb: int = 2048
    tesseract_threads: int = 1


@dataclass(frozen=True)
class InputInfo:
    """What :func:`inspect_file` learned about an input without decoding it."""

    kind: Kind
    pages: int
    #: Born-digital content: at least one page already has extractable text.
    has_text_layer: bool
    #: Encrypted, but readable without a password (owner password only).
    encrypted: bool
    #: Pixels of the largest declared image or page raster.
    max_page_pixels: int


def detect_kind(head: bytes) -> Kind | None:
    """Identify a supported file type from its first bytes (magic numbers)."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_TIFF_MAGICS):
        return "tiff"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if b"%PDF-" in head[:PDF_HEADER_WINDOW]:
        return "pdf"
    return None


def inspect_file(path: Path, limits: IntakeLimits) -> InputInfo:
    """Check a file cheaply and refuse it with :class:`IntakeRejected` if needed.

    No image data is decoded; see the module docstring for what is checked.
    """
    size = _file_size(path)
    if size == 0:
        raise IntakeRejected("empty", "The file is empty (0 bytes); ask the sender to send it again.")
    if size > limits.max_bytes:
        raise IntakeRejected(
            "file_too_large",
            f"The file is {_mib(size)} MB; the limit is {_mib(limits.max_bytes)} MB. "
            "Ask the sender to split it or scan at a lower resolution.",
        )
    kind = detect_kind(_read_head(path))
    if kind is None:
        raise IntakeRejected(
            "not_a_supported_file",
            "The file is not a PDF, PNG, TIFF or JPEG file, so it cannot be read.",
        )
    info = _inspect_pdf(path, limits) if kind == "pdf" else _inspect_image(path, kind, limits)
    log.debug("intake.inspected", path=str(path), kind=info.kind, pages=info.pages,
              has_text_layer=info.has_text_layer, encrypted=info.encrypted,
              max_page_pixels=info.max_page_pixels)
    return info


# --------------------------------------------------------------------------- helpers


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise IntakeRejected("unreadable_file", "The file could not be read from storage.") from exc


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(PDF_HEADER_WINDOW)
    except OSError as exc:
        raise IntakeRejected("unreadable_file", "The file could not be read from storage.") from exc


def _check_pixels(page_pixels: list[int], limits: IntakeLimits) -> int:
    """Apply the per-page and total pixel limits; return the largest page."""
    largest = max(page_pixels, default=0)
    if largest > limits.max_page_pixels:
        raise IntakeRejected(
            "image_too_large",
            f"A page or image is far too large ({largest / 1e6:.0f} megapixels; the limit is "
            f"{limits.max_page_pixels / 1e6:.0f}). Ask the sender to scan at a normal "
            "resolution such as 300 dpi.",
        )
    total = sum(page_pixels)
    if total > limits.max_total_pixels:
        raise IntakeRejected(
            "file_too_large",
            f"The document is too large to process ({total / 1e6:.0f} megapixels in total; "
            f"the limit is {limits.max_total_pixels / 1e6:.0f}). Ask the sender to split it.",
        )
    return largest


def _check_page_count(pages: int, limits: IntakeLimits) -> None:
    if pages == 0:
        raise IntakeRejected("empty", "The document has no pages.")
    if pages > limits.max_pages:
        raise IntakeRejected(
            "too_many_pages",
            f"The document has {pages} pages; at most {limits.max_pages} can be processed. "
            "Ask the sender to split it into several documents.",
        )


# --------------------------------------------------------------------------- images


def _inspect_image(path: Path, kind: Kind, limits: IntakeLimits) -> InputInfo:
    """Read only the image header(s) and check the declared pixel size."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 Mpx; our own limit decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: reads the header only
                frames = int(getattr(im, "n_frames", 1))
                _check_page_count(frames, limits)
                sizes = list(_frame_pixels(im, frames))
    except Image.DecompressionBombError as exc:
        raise IntakeRejected(
            "image_too_large",
            "The image is far too large (hundreds of megapixels). Ask the sender to scan at a "
            "normal resolution such as 300 dpi.",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IntakeRejected(
            "unreadable_image",
            f"The {kind.upper()} image is damaged or in a variant that cannot be read.",
        ) from exc
    largest = _check_pixels(sizes, limits)
    return InputInfo(kind=kind, pages=frames, has_text_layer=False, encrypted=False,
                     max_page_pixels=largest)


def _frame_pixels(im: Image.Image, frames: int) -> Iterator[int]:
    """Declared pixel count of every frame (``seek`` reads headers, not pixels)."""
    for index in range(frames):
        if index:
            im.seek(index)
        width, height = im.size
        yield width * height


# --------------------------------------------------------------------------- PDFs


def _inspect_pdf(path: Path, limits: IntakeLimits) -> InputInfo:
    try:
        pdf = pikepdf.open(path)
    except pikepdf.PasswordError as exc:
        raise IntakeRejected(
            "encrypted",
            "The PDF is encrypted with a password; ask the sender for an unprotected copy.",
        ) from exc
    except Exception as exc:  # qpdf raises PdfError, but also others on garbage
        raise IntakeRejected(
            "unreadable_pdf",
            "The PDF is damaged or incomplete and cannot be opened; ask the sender to "
            "send it again.",
        ) from exc
    with pdf:
        try:
            return _inspect_open_pdf(path, pdf, limits)
        except IntakeRejected:
            raise
        except Exception as exc:  # broken page tree, bad object types, ...
            raise IntakeRejected(
                "unreadable_pdf",
                "The PDF is damaged and its pages cannot be read; ask the sender to send "
                "it again.",
            ) from exc


def _inspect_open_pdf(path: Path, pdf: pikepdf.Pdf, limits: IntakeLimits) -> InputInfo:
    pages = len(pdf.pages)
    _check_page_count(pages, limits)
    if bool(pdf.Root.get("/NeedsRendering", False)):
        raise IntakeRejected(
            "unsupported_pdf",
            "The PDF is a dynamic form (Adobe LiveCycle/XFA) that only Adobe Reader can "
            "display; ask the sender to print it to a normal PDF.",
        )
    page_pixels = [_page_pixels(page) for page in pdf.pages]
    largest = _check_pixels(page_pixels, limits)
    return InputInfo(kind="pdf", pages=pages, has_text_layer=_has_text_layer(path),
                     encrypted=pdf.is_encrypted, max_page_pixels=largest)


def _page_pixels(page: pikepdf.Page) -> int:
    """Largest of: the page rasterised at RASTER_DPI, and any image it uses."""
    box = page.mediabox
    userunit = float(page.obj.get("/UserUnit", 1))
    width_in = abs(float(box[2]) - float(box[0])) * userunit / 72.0
    height_in = abs(float(box[3]) - float(box[1])) * userunit / 72.0
    raster = int(width_in * RASTER_DPI) * int(height_in * RASTER_DPI)
    images = _max_image_pixels(page.obj.get("/Resources"), depth=0, seen=set())
    return max(raster, images)


def _max_image_pixels(resources: object, depth: int, seen: set[tuple[int, int]]) -> int:
    """Largest declared image in a resource dictionary, following nested forms."""
    if not isinstance(resources, pikepdf.Dictionary) or depth > MAX_XOBJECT_DEPTH:
        return 0
    largest = 0
    for category in ("/XObject", "/Pattern"):
        entries = resources.get(category)
        if not isinstance(entries, pikepdf.Dictionary):
            continue
        for _, obj in entries.items():
            largest = max(largest, _object_pixels(obj, depth, seen))
    return largest


def _object_pixels(obj: object, depth: int, seen: set[tuple[int, int]]) -> int:
    if not isinstance(obj, (pikepdf.Stream, pikepdf.Dictionary)):
        return 0
    if obj.is_indirect:
        if obj.objgen in seen:
            return 0
        seen.add(obj.objgen)
    if obj.get("/Subtype") == pikepdf.Name.Image:
        own = _declared_int(obj, "/Width") * _declared_int(obj, "/Height")
        return max(own, _object_pixels(obj.get("/SMask"), depth + 1, seen))
    # Form XObjects and tiling patterns carry their own resources.
    return _max_image_pixels(obj.get("/Resources"), depth + 1, seen)


def _declared_int(obj: pikepdf.Object, key: str) -> int:
    value = obj.get(key)
    try:
        return max(0, int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _has_text_layer(path: Path) -> bool:
    """True if any page already yields text (born-digital or previously OCRed)."""
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")
        return any(_page_has_text(page) for page in reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, NotImplementedError) as exc:
        log.info("intake.text_probe_failed", path=str(path), error=type(exc).__name__)
        return False


def _page_has_text(page: object) -> bool:
    try:
        return bool(page.extract_text().strip())  # type: ignore[attr-defined]
    except Exception:  # pypdf raises many types on odd content streams
        return False
