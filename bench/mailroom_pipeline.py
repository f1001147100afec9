"""The mailroom pipeline against plain ocrmypdf, on the same files, in the same run.

(1) Overhead, one letter at a time: end-to-end time per file through the real stack (HTTP
upload to POST /v1/mailroom/scans -> MailItemWorkflow -> OCR activity on the OCR worker ->
processed version stored in S3 -> routed to a final status, observed by polling
GET /v1/mailroom/items/{id} every POLL_S) divided by a plain ``ocrmypdf`` CLI run on the same
file (deu+eng, --deskew --rotate-pages, PDF/A output, --jobs 1). Both are timed alternately,
``--runs`` times; medians per file, and the ratio of the summed medians.

(2) Throughput with both cores busy: all files (several multi-page) uploaded in one request,
the OCR worker running its default number of parallel OCR jobs, pages per minute from the
upload to the last final status; against plain ocrmypdf over the same files with two processes
at a time.

The stack: Temporal dev server and SeaweedFS of its own (bench/_common.start_servers), a scratch
database, the API as its own uvicorn process, the worker (cases + ocr queues) as its own
``aktenlauf worker`` process, as in production. Every upload is made unique (a trailing comment
after the file's end) so the mailroom's duplicate check never short-cuts the OCR.

Usage: .venv/bin/python bench/mailroom_pipeline.py [--runs 3] [--database-url URL] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    bench_settings,
    child_env,
    scratch_database,
    start_api,
    start_servers,
)

from aktenlauf import devstack
from aktenlauf.settings import Settings

CORPUS = ROOT.parent / "shared" / "corpus" / "scans"
CORPUS_FILES = ["linn.pdf", "skew.pdf", "multipage.pdf", "c02-22.pdf", "typewriter.png"]
FINAL = {"triage", "routed", "filed", "split", "merged", "closed", "failed", "duplicate"}
POLL_S = 0.1
#: ocrmypdf's exit code for "page already has text"; such files (multipage.pdf) are run with the
#: only PDF/A options this Ghostscript (10.0.0) allows plain ocrmypdf for existing text, which is
#: what the pipeline's job does for them too (intake/ocr_job.py, "mixed")
PRIOR_OCR_FOUND = 6
MIXED = ["--skip-text", "--pdfa-backend", "internal"]
HAS_TEXT: set[str] = set()
PLAIN = [sys.executable, "-m", "ocrmypdf", "-l", "deu+eng", "--deskew", "--rotate-pages", "--output-type", "pdfa",
         "--jobs", "1", "--quiet"]


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    content_type: str
    pages: int

    def unique(self) -> bytes:
        """Same document, other bytes: a comment after %%EOF / a tEXt chunk before PNG's IEND."""
        tag = uuid.uuid4().hex.encode()
        if self.content_type == "application/pdf":
            return self.data + b"\n%bench " + tag + b"\n"
        body = b"tEXt" + b"bench\0" + tag
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return self.data[:-12] + chunk + self.data[-12:]  # the last 12 bytes are the IEND chunk


