"""Parent side of OCR: what the Temporal activity calls.

:func:`run_ocr` first runs the cheap, decode-free checks of
:func:`intake.sniff.inspect_file`; a refused file never reaches a subprocess.
Otherwise it runs ``python -m intake.ocr_job`` (see that module) in a child
process that is

* in its own session / process group, so that a timeout or a cancellation
  kills ocrmypdf *and* its tesseract/ghostscript grandchildren in one go;
* limited with ``RLIMIT_AS`` (``limits.memory_limit_mb``, inherited by every
  grandchild) and a generous ``RLIMIT_CPU``;
* given ``OMP_THREAD_LIMIT=<tesseract_threads>`` (only in its environment, the
  worker's own environment is untouched) and ``TMPDIR=<work_dir>/tmp`` so that
  its temporary files stay inside the caller's per-job directory;
* bounded by a wall-clock timeout of
  ``max(min_timeout_s, pages * timeout_per_page_s)``.

While waiting, ``heartbeat`` is called about every :data:`HEARTBEAT_INTERVAL_S`
seconds (a Temporal activity passes ``activity.heartbeat``).

Outcomes are never exceptions: every input ends as an :class:`OcrOutcome` with
``status="processed"`` or ``status="failed"`` plus a machine ``code`` and a
human ``reason``.  Cancelling the awaiting task (activity cancellation) kills
the process group and re-raises :class:`asyncio.CancelledError`.

Concurrency: calls share nothing but the interpreter; each call must get its
own ``work_dir``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from pypdf import PdfReader

from intake.sniff import InputInfo, IntakeLimits, IntakeRejected, inspect_file

log = structlog.get_logger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
PRLIMIT = shutil.which("prlimit")

#: Headroom on RLIMIT_CPU over the wall timeout (the wall timeout should fire first).
CPU_LIMIT_FACTOR = 2.0
CPU_LIMIT_SLACK_S = 60
#: Separator between pages in the extracted text (as pdftotext and ocrmypdf do).
PAGE_SEPARATOR = "\f"

_REPO_ROOT = Path(__file__).resolve().parents[1]

Status = Literal["processed", "failed"]


@dataclass
class OcrOutcome:
    """Result of one OCR job; failures are data, not exceptions."""

    status: Status
    code: str | None
    reason: str | None
    pages: int
    #: 1-based numbers of pages without text and (nearly) without ink.
    blank_pages: list[int]
    #: True if every page already had text, so no OCR was run at all.
    born_digital: bool
    text: str
    output_path: Path | None
    #: All pages are blank (a processed but empty scan).
    empty: bool
    #: PDF/A part of the output ("2" for PDF/A-2b), None if a plain PDF was written.
    pdfa_part: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _JobFiles:
    output: Path
    text: Path
    result: Path
    log: Path
    tmp: Path

    @classmethod
    def in_dir(cls, work_dir: Path) -> _JobFiles:
        return cls(output=work_dir / "output.pdf", text=work_dir / "text.txt",
                   result=work_dir / "result.json", log=work_dir / "ocr_job.log",
                   tmp=work_dir / "tmp")

    def reset(self) -> None:
        """Remove leftovers of an earlier attempt in the same work_dir."""
        for path in (self.output, self.text, self.result):
            path.unlink(missing_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------- text helpers


def extract_page_texts(pdf_path: Path) -> list[str]:
    """Text of every page of a PDF (pypdf), one string per page."""
    reader = PdfReader(pdf_path)
    if reader.is_encrypted:
        reader.decrypt("")
    return [_page_text(page) for page in reader.pages]


def _page_text(page: Any) -> str:
    try:
        return str(page.extract_text() or "")
    except Exception:  # noqa: BLE001 - pypdf raises many types on odd content streams
        return ""


def extract_text(pdf_path: Path) -> str:
    """Text of a whole PDF, pages separated by form feeds."""
    return PAGE_SEPARATOR.join(extract_page_texts(pdf_path))


# --------------------------------------------------------------------------- public entry


def failed_outcome(code: str, reason: str, pages: int = 0) -> OcrOutcome:
    return OcrOutcome(status="failed", code=code, reason=reason, pages=pages, blank_pages=[],
                      born_digital=False, text="", output_path=None, empty=False)


def job_timeout_s(pages: int, limits: IntakeLimits) -> float:
    return max(limits.min_timeout_s, pages * limits.timeout_per_page_s)


async def run_ocr(input_path: Path, work_dir: Path, limits: IntakeLimits,
                  heartbeat: Callable[[str], None] | None = None) -> OcrOutcome:
    """Inspect, then OCR one file in a resource-limited child process."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    bound = log.bind(input=str(input_path), work_dir=str(work_dir))
    try:
        # the child decides text/no text per page itself (ocrmypdf's PdfInfo): no text probe here
        info = await asyncio.to_thread(inspect_file, input_path, limits, probe_text=False)
    except IntakeRejected as rejected:
        bound.info("ocr.rejected", code=rejected.code)
        return failed_outcome(rejected.code, rejected.reason)
    outcome = await _run_child(input_path.resolve(), work_dir.resolve(), info, limits,
                               heartbeat, bound)
    outcome.seconds = loop.time() - started
    bound.info("ocr.finished", status=outcome.status, code=outcome.code, pages=outcome.pages,
               seconds=round(outcome.seconds, 2))
    return outcome


