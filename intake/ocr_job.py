"""Child process: run ONE OCR job and describe the result in a JSON file.

Usage::

    python -m intake.ocr_job --input IN --output OUT.pdf --text-out OUT.txt \\
        --result-json RESULT.json [--languages deu+eng] [--tesseract-threads 1] \\
        [--max-page-pixels 120000000] [--default-image-dpi 300]

It is started by :func:`intake.ocr.run_ocr` with resource limits and in its own
process group; it is not meant to be imported by the worker.  The result JSON
is ``{"status": "processed"|"failed", "code", "reason", "pages",
"blank_pages": [1-based page numbers], "born_digital", "text_chars",
"pdfa_part", "ocr_mode", "peak_rss_mb"}``; any exception becomes ``status="failed"`` with a
code and a plain-English reason (the traceback goes to stderr, i.e. the job
log, never into the reason).

Processing paths
----------------
Images (PNG/TIFF/JPEG) are first wrapped into a PDF with img2pdf (lossless; a
file without a usable resolution, like the 1-bit ``typewriter.png``, is
assumed to be scanned at 300 dpi).  Owner-password PDFs are decrypted into the
private temporary directory.  Then ocrmypdf's own page analysis
(``ocrmypdf.pdfinfo.PdfInfo``) decides, page by page, whether there is text:

``scan`` — no page has text.  ``ocrmypdf.ocr(mode="default", deskew,
    rotate_pages, output_type="auto", pdfa_backend="auto")``.  PDF/A-2b is
    produced by pikepdf's validated "internal" writer, or by Ghostscript if
    pikepdf's validator does not approve; if neither manages, a regular PDF is
    written rather than failing the letter (``pdfa_part`` is then null).

``mixed`` — some pages have text (e.g. a previous OCR layer on one page).
    ``mode="skip"`` keeps those pages untouched and OCRs the others, with
    ``pdfa_backend="internal"`` and ``output_type="auto"``.

``born_digital`` — every page has text.  ocrmypdf is NOT run (there is nothing
    to recognise and nothing to deskew).  The file is written as PDF/A-2b by
    ``pikepdf.pdfa.save`` when pikepdf's validator approves (typically PDFs
    with embedded fonts); otherwise the original bytes are kept unchanged.

Why: Debian 12's Ghostscript 10.0.0 has regressions that corrupt existing
text when it rewrites a PDF (fixed in 10.02.1), so ocrmypdf 17 refuses
``--mode skip``/``redo`` together with a Ghostscript PDF/A conversion.  The
typical born-digital letter uses non-embedded standard fonts (Helvetica,
Times); making that PDF/A needs font embedding, which only Ghostscript does,
and that is exactly the dangerous path.  So existing text is never given to
Ghostscript: mixed and born-digital files use pikepdf's PDF/A writer, which
only adds the PDF/A declarations/output intent and validates the result
(it never touches page content), and fall back to an unconverted PDF when
that cannot be approved.  ``output_type="auto"`` with
``pdfa_backend="internal"`` is ocrmypdf 17's supported spelling of exactly
that, and does not trip the Ghostscript version check.  For pure scans
Ghostscript only ever sees ocrmypdf's own text layer, which ocrmypdf itself
allows with this Ghostscript.  The original upload is archived separately by
the caller anyway; these outputs are the searchable working copies.

Tesseract threads: the parent sets ``OMP_THREAD_LIMIT`` in this process's
environment only (never in the worker's); ocrmypdf runs with ``jobs=1`` and hands
that limit to every tesseract it starts, so N parallel jobs use N x limit threads.

Verified by tests/unit/test_ocr_corpus.py: every claimed PDF/A (scan, mixed and
born-digital paths) passes ``pikepdf.pdfa.validate_written``; born-digital text
comes back unchanged; multipage.pdf's existing text page is kept as it was.

With ``--parent-pid`` the job kills its own process group as soon as that
process (the worker) is gone, so a worker killed with SIGKILL leaves no OCR
running.  ``peak_rss_mb`` in the result is the larger of this process's and its
largest reaped child's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from intake.ocr import PAGE_SEPARATOR, extract_page_texts
from intake.sniff import IntakeRejected, detect_kind

log = structlog.get_logger("intake.ocr_job")

DEFAULT_IMAGE_DPI = 300
#: Images claiming this resolution or less almost never state the scan resolution.
MIN_PLAUSIBLE_DPI = 96
#: Resolution at which pages are rendered for blank detection.
BLANK_RENDER_DPI = 50
#: A pixel is ink if it is this much darker than the paper (0..255 scale).
INK_CONTRAST = 64
#: A page with less ink than this fraction (and no text) is blank.
BLANK_INK_FRACTION = 0.002
#: Fewer alphanumeric characters than this count as "no text" (OCR noise).
MIN_TEXT_CHARS = 3
#: How often the job checks that the worker which started it is still alive.
PARENT_POLL_S = 0.5

OcrMode = Literal["scan", "mixed", "born_digital"]


@dataclass
class JobResult:
    status: Literal["processed", "failed"]
    code: str | None = None
    reason: str | None = None
    pages: int = 0
    blank_pages: list[int] = field(default_factory=list)
    born_digital: bool = False
    text_chars: int = 0
    pdfa_part: str | None = None
    ocr_mode: OcrMode | None = None
    #: Peak resident memory of this process and of its largest reaped child (tesseract, gs), MiB.
    peak_rss_mb: float = 0.0


@dataclass(frozen=True)
class JobArgs:
    input: Path
    output: Path
    text_out: Path
    result_json: Path
    languages: list[str]
    tesseract_threads: int
    max_page_pixels: int
    default_image_dpi: int
    parent_pid: int = 0


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> JobArgs:
    parser = argparse.ArgumentParser(prog="python -m intake.ocr_job", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--text-out", type=Path, required=True)
    parser.add_argument("--result-json", type=Path, required=True)
    parser.add_argument("--languages", default="deu+eng")
    parser.add_argument("--tesseract-threads", type=int, default=1)
    parser.add_argument("--max-page-pixels", type=int, default=120_000_000)
    parser.add_argument("--default-image-dpi", type=int, default=DEFAULT_IMAGE_DPI)
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="stop the whole job when this process (the worker) is gone")
    ns = parser.parse_args(argv)
    return JobArgs(input=ns.input, output=ns.output, text_out=ns.text_out,
                   result_json=ns.result_json, languages=[lang for lang in ns.languages.split("+") if lang],
                   tesseract_threads=ns.tesseract_threads, max_page_pixels=ns.max_page_pixels,
                   default_image_dpi=ns.default_image_dpi, parent_pid=ns.parent_pid)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging()
    if args.parent_pid:
        _watch_parent(args.parent_pid)
    # Normally set by the parent; make a manual run behave the same.
    os.environ.setdefault("OMP_THREAD_LIMIT", str(args.tesseract_threads))
    result = run_job_safely(args)
    result.peak_rss_mb = peak_rss_mb()
    _write_json_atomic(args.result_json, asdict(result))
    log.info("ocr_job.done", status=result.status, code=result.code, pages=result.pages,
             mode=result.ocr_mode, pdfa_part=result.pdfa_part, text_chars=result.text_chars)
    return 0 if result.status == "processed" else 2


def _watch_parent(parent_pid: int) -> None:
    """Kill this job's process group once the worker that started it is gone.

    The job runs in a session of its own (so a timeout can kill ocrmypdf with its tesseract and
    Ghostscript children in one go); the flip side is that a worker killed with SIGKILL would
    leave it running, burning a core for a result nobody collects while Temporal already
    retries the activity elsewhere.  Polling ``getppid`` costs nothing and needs no code
    between fork and exec in the worker.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        log.warning("ocr_job.parent_gone", parent_pid=parent_pid)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    if os.getppid() != parent_pid:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pdfminer", "PIL", "pypdf", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def peak_rss_mb() -> float:
    """Largest resident set of this process or any child it has waited for (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- job


def run_job_safely(args: JobArgs) -> JobResult:
    """Run the job; translate every failure into a JobResult (and leave no partial output)."""
    result = _run_and_classify(args)
    if result.status == "failed":
        for partial in (args.output, args.text_out):
            partial.unlink(missing_ok=True)
    return result


def _run_and_classify(args: JobArgs) -> JobResult:
    try:
        return run_job(args)
    except IntakeRejected as rejected:
        return JobResult(status="failed", code=rejected.code, reason=rejected.reason)
    except MemoryError:
        traceback.print_exc()
        return _resource_limit()
    except Exception as exc:  # noqa: BLE001 - the contract: never an exception, never a traceback as reason
        traceback.print_exc()
        code, reason = _classify_exception(exc)
        return JobResult(status="failed", code=code, reason=reason)


def run_job(args: JobArgs) -> JobResult:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ocr_job-", dir=args.output.parent) as tmp_name:
        tmp = Path(tmp_name)
        source = _as_readable_pdf(args.input, tmp, args.default_image_dpi)
        mode = _choose_mode(source, args.max_page_pixels)
        log.info("ocr_job.mode", mode=mode)
        if mode == "born_digital":
            _archive_born_digital(source, args.output)
        else:
            _run_ocrmypdf(source, args.output, mode, args.languages)
    return _describe_output(args.output, args.text_out, mode)


def _as_readable_pdf(input_path: Path, tmp: Path, default_dpi: int) -> Path:
    """The input as an unencrypted PDF (images wrapped, owner password removed)."""
    with input_path.open("rb") as fh:
        kind = detect_kind(fh.read(1024))
    if kind is None:
        raise IntakeRejected("not_a_supported_file",
                             "The file is not a PDF, PNG, TIFF or JPEG file, so it cannot be read.")
    if kind != "pdf":
        return _image_to_pdf(input_path, tmp / "image.pdf", default_dpi)
    return _decrypt_if_needed(input_path, tmp / "decrypted.pdf")


def _image_to_pdf(image_path: Path, out: Path, default_dpi: int) -> Path:
    import img2pdf
    from PIL import Image

    with Image.open(image_path) as im:
        dpi = im.info.get("dpi") or (0, 0)
        convertible = im.mode in ("1", "L", "P", "RGB", "CMYK") and "transparency" not in im.info
        frames = int(getattr(im, "n_frames", 1))
    options: dict[str, Any] = {}
    if min(float(dpi[0] or 0), float(dpi[1] or 0)) <= MIN_PLAUSIBLE_DPI:
        options["layout_fun"] = img2pdf.get_fixed_dpi_layout_fun((default_dpi, default_dpi))
    sources: list[Path] = [image_path]
    if not convertible:
        sources = _flatten_frames(image_path, out.parent, frames)
    try:
        out.write_bytes(img2pdf.convert([str(p) for p in sources], **options))
    except Exception as exc:  # img2pdf is strict (e.g. bytes after a PNG's IEND); Pillow is not
        if sources != [image_path]:
            raise
        log.info("ocr_job.image_reencoded", why=str(exc)[:200])
        sources = _flatten_frames(image_path, out.parent, frames)
        out.write_bytes(img2pdf.convert([str(p) for p in sources], **options))
    return out


def _flatten_frames(image_path: Path, tmp: Path, frames: int) -> list[Path]:
    """Re-encode frames img2pdf refuses (alpha, 16 bit, ...) as RGB PNG on white."""
    from PIL import Image

    paths: list[Path] = []
    with Image.open(image_path) as im:
        for index in range(frames):
            im.seek(index)
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            path = tmp / f"frame-{index:04d}.png"
            flat.save(path, dpi=im.info.get("dpi", (0, 0)))
            paths.append(path)
    return paths


def _decrypt_if_needed(pdf_path: Path, out: Path) -> Path:
    """Owner-password PDFs open without a password; save an unencrypted copy for ocrmypdf."""
    import pikepdf

    with pikepdf.open(pdf_path) as pdf:
        if not pdf.is_encrypted:
            return pdf_path
        log.info("ocr_job.decrypting_owner_password_pdf")
        pdf.save(out, encryption=False)
    return out


def _choose_mode(pdf_path: Path, max_page_pixels: int) -> OcrMode:
    """Per-page analysis with ocrmypdf's own PdfInfo (what ocrmypdf will decide)."""
    from ocrmypdf.pdfinfo import PdfInfo

    info = PdfInfo(pdf_path, max_workers=1, use_threads=True)
    with_text = [page is not None and page.has_text for page in info.pages]
    for number, page in enumerate(info.pages, start=1):
        if page is not None:
            _check_raster_size(number, page, max_page_pixels, with_text[number - 1])
    if all(with_text):
        return "born_digital"
    return "mixed" if any(with_text) else "scan"