def _letter_page(lines: list[str], dpi: int) -> bytes:
    """A typed letter as a scanner delivers it: greyscale, no text layer."""
    import reportlab
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(reportlab.__file__).parent / "fonts" / "Vera.ttf"), int(11 / 72 * dpi))
    img = Image.new("L", (int(8.27 * dpi), int(11.69 * dpi)), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((int(0.9 * dpi), int(1.0 * dpi) + i * int(0.25 * dpi)), line, fill=0, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(dpi, dpi))
    return buf.getvalue()


LETTER = ["Erika Mustermann", "Hauptstraße 5, 12345 Musterstadt", "", "An die Stadt Musterstadt", "Bauamt", "",
          "Antrag auf Erteilung einer Baugenehmigung", "", "Sehr geehrte Damen und Herren,",
          "hiermit beantrage ich die Genehmigung für den Anbau eines Wintergartens",
          "an das Wohnhaus auf dem Grundstück Gemarkung Musterstadt, Flur 3, Flurstück 117.",
          "Die Bauzeichnungen und der Lageplan liegen diesem Schreiben bei.",
          "Für Rückfragen erreichen Sie mich werktags unter 01234 567890.", "",
          "Mit freundlichen Grüßen", "", "Erika Mustermann"]


def samples() -> list[Sample]:
    import img2pdf

    out = [Sample(n, (CORPUS / n).read_bytes(), "image/png" if n.endswith(".png") else "application/pdf",
                  _pages(CORPUS / n)) for n in CORPUS_FILES]
    out.append(Sample("brief-200dpi.png", _letter_page(LETTER, 200), "image/png", 1))
    pages = [_letter_page([f"Seite {p} von 3", "", *LETTER], 300) for p in (1, 2, 3)]
    out.append(Sample("brief-3seiten.pdf", img2pdf.convert(pages), "application/pdf", 3))
    return out


def _pages(path: Path) -> int:
    if path.suffix == ".png":
        return 1
    import pikepdf

    with pikepdf.open(path) as pdf:
        return len(pdf.pages)


# --------------------------------------------------------------------------- plain ocrmypdf


def plain_run(sample: Sample, work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    src = work / ("in" + Path(sample.name).suffix)
    src.write_bytes(sample.unique())
    extra = ["--image-dpi", "300"] if sample.content_type != "application/pdf" else []
    extra += MIXED if sample.name in HAS_TEXT else []
    started = time.perf_counter()
    done = subprocess.run([*PLAIN, *extra, str(src), str(work / "out.pdf")], check=False)
    if done.returncode == PRIOR_OCR_FOUND and sample.name not in HAS_TEXT:
        HAS_TEXT.add(sample.name)  # learnt once per file, the timed runs use the right options
        return plain_run(sample, work)
    done.check_returncode()
    return time.perf_counter() - started


async def plain_parallel(batch: list[Sample], work: Path, parallel: int) -> float:
    sem = asyncio.Semaphore(parallel)

    async def one(i: int, s: Sample) -> None:
        async with sem:
            await asyncio.to_thread(plain_run, s, work / f"par-{i}")

    started = time.perf_counter()
    await asyncio.gather(*(one(i, s) for i, s in enumerate(batch)))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the stack


async def upload(http: httpx.AsyncClient, headers: dict[str, str], batch: list[Sample]) -> list[str]:
    r = await http.post("/v1/mailroom/scans", headers=headers,
                        files=[("files", (s.name, s.unique(), s.content_type)) for s in batch])
    r.raise_for_status()
    return [i["id"] for i in r.json()["items"]]


WORKER: list[devstack.ManagedProcess] = []  # checked while polling: a dead worker ends the run at once


async def until_final(http: httpx.AsyncClient, headers: dict[str, str], item_id: str, timeout: float = 600) -> dict:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if WORKER and not WORKER[0].alive:
            raise RuntimeError(f"the worker died:\n{WORKER[0].log_tail()}")
        r = await http.get(f"/v1/mailroom/items/{item_id}", headers=headers)
        if r.status_code == 200 and r.json()["status"] in FINAL:
            return r.json()
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"{item_id} not final after {timeout} s")


LAST_ITEMS: dict[str, str] = {}  # file name -> item id of its latest single-file run (for the profile)


async def stack_one(http: httpx.AsyncClient, headers: dict[str, str], sample: Sample) -> float:
    started = time.perf_counter()
    (item_id,) = await upload(http, headers, [sample])
    item = await until_final(http, headers, item_id)
    seconds = time.perf_counter() - started
    if item["status"] == "failed":
        raise RuntimeError(f"{sample.name} failed: {item['reason_code']} {item['reason']}")
    LAST_ITEMS[sample.name] = item_id
    return seconds


async def profile(settings: Settings) -> None:
    """Where the time of each file's last run went, from its workflow history: every activity's
    wait in its task queue and its run time, and the workflow's own steps in between."""
    from temporalio.api.enums.v1 import EventType

    from aktenlauf.temporal import connect

    client = await connect(settings)
    totals: dict[str, list[float]] = {}
    print("\n(profile) last run of each file, seconds: activity run time [queue wait]; 'gaps' = workflow tasks "
          "and scheduling between activities")
    for name, item_id in LAST_ITEMS.items():
        history = await client.get_workflow_handle(item_id).fetch_history()
        events = list(history.events)
        scheduled: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        parts: list[str] = []
        busy = 0.0
        for e in events:
            t = e.event_time.ToDatetime().timestamp()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[e.event_id] = (e.activity_task_scheduled_event_attributes.activity_type.name, t)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[e.activity_task_started_event_attributes.scheduled_event_id] = t
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = e.activity_task_completed_event_attributes.scheduled_event_id
                kind, t_sched = scheduled[sid]
                run, wait = t - started[sid], started[sid] - t_sched
                busy += t - t_sched
                totals.setdefault(kind, []).append(run)
                parts.append(f"{kind} {run:.2f} [{wait:.2f}]")
        span = events[-1].event_time.ToDatetime().timestamp() - events[0].event_time.ToDatetime().timestamp()
        print(f"{name:<20} workflow {span:6.2f}  gaps {span - busy:5.2f}  " + ", ".join(parts))
    print("sum over files: " + ", ".join(f"{k} {sum(v):.2f}" for k, v in sorted(totals.items(), key=lambda kv: -sum(kv[1]))))


async def stack_batch(http: httpx.AsyncClient, headers: dict[str, str], batch: list[Sample]) -> float:
    started = time.perf_counter()
    ids = await upload(http, headers, batch)
    await asyncio.gather(*(until_final(http, headers, i) for i in ids))
    return time.perf_counter() - started


def start_worker(settings: Settings, log: Path) -> devstack.ManagedProcess:
    return devstack.ManagedProcess([sys.executable, "-m", "aktenlauf.cli", "worker", "--queues", "cases,ocr"],
                                   log_file=log, env=child_env(settings), cwd=ROOT)


# --------------------------------------------------------------------------- main


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="0: throughput only")
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--ocr-concurrency", type=int, default=None, help="default: the setting's default (cores)")
    ap.add_argument("--throughput-copies", type=int, default=1, help="each file this often in the throughput batch")
    args = ap.parse_args()

    from api.auth import mint_token
    from eakte.db import migrate

    tmp = Path(tempfile.mkdtemp(prefix="aktenlauf-bench-mailroom-"))
    procs: list[devstack.ManagedProcess] = []
    scratch = contextlib.ExitStack()
    temporal, s3 = start_servers(tmp, procs)
    try:
        port = devstack.free_port()
        db_url = scratch.enter_context(scratch_database(args.database_url, tmp, "aktenlauf_mailroom_bench"))
        migrate(db_url)
        extra = {} if args.ocr_concurrency is None else {"ocr_concurrency": args.ocr_concurrency}
        settings = bench_settings(db_url, temporal, s3, port, "mailroom", s3_bucket="bench",
                                  max_upload_bytes=30 * 1024 * 1024, **extra)
        procs.append(start_api(settings, port, tmp / "api.log"))
        procs.append(start_worker(settings, tmp / "worker.log"))
        WORKER.append(procs[-1])
        headers = {"Authorization": "Bearer " + mint_token(settings, "bench-post", ["mailroom"])}
        batch = samples()
        print(f"# {len(batch)} files, {sum(s.pages for s in batch)} pages; {args.runs} runs; OCR worker concurrency "
              f"{settings.ocr_concurrency}; database {db_url.split('://')[0]}; logs in {tmp}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            await stack_one(http, headers, batch[0])  # warm-up: workflow caches, connections, imports
            plain_run(batch[0], tmp / "warm")
            stack_s: dict[str, list[float]] = {s.name: [] for s in batch}
            plain_s: dict[str, list[float]] = {s.name: [] for s in batch}
            for run in range(args.runs):
                for s in batch:  # alternate, so a noisy neighbour hits both sides alike
                    plain_s[s.name].append(plain_run(s, tmp / f"plain-{run}-{s.name}"))
                    stack_s[s.name].append(await stack_one(http, headers, s))
            if args.runs:
                print("\n(1) overhead, one file at a time (medians of the runs, seconds)")
                print(f"{'file':<20} {'pages':>5} {'stack':>7} {'plain':>7} {'ratio':>6}   stack runs / plain runs")
                total_stack = total_plain = 0.0
                for s in batch:
                    st, pl = statistics.median(stack_s[s.name]), statistics.median(plain_s[s.name])
                    total_stack, total_plain = total_stack + st, total_plain + pl
                    print(f"{s.name:<20} {s.pages:>5} {st:>7.2f} {pl:>7.2f} {st / pl:>6.2f}   "
                          f"{' '.join(f'{x:.1f}' for x in stack_s[s.name])} / {' '.join(f'{x:.1f}' for x in plain_s[s.name])}")
                print(f"{'total':<20} {sum(s.pages for s in batch):>5} {total_stack:>7.2f} {total_plain:>7.2f} "
                      f"{total_stack / total_plain:>6.2f}   (target <= 1.15)")
            if args.runs:
                await profile(settings)
            if not args.skip_throughput:
                big = batch * args.throughput_copies
                pages = sum(s.pages for s in big)
                print(f"\n(2) throughput, {len(big)} files / {pages} pages at once (pages per minute)")
                plain_wall = await plain_parallel(big, tmp / "throughput-plain", 2)
                stack_wall = await stack_batch(http, headers, big)
                print(f"plain ocrmypdf, 2 processes: {pages / plain_wall * 60:6.1f} pages/min ({plain_wall:.1f} s)")
                print(f"stack, OCR concurrency {settings.ocr_concurrency}:  {pages / stack_wall * 60:6.1f} pages/min "
                      f"({stack_wall:.1f} s)   ratio stack/plain = {plain_wall / stack_wall:.2f}")
    finally:
        for p in reversed(procs):
            p.stop()
        scratch.close()


if __name__ == "__main__":
    asyncio.run(main())