# --------------------------------------------------------------------------- child process


async def _run_child(input_path: Path, work_dir: Path, info: InputInfo, limits: IntakeLimits,
                     heartbeat: Callable[[str], None] | None,
                     bound: Any) -> OcrOutcome:
    files = _JobFiles.in_dir(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    files.reset()
    timeout = job_timeout_s(info.pages, limits)
    try:
        proc = await _spawn(input_path, files, limits, timeout)
    except OSError as exc:  # fork/exec failed: no memory, no processes left, ...
        bound.error("ocr.spawn_failed", error=repr(exc))
        return failed_outcome("resource_limit", "Text recognition could not be started because "
                              "the server is short of resources; it will be retried.",
                              pages=info.pages)
    bound = bound.bind(pid=proc.pid, timeout_s=timeout)
    bound.info("ocr.started")
    try:
        returncode = await _wait_with_heartbeat(proc, timeout, heartbeat)
    except TimeoutError:
        bound.warning("ocr.timeout")
        return failed_outcome(
            "ocr_timeout",
            f"Text recognition took longer than the allowed {timeout:.0f} seconds and was "
            "stopped. The document may be unusually large or hard to read.",
            pages=info.pages,
        )
    finally:
        await _kill_group(proc)
        shutil.rmtree(files.tmp, ignore_errors=True)  # ocrmypdf leftovers of a killed job
    return _outcome_from_child(returncode, files, info, bound)


async def _spawn(input_path: Path, files: _JobFiles, limits: IntakeLimits,
                 timeout: float) -> asyncio.subprocess.Process:
    """Start the child in its own session (process group) with resource limits."""
    with files.log.open("wb") as log_file:
        return await asyncio.create_subprocess_exec(
            *_limited(_child_argv(input_path, files, limits), limits, timeout),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            cwd=str(files.tmp.parent), env=_child_env(files, limits), start_new_session=True,
            preexec_fn=None if PRLIMIT else _limits_setter(limits, timeout),
        )


def _limited(argv: list[str], limits: IntakeLimits, timeout: float) -> list[str]:
    """Prefix util-linux `prlimit`, so no Python code runs between fork and exec in a
    multi-threaded worker (preexec_fn is documented as unsafe there); fall back to
    preexec_fn only where prlimit is missing."""
    if not PRLIMIT:
        return argv
    address_space = limits.memory_limit_mb * 1024 * 1024
    cpu_soft = int(timeout * CPU_LIMIT_FACTOR) + CPU_LIMIT_SLACK_S
    return [PRLIMIT, f"--as={address_space}", f"--cpu={cpu_soft}:{cpu_soft + 30}", "--core=0", "--", *argv]


def _child_argv(input_path: Path, files: _JobFiles, limits: IntakeLimits) -> list[str]:
    return [
        sys.executable, "-m", "intake.ocr_job",
        "--input", str(input_path), "--output", str(files.output),
        "--text-out", str(files.text), "--result-json", str(files.result),
        "--languages", "deu+eng", "--tesseract-threads", str(limits.tesseract_threads),
        "--max-page-pixels", str(limits.max_page_pixels), "--parent-pid", str(os.getpid()),
    ]


def _child_env(files: _JobFiles, limits: IntakeLimits) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_THREAD_LIMIT"] = str(limits.tesseract_threads)
    env["TMPDIR"] = str(files.tmp)
    # glibc reserves 64 MB of address space per malloc arena and thread; with
    # RLIMIT_AS that reservation, not real use, would be what runs out.
    env["MALLOC_ARENA_MAX"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _limits_setter(limits: IntakeLimits, timeout: float) -> Callable[[], None]:
    """Build the preexec_fn run between fork and exec: setrlimit calls only.

    RLIMIT_AS is inherited by ocrmypdf's own children (tesseract, Ghostscript,
    unpaper), each of which gets the same per-process ceiling.
    """
    address_space = limits.memory_limit_mb * 1024 * 1024
    cpu_soft = int(timeout * CPU_LIMIT_FACTOR) + CPU_LIMIT_SLACK_S
    cpu_hard = cpu_soft + 30

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


async def _wait_with_heartbeat(proc: asyncio.subprocess.Process, timeout: float,
                               heartbeat: Callable[[str], None] | None) -> int:
    """Wait for the child; heartbeat every few seconds; TimeoutError after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while True:
            remaining = deadline - loop.time()
            done, _ = await asyncio.wait({waiter}, timeout=max(0.0, min(HEARTBEAT_INTERVAL_S, remaining)))
            if done:
                return waiter.result()
            if loop.time() >= deadline:
                raise TimeoutError
            if heartbeat is not None:
                heartbeat(f"ocr running for {loop.time() - started:.0f}s of {timeout:.0f}s")
    finally:
        if not waiter.done():
            waiter.cancel()


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (also stray grandchildren) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone: the group died with its last member
    if proc.returncode is None:
        await asyncio.shield(proc.wait())


# --------------------------------------------------------------------------- results


def _outcome_from_child(returncode: int, files: _JobFiles, info: InputInfo,
                        bound: Any) -> OcrOutcome:
    result = _read_result(files.result)
    if result is not None:
        return _outcome_from_result(result, files)
    bound.error("ocr.child_without_result", returncode=returncode, log_tail=_tail(files.log))
    if returncode < 0 or "MemoryError" in _tail(files.log):
        name = _signal_name(-returncode) if returncode < 0 else "out of memory"
        return failed_outcome(
            "resource_limit",
            f"Text recognition was stopped by the system ({name}), most likely because the "
            "document needs more memory or computing time than allowed.",
            pages=info.pages,
        )
    return failed_outcome(
        "ocr_failed",
        "Text recognition ended unexpectedly without a result; IT has the details in the log.",
        pages=info.pages,
    )


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") in ("processed", "failed") else None


def _outcome_from_result(result: dict[str, Any], files: _JobFiles) -> OcrOutcome:
    processed = result["status"] == "processed"
    pages = int(result.get("pages") or 0)
    blank = [int(n) for n in result.get("blank_pages") or []]
    text = files.text.read_text(encoding="utf-8") if processed and files.text.exists() else ""
    output = files.output if processed and files.output.exists() else None
    return OcrOutcome(
        status="processed" if processed else "failed",
        code=result.get("code"), reason=result.get("reason"), pages=pages, blank_pages=blank,
        born_digital=bool(result.get("born_digital")), text=text, output_path=output,
        empty=processed and pages > 0 and len(blank) == pages,
        pdfa_part=result.get("pdfa_part"),
        extra={k: v for k, v in result.items() if k in ("ocr_mode", "text_chars", "peak_rss_mb")},
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""