def _check_raster_size(number: int, page: Any, max_page_pixels: int, has_text: bool) -> None:
    """Refuse pages that ocrmypdf would rasterise into a huge image."""
    if has_text or not page.images:
        return  # not rasterised for OCR in default/skip mode
    pixels = int(page.width_pixels) * int(page.height_pixels)
    if pixels > max_page_pixels:
        raise IntakeRejected(
            "image_too_large",
            f"Page {number} would have to be processed as a {pixels / 1e6:.0f} megapixel image "
            f"(the limit is {max_page_pixels / 1e6:.0f}). Ask the sender to scan at a normal "
            "resolution such as 300 dpi.",
        )


def _archive_born_digital(source: Path, output: Path) -> None:
    """PDF/A-2b via pikepdf if its validator approves, else the original bytes."""
    import pikepdf
    from pikepdf.pdfa import PdfaError, save

    try:
        with pikepdf.open(source) as pdf:
            _drop_empty_transitions(pdf)
            save(pdf, output, "2b")
        log.info("ocr_job.born_digital_pdfa")
    except PdfaError as exc:
        log.info("ocr_job.born_digital_kept_original", why=exc.report.summary(limit=3))
        shutil.copyfile(source, output)


def _drop_empty_transitions(pdf: Any) -> None:
    """Remove empty ``/Trans`` page dictionaries (ReportLab writes them).

    An empty transition dictionary means "default transition", so removing it
    changes nothing, but pikepdf's allowlist validator does not check /Trans and
    would otherwise refuse to approve the PDF/A.
    """
    for page in pdf.pages:
        trans = page.obj.get("/Trans")
        if trans is not None and len(trans.keys()) == 0:
            del page.obj["/Trans"]


