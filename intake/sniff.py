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

* Every compressed stream of a PDF (content streams, fonts, images, object
  streams, ...) is decoded *incrementally* (``zlib.decompressobj`` with
  ``max_length``, LZW and RunLength likewise), counting the output and keeping
  at most one chunk in memory, never trusting ``/Length`` or a declared size.
  A stream that expands past its cap, or a file whose streams together do, is
  refused as ``decompression_bomb`` (a 1 KB "flate bomb" that inflates to
  256 MiB is refused after a few MiB, in milliseconds).  Caps: an image may
  expand to twice its declared raw size (``/Width`` x ``/Height`` x components
  x bits) plus 1 MiB; any other stream to ``max(8 MiB, 200 x its stored
  size)``, at most 256 MiB; all streams together to
  ``IntakeLimits.max_inflated_bytes`` (1 GiB).  The corpus in
  ``shared/corpus/scans`` stays far below: its highest non-image stream
  expands 700x to 128 KiB, its largest image (``enormous.pdf``, 9000 x 9000
  RGB, 784x) to exactly its declared 243 MB, which costs ~0.8 s to verify.

What this does not see (inline images inside content streams, images placed
at absurd resolutions, streams qpdf itself must decode to parse the file,
i.e. cross-reference and object streams) is bounded by the
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

import unicodedata

import base64
import binascii
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator
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
    ``unreadable_file``, ``decompression_bomb``, and from the OCR step ``ocr_timeout``, ``ocr_failed``,
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
    #: All compressed streams of a PDF together, decoded (see :func:`_check_inflation`).
    max_inflated_bytes: int = 1024 * MIB


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


