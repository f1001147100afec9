"""OCR quality: character accuracy of our pipeline against plain ocrmypdf, on the linn page.

linn.txt is the expected text of linn.pdf; skew.pdf and rotated_skew.pdf are the same page,
skewed / rotated (corpus README). For each file the text of

* ``pipeline``: :func:`intake.ocr.run_ocr` (what the mailroom stores as the letter's text);
* ``plain sidecar``: ``ocrmypdf -l deu+eng --deskew --rotate-pages --output-type pdfa --jobs 1
  --sidecar``, i.e. tesseract's own text of a plain CLI run;
* ``plain pdf``: the text layer of that run's output PDF, read with the extractor the pipeline
  uses (so a difference between the two plain columns is the extractor, not the OCR)

is compared with linn.txt. Character accuracy = 1 - Levenshtein distance / len(reference), after
collapsing all whitespace to single spaces (layout is not what is measured). Two unrelated
pages of English score about 0.2, an empty text 0.0.

Usage: .venv/bin/python bench/ocr_quality.py [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from intake.ocr import extract_text, run_ocr
from intake.sniff import IntakeLimits

CORPUS = ROOT.parent / "shared" / "corpus" / "scans"
FILES = ["linn.pdf", "skew.pdf", "rotated_skew.pdf"]
OCRMYPDF = [sys.executable, "-m", "ocrmypdf", "-l", "deu+eng", "--deskew", "--rotate-pages",
            "--output-type", "pdfa", "--jobs", "1", "--quiet"]


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def char_accuracy(reference: str, text: str) -> float:
    ref, hyp = normalise(reference), normalise(text)
    return 1.0 - Levenshtein.distance(ref, hyp) / len(ref)


async def pipeline_text(path: Path, work: Path) -> tuple[str, float]:
    started = time.perf_counter()
    outcome = await run_ocr(path, work, IntakeLimits())
    if outcome.status != "processed":
        raise SystemExit(f"{path.name}: pipeline failed: {outcome.code} {outcome.reason}")
    return outcome.text, time.perf_counter() - started


def plain_text(path: Path, work: Path) -> tuple[str, str, float]:
    work.mkdir(parents=True, exist_ok=True)
    out, sidecar = work / "plain.pdf", work / "plain.txt"
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # as the pipeline's child: one tesseract thread
    started = time.perf_counter()
    subprocess.run([*OCRMYPDF, "--sidecar", str(sidecar), str(path), str(out)], check=True, env=env)
    seconds = time.perf_counter() - started
    return sidecar.read_text(encoding="utf-8"), extract_text(out), seconds


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1, help="OCR each file this often (accuracy is deterministic)")
    args = ap.parse_args()
    reference = (CORPUS / "linn.txt").read_text(encoding="utf-8")
    tmp = Path(tempfile.mkdtemp(prefix="ocr-quality-"))
    print(f"# character accuracy vs linn.txt ({len(normalise(reference))} chars, whitespace-normalised); "
          "same machine, same run")
    print(f"{'file':<18} {'pipeline':>9} {'plain sidecar':>14} {'plain pdf':>10} {'pipeline s':>11} {'plain s':>8}")
    totals = [0.0, 0.0, 0.0]
    for name in FILES:
        for run in range(args.runs):
            ours, ours_s = await pipeline_text(CORPUS / name, tmp / f"{name}-{run}-pipeline")
            sidecar, plain_pdf, plain_s = plain_text(CORPUS / name, tmp / f"{name}-{run}-plain")
        scores = [char_accuracy(reference, t) for t in (ours, sidecar, plain_pdf)]
        totals = [a + b for a, b in zip(totals, scores, strict=True)]
        print(f"{name:<18} {scores[0]:>9.3f} {scores[1]:>14.3f} {scores[2]:>10.3f} {ours_s:>11.1f} {plain_s:>8.1f}")
    n = len(FILES)
    print(f"{'mean':<18} {totals[0] / n:>9.3f} {totals[1] / n:>14.3f} {totals[2] / n:>10.3f}")


if __name__ == "__main__":
    asyncio.run(main())