def _run_ocrmypdf(source: Path, output: Path, mode: OcrMode, languages: list[str]) -> None:
    import ocrmypdf

    ocrmypdf.ocr(
        source, output,
        language=languages,
        mode="skip" if mode == "mixed" else "default",
        output_type="auto",
        # Never hand pre-existing text to Ghostscript 10.0.0 (see module docstring).
        pdfa_backend="internal" if mode == "mixed" else "auto",
        deskew=True,
        rotate_pages=True,
        jobs=1,
        progress_bar=False,
        tagged_pdf_mode="ignore",
    )


# --------------------------------------------------------------------------- results


def _describe_output(output: Path, text_out: Path, mode: OcrMode) -> JobResult:
    texts = extract_page_texts(output)
    text_out.write_text(PAGE_SEPARATOR.join(texts), encoding="utf-8")
    blank = find_blank_pages(output, texts)
    return JobResult(status="processed", pages=len(texts), blank_pages=blank,
                     born_digital=mode == "born_digital",
                     text_chars=sum(len(t.strip()) for t in texts),
                     pdfa_part=pdfa_part(output), ocr_mode=mode)


def pdfa_part(pdf_path: Path) -> str | None:
    """The PDF/A part declared in the XMP metadata (``pdfaid:part``), if any."""
    import pikepdf

    with pikepdf.open(pdf_path) as pdf:
        meta = pdf.open_metadata()
        part = meta.get("pdfaid:part")
    return str(part) if part else None