def inspect_file(path: Path, limits: IntakeLimits, *, probe_text: bool = True) -> InputInfo:
    """Check a file cheaply and refuse it with :class:`IntakeRejected` if needed.

    No image data is decoded; see the module docstring for what is checked.  This one
    function decides for the mailroom (before OCR, :func:`intake.ocr.run_ocr`) and for
    uploaded case documents (``api.uploads.store_upload``); only the limits differ.
    ``probe_text=False`` skips the text-layer probe (``has_text_layer`` is then False),
    for callers that only want the verdict.
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
    if kind == "pdf":
        info = _inspect_pdf(path, limits, probe_text=probe_text)
    else:
        info = _inspect_image(path, kind, limits)
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


def _inspect_pdf(path: Path, limits: IntakeLimits, *, probe_text: bool) -> InputInfo:
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
            return _inspect_open_pdf(path, pdf, limits, probe_text=probe_text)
        except IntakeRejected:
            raise
        except Exception as exc:  # broken page tree, bad object types, ...
            raise IntakeRejected(
                "unreadable_pdf",
                "The PDF is damaged and its pages cannot be read; ask the sender to send "
                "it again.",
            ) from exc


def _inspect_open_pdf(path: Path, pdf: pikepdf.Pdf, limits: IntakeLimits, *,
                      probe_text: bool = True) -> InputInfo:
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
    # after the cheap declared-size checks, before anything (pypdf's text probe, the OCR
    # child) decodes a content stream in one piece
    _check_inflation(pdf, limits)
    has_text = _has_text_layer(path) if probe_text else False
    return InputInfo(kind="pdf", pages=pages, has_text_layer=has_text,
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
        for obj in entries.values():
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
    except Exception:  # noqa: BLE001 - pypdf raises many types on odd content streams
        return False


# --------------------------------------------------------------------------- compressed streams

KIB = 1024
#: Most output one decoding step produces: what a stream expands to never sits in memory.
INFLATE_CHUNK = 1 * MIB
#: Stored bytes handed to a decoder at a time.
_FEED = 256 * KIB
#: A stream that is not an image may expand this far without its ratio being judged ...
STREAM_RATIO_FLOOR = 8 * MIB
#: ... and beyond that to this many times its stored size (text, fonts: 2-10x) ...
MAX_STREAM_RATIO = 200
#: ... but never past this.
MAX_STREAM_BYTES = 256 * MIB
#: An image may expand to this many times its declared raw size, plus 1 MiB.
IMAGE_SLACK = 2

_BOMB_REASON = (
    "The PDF contains packed data that would expand to an enormous size when opened "
    "(a so-called decompression bomb), so it was not processed. Genuine scans and letters "
    "never do this: do not try to open the file, and ask the sender for a normally saved copy."
)
_COMPONENTS = {"/DeviceGray": 1, "/CalGray": 1, "/G": 1, "/Indexed": 1, "/I": 1, "/Separation": 1,
               "/Pattern": 1, "/DeviceRGB": 3, "/CalRGB": 3, "/RGB": 3, "/Lab": 3,
               "/DeviceCMYK": 4, "/CMYK": 4}
_WHITESPACE = re.compile(rb"[\x00\t\n\x0c\r ]+")


class _Exploded(Exception):
    def __init__(self, seen: int, cap: int) -> None:
        super().__init__(f"{seen} > {cap}")
        self.seen, self.cap = seen, cap


def _check_inflation(pdf: pikepdf.Pdf, limits: IntakeLimits) -> None:
    """Decode every compressed stream incrementally and refuse the file if one explodes.

    Only what the generic filters (Flate, LZW, RunLength, ASCIIHex, ASCII85) produce is
    counted: an image codec (DCT, JPX, JBIG2, CCITT) that follows is bounded by the declared
    pixel checks, and a stream that starts with none of them is never expanded here.
    """
    total = 0
    for obj in pdf.objects:
        if not isinstance(obj, pikepdf.Stream):
            continue
        filters = _filter_chain(obj)
        if not filters or filters[0][0] not in _DECODERS:
            continue
        try:
            stored = obj.read_raw_bytes()  # as stored (decrypted, not decoded): at most the file
        except pikepdf.PdfError:  # qpdf cannot find its data either: nothing to expand
            log.info("intake.stream_unreadable", object=str(obj.objgen))
            continue
        cap = min(_stream_cap(obj, len(stored)), limits.max_inflated_bytes - total)
        try:
            for piece in _decode_chain(_pieces(stored), filters, cap):
                total += len(piece)
        except _Exploded as exc:
            log.warning("intake.decompression_bomb", object=str(obj.objgen), stored=len(stored),
                        decoded_at_least=exc.seen, cap=exc.cap, decoded_before=total,
                        total_cap=limits.max_inflated_bytes)
            raise IntakeRejected("decompression_bomb", _BOMB_REASON) from None


def _filter_chain(stream: pikepdf.Stream) -> list[tuple[str, object]]:
    """``(filter name, its /DecodeParms)`` in the order they are applied when decoding."""
    names = stream.get("/Filter")
    parms = stream.get("/DecodeParms")
    if isinstance(names, pikepdf.Name):
        names = [names]
    elif not isinstance(names, pikepdf.Array):
        return []
    parms_list = list(parms) if isinstance(parms, pikepdf.Array) else [parms] * len(names)
    return [(str(name), parms_list[index] if index < len(parms_list) else None)
            for index, name in enumerate(names)]


def _stream_cap(stream: pikepdf.Stream, stored: int) -> int:
    if _is_image(stream):
        return IMAGE_SLACK * _declared_image_bytes(stream) + MIB
    return min(MAX_STREAM_BYTES, max(STREAM_RATIO_FLOOR, MAX_STREAM_RATIO * stored))


def _is_image(stream: pikepdf.Stream) -> bool:
    if stream.get("/Subtype") == pikepdf.Name.Image:
        return True
    # thumbnails and sloppy producers: image dictionaries without /Subtype
    return "/Width" in stream and "/Height" in stream and "/Type" not in stream


def _declared_image_bytes(image: pikepdf.Stream) -> int:
    """Raw size the image declares (rows padded to bytes, one predictor byte per row)."""
    width, height = _declared_int(image, "/Width"), _declared_int(image, "/Height")
    if bool(image.get("/ImageMask", False)):
        components, bits = 1, 1
    else:
        components = _components(image.get("/ColorSpace"))
        bits = min(max(_declared_int(image, "/BitsPerComponent") or 8, 1), 16)
    return height * ((width * components * bits + 7) // 8 + 1)


def _components(space: object, depth: int = 0) -> int:
    """Colour components of a colour space; 4 (the most of the usual ones) when unknown."""
    if isinstance(space, pikepdf.Name):
        return _COMPONENTS.get(str(space), 4)
    if isinstance(space, pikepdf.Array) and len(space) and depth < 4:
        family = str(space[0])
        if family == "/ICCBased" and len(space) > 1 and isinstance(space[1], pikepdf.Stream):
            return min(max(_declared_int(space[1], "/N") or 4, 1), 32)
        if family == "/DeviceN" and len(space) > 1 and isinstance(space[1], pikepdf.Array):
            return min(max(len(space[1]), 1), 32)
        if family in _COMPONENTS:
            return _COMPONENTS[family]
    return 4


def _pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), _FEED):
        yield view[start:start + _FEED]


def _decode_chain(chunks: Iterable[bytes | memoryview], filters: list[tuple[str, object]],
                  cap: int) -> Iterator[bytes | memoryview]:
    """Chain lazy decoders; stop at the first filter that is not a generic one.

    Every intermediate stage is held to ``cap`` too, so a bomb inside a chain cannot hide
    behind a filter that shrinks again.
    """
    stream: Iterable[bytes | memoryview] = chunks
    for name, parms in filters:
        decoder = _DECODERS.get(name)
        if decoder is None:  # an image codec or an unknown filter: count what enters it
            break
        stream = _capped(decoder(stream, parms), cap)
    return iter(stream)


def _capped(chunks: Iterable[bytes], cap: int) -> Iterator[bytes]:
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > cap:
            raise _Exploded(seen, cap)
        yield chunk


def _inflate(chunks: Iterable[bytes | memoryview], parms: object) -> Iterator[bytes]:
    """FlateDecode, at most INFLATE_CHUNK bytes per step; a damaged stream ends where it breaks."""
    decomp: zlib._Decompress | None = None
    try:
        for chunk in chunks:
            data: bytes | memoryview = chunk
            if decomp is None:
                if not len(data):
                    continue
                head = bytes(data[:2])
                zlib_header = len(head) == 2 and head[0] & 0x0F == 8 and int.from_bytes(head, "big") % 31 == 0
                decomp = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
            while True:
                out = decomp.decompress(data, INFLATE_CHUNK)
                if out:
                    yield out
                if decomp.eof:
                    return
                data = decomp.unconsumed_tail
                if not data and len(out) < INFLATE_CHUNK:
                    break
        if decomp is not None:
            rest = decomp.flush()
            if rest:
                yield rest
    except zlib.error:
        return


def _lzw(chunks: Iterable[bytes | memoryview], parms: object) -> Iterator[bytes]:
    """LZWDecode (MSB first, 9-12 bit codes, /EarlyChange), in pieces of about INFLATE_CHUNK."""
    early = 1
    if isinstance(parms, pikepdf.Dictionary) and "/EarlyChange" in parms:
        early = 0 if _declared_int(parms, "/EarlyChange") == 0 else 1
    table: list[bytes] = []
    width, bitbuf, nbits, prev = 9, 0, 0, b""
    out = bytearray()

    def reset() -> None:
        nonlocal width, prev
        table[:] = [bytes([i]) for i in range(256)] + [b"", b""]
        width, prev = 9, b""

    reset()
    for chunk in chunks:
        for byte in bytes(chunk):
            bitbuf = (bitbuf << 8) | byte
            nbits += 8
            if nbits < width:
                continue
            nbits -= width
            code = bitbuf >> nbits
            bitbuf &= (1 << nbits) - 1
            if code == 256:
                reset()
                continue
            if code == 257:
                if out:
                    yield bytes(out)
                return
            if code < len(table):
                entry = table[code]
                if prev and len(table) < 4096:
                    table.append(prev + entry[:1])
            elif code == len(table) and prev and len(table) < 4096:
                entry = prev + prev[:1]
                table.append(entry)
            else:  # corrupt: end here, as readers do
                if out:
                    yield bytes(out)
                return
            out += entry
            prev = entry
            if width < 12 and len(table) + early >= (1 << width):
                width += 1
            if len(out) >= INFLATE_CHUNK:
                yield bytes(out)
                out.clear()
    if out:
        yield bytes(out)


def _run_length(chunks: Iterable[bytes | memoryview], parms: object) -> Iterator[bytes]:
    """RunLengthDecode: a length byte, then literal bytes or one byte repeated (at most 128)."""
    pending = b""
    out = bytearray()
    for chunk in chunks:
        data = pending + bytes(chunk)
        pos = 0
        while pos < len(data):
            length = data[pos]
            if length == 128:
                if out:
                    yield bytes(out)
                return
            if length < 128:
                if pos + 1 + length + 1 > len(data):
                    break
                out += data[pos + 1:pos + 2 + length]
                pos += 2 + length
            else:
                if pos + 1 >= len(data):
                    break
                out += data[pos + 1:pos + 2] * (257 - length)
                pos += 2
            if len(out) >= INFLATE_CHUNK:
                yield bytes(out)
                out.clear()
        pending = data[pos:]
    if out:
        yield bytes(out)


def _ascii_hex(chunks: Iterable[bytes | memoryview], parms: object) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        data = pending + _WHITESPACE.sub(b"", bytes(chunk))
        end = data.find(b">")
        if end >= 0:
            data = data[:end]
            if len(data) % 2:
                data += b"0"
        usable = len(data) - len(data) % 2
        try:
            yield binascii.unhexlify(data[:usable])
        except (binascii.Error, ValueError):
            return
        if end >= 0:
            return
        pending = data[usable:]


def _ascii85(chunks: Iterable[bytes | memoryview], parms: object) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        data = pending + _WHITESPACE.sub(b"", bytes(chunk)).replace(b"z", b"!!!!!")
        if data.startswith(b"<~"):
            data = data[2:]
        end = data.find(b"~")
        if end >= 0:
            data = data[:end]
        usable = len(data) if end >= 0 else len(data) - len(data) % 5
        try:
            yield base64.a85decode(data[:usable])
        except ValueError:
            return
        if end >= 0:
            return
        pending = data[usable:]


_DECODERS = {
    "/FlateDecode": _inflate, "/Fl": _inflate,
    "/LZWDecode": _lzw, "/LZW": _lzw,
    "/RunLengthDecode": _run_length, "/RL": _run_length,
    "/ASCIIHexDecode": _ascii_hex, "/AHx": _ascii_hex,
    "/ASCII85Decode": _ascii85, "/A85": _ascii85,
}


def neutral_basename(name: str | None) -> str:
    """A client's or sender's filename without directories, control characters and odd Unicode
    (at most 120 characters; may come back empty). Uploads and e-mail attachments share it."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    return re.sub(r"[^\w.\- ()äöüÄÖÜß]", "_", base).strip(" .")[:120]