def find_blank_pages(pdf_path: Path, texts: list[str]) -> list[int]:
    """1-based numbers of pages without text whose rendering is (nearly) without ink."""
    candidates = [i for i, text in enumerate(texts) if not _has_words(text)]
    if not candidates:
        return []
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf_path))
    try:
        return [i + 1 for i in candidates if ink_fraction(doc[i]) < BLANK_INK_FRACTION]
    finally:
        doc.close()


def _has_words(text: str) -> bool:
    return sum(ch.isalnum() for ch in text) >= MIN_TEXT_CHARS


def ink_fraction(page: Any) -> float:
    """Share of pixels clearly darker than the paper, at low resolution."""
    bitmap = page.render(scale=BLANK_RENDER_DPI / 72, grayscale=True)
    histogram: list[int] = bitmap.to_pil().convert("L").histogram()
    total = sum(histogram)
    if not total:
        return 0.0
    paper = _percentile(histogram, total, 0.9)
    threshold = max(0, paper - INK_CONTRAST)
    return float(sum(histogram[:threshold])) / total


def _percentile(histogram: list[int], total: int, q: float) -> int:
    seen = 0
    for value, count in enumerate(histogram):
        seen += count
        if seen >= q * total:
            return value
    return 255


# --------------------------------------------------------------------------- errors


RESOURCE_LIMIT_REASON = ("The document needs more memory than allowed and could not be "
                         "processed. Ask the sender to scan at a lower resolution.")


def _resource_limit() -> JobResult:
    return JobResult(status="failed", code="resource_limit", reason=RESOURCE_LIMIT_REASON)


def _classify_exception(exc: BaseException) -> tuple[str, str]:
    """Map ocrmypdf/pikepdf/Pillow errors to a code and a clerk-readable reason."""
    from ocrmypdf import exceptions as ox

    text = str(exc).lower()
    if any(s in text for s in ("bad_alloc", "cannot allocate", "out of memory", "vmerror",
                               "memoryerror")):
        return "resource_limit", RESOURCE_LIMIT_REASON
    table: list[tuple[type[BaseException], str, str]] = [
        (ox.EncryptedPdfError, "encrypted",
         "The PDF is encrypted; ask the sender for an unprotected copy."),
        (ox.DigitalSignatureError, "digitally_signed",
         ("The PDF carries a digital signature that text recognition would invalidate; "
          "it must be handled by hand.")),
        (ox.DpiError, "not_a_supported_file",
         "The image does not state its resolution and could not be converted."),
        (ox.UnsupportedImageFormatError, "not_a_supported_file",
         "The image format variant is not supported."),
        (ox.InputFileError, "unreadable_pdf",
         ("The PDF is damaged or uses features that cannot be read; ask the sender to send "
          "it again or as a plain scan.")),
        (ox.MissingDependencyError, "ocr_failed",
         ("The text recognition system is not set up correctly (a program is missing); "
          "please inform IT.")),
        (ox.SubprocessOutputError, "ocr_failed",
         "The text recognition program failed on this document."),
    ]
    for exc_type, code, reason in table:
        if isinstance(exc, exc_type):
            return code, reason
    if _is_pdf_error(exc):
        return "unreadable_pdf", ("The PDF is damaged and could not be read; ask the sender "
                                  "to send it again.")
    return "ocr_failed", (f"Text recognition failed with an unexpected error "
                          f"({type(exc).__name__}); IT has the details in the log.")


def _is_pdf_error(exc: BaseException) -> bool:
    import pikepdf

    return isinstance(exc, pikepdf.PdfError)


if __name__ == "__main__":
    sys.exit(main())
