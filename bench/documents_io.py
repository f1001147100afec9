"""Document upload and download through the API against the raw minio SDK, same SeaweedFS, same run.

Raw: ``put_object``/``get_object`` of the very same payloads with the minio SDK's defaults.
API: ``POST /v1/cases/{id}/documents`` (multipart; size limit, magic bytes, the intake
inspection, content-addressed store, then Temporal's ``add_document`` Update and the worker's
``file_document`` activity) and ``GET /v1/documents/{id}/content`` (access check, audit row,
hash-verified read). The API runs in its own uvicorn process; raw and API calls are made by one
client process of their own, one request at a time, interleaved per repetition (raw put, API
upload, raw get, API download) so that a busy machine slows both alike. The API client is
urllib3 (the library under the minio SDK, so client costs are alike) unless ``--client httpx``.

Payloads: PNG files (RGB, stored deflate blocks) whose pixels are random bytes, so they are
incompressible, pass the intake inspection like any scan and weigh the requested size within a
few bytes. Every repetition gets fresh random pixels: the store is content-addressed (identical
bytes are stored once, ``eakte.blobstore.BlobStore._put`` skips the PUT for a fresh object), so
repeated bytes would measure a HEAD instead of an upload. ``--kind pdf`` wraps the same random
pixels as one image XObject in a one-page PDF (the worker then also reads it back for its text).

Prints MiB/s (bytes moved / time of the calls) and p50 latency per size and direction, the
ratio API/raw, and whether the target (API at least 0.8 of raw) is met; sizes are MiB.
``--profile`` runs the API process under yappi (all threads; ``--profile-clock cpu`` or
``wall``, which includes waiting for S3 and Temporal) and prints where its time goes.

Where it goes (measured with ``--profile``, 2 cores): an upload is received and inspected in
full before anything reaches S3 (receiving 20 MiB alone ~60 ms), stored in one PUT signed with
the hash computed while spooling, and then filed by the workflow's ``add_document`` Update, which
waits for the worker's ``file_document`` activity: 60–100 ms of Temporal round trips for ~8 ms of
database work — most of a 1 MiB upload. A download must read and verify the whole object
before its first byte is sent (a forged object answers 500 without any of its bytes), so it
pays the S3 read plus the send, about twice a raw get; the verified read itself is at its floor
(raw get + SHA-256 on a second thread). What is left would need a different contract (filing
asynchronously after the upload is answered, or streaming before verification), not a faster
implementation.

    .venv/bin/python bench/documents_io.py [--sizes 1,20] [--reps 30,10] [--kind png|pdf]
        [--client urllib3|httpx] [--profile [--profile-clock wall]]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import statistics
import struct
import sys
import tempfile
import textwrap
import time
import uuid
import zlib
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import bench_settings, start_api, start_servers  # noqa: E402
from aktenlauf import devstack  # noqa: E402
from aktenlauf.embedded import WorkerThread  # noqa: E402

MELDE = "99115005012000"
MIB = 1024 * 1024
TARGET = 0.8
RAW_BUCKET = "bench-raw"


# ----------------------------------------------------------------------------- payloads


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def random_png(size: int, width: int = 1024) -> bytes:
    """A valid RGB PNG of about ``size`` bytes whose pixels are random (incompressible)."""
    row = 1 + 3 * width
    overhead = 8 + 25 + 12 + 12 + 6 + 4  # signature, IHDR, IDAT and IEND framing, zlib header/adler
    per_row = row * (1 + 5 / 65535)  # stored deflate blocks add 5 bytes per 64 KiB
    height = max(1, int((size - overhead) // per_row))
    raw = bytearray(os.urandom(row * height))
    raw[::row] = bytes(height)  # filter byte 0 (None) at the start of every row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(raw), 0)  # stored blocks: random pixels would not shrink anyway
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def random_pdf(size: int, width: int = 1024) -> bytes:
    """A valid one-page PDF whose only image (FlateDecode, stored blocks) holds random pixels."""
    row = 3 * width
    height = max(1, (size - 1200) // (row + 5 * row // 65535 + 1))
    data = zlib.compress(os.urandom(row * height), 0)
    content = f"q {width * 72 // 300} 0 0 {height * 72 // 300} 0 0 cm /Im0 Do Q".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width * 72 // 300} {height * 72 // 300}] "
        f"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>".encode(),
        f"<< /Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace /DeviceRGB "
        f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# ----------------------------------------------------------------------------- client (own process)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class _Urllib3Api:
    """The API through urllib3, the HTTP library under the minio SDK: both sides then pay the
    same client costs, and the difference is the server's."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        import urllib3

        self.urllib3 = urllib3
        self.base, self.headers = base, headers
        self.pool = urllib3.PoolManager(maxsize=2, timeout=urllib3.Timeout(connect=5, read=120), retries=False)

    def upload(self, url: str, name: str, payload: bytes, ctype: str) -> tuple[int, str]:
        body, content_type = self.urllib3.encode_multipart_formdata(
            {"file": (name, payload, ctype), "kind": "Nachweis"})
        r = self.pool.request("POST", self.base + url, body=body,
                              headers={**self.headers, "Content-Type": content_type})
        return r.status, r.data.decode()

    def download(self, url: str) -> tuple[int, bytes]:
        r = self.pool.request("GET", self.base + url, headers=self.headers)
        return r.status, r.data

    def close(self) -> None:
        self.pool.clear()


class _HttpxApi:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=base, timeout=120, headers=headers)

    def upload(self, url: str, name: str, payload: bytes, ctype: str) -> tuple[int, str]:
        r = self.http.post(url, files={"file": (name, payload, ctype)}, data={"kind": "Nachweis"})
        return r.status_code, r.text

    def download(self, url: str) -> tuple[int, bytes]:
        r = self.http.get(url)
        return r.status_code, r.content

    def close(self) -> None:
        self.http.close()


def run_client(base: str, token: str, case_id: str, s3: tuple[str, str, str], kind: str,
               sizes_mib: list[float], reps: list[int], warmup: int, client: str) -> dict[str, dict[str, float]]:
    """Interleaved raw and API transfers; returns per (size, op) the bytes, times and latencies."""
    import json

    from minio import Minio

    endpoint, access, secret = s3
    raw = Minio(endpoint, access_key=access, secret_key=secret, secure=False)
    if not raw.bucket_exists(RAW_BUCKET):
        raw.make_bucket(RAW_BUCKET)
    make = random_png if kind == "png" else random_pdf
    ctype = "image/png" if kind == "png" else "application/pdf"
    headers = {"Authorization": f"Bearer {token}"}
    results: dict[str, dict[str, float]] = {}
    http = _Urllib3Api(base, headers) if client == "urllib3" else _HttpxApi(base, headers)
    try:
        for size_mib, n in zip(sizes_mib, reps, strict=True):
            lat: dict[str, list[float]] = {"raw put": [], "api upload": [], "raw get": [], "api download": []}
            nbytes = 0
            for i in range(warmup + n):
                payload = make(int(size_mib * MIB))  # fresh random pixels: a new object every time
                key = f"raw/{uuid.uuid4().hex}"
                t = time.perf_counter()
                raw.put_object(RAW_BUCKET, key, io.BytesIO(payload), len(payload), content_type=ctype)
                t_raw_put = time.perf_counter() - t

                t = time.perf_counter()
                status, text = http.upload(f"/v1/cases/{case_id}/documents", f"scan-{i}.{kind}", payload, ctype)
                t_api_up = time.perf_counter() - t
                if status != 201:
                    raise RuntimeError(f"upload answered {status}: {text[:500]}")
                doc_id = json.loads(text)["document_id"]

                t = time.perf_counter()
                resp = raw.get_object(RAW_BUCKET, key)
                try:
                    got = resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
                t_raw_get = time.perf_counter() - t

                t = time.perf_counter()
                status, body = http.download(f"/v1/documents/{doc_id}/content")
                t_api_down = time.perf_counter() - t
                if status != 200 or body != payload or got != payload:
                    raise RuntimeError(f"download answered {status} or the bytes differ")
                raw.remove_object(RAW_BUCKET, key)
                if i < warmup:
                    continue
                nbytes += len(payload)
                lat["raw put"].append(t_raw_put)
                lat["api upload"].append(t_api_up)
                lat["raw get"].append(t_raw_get)
                lat["api download"].append(t_api_down)
            for op, values in lat.items():
                results[f"{size_mib:g} MiB|{op}"] = {
                    "n": len(values), "bytes": nbytes, "seconds": sum(values),
                    "mib_s": nbytes / MIB / sum(values), "p50_ms": _pct(values, 50) * 1000,
                    "p90_ms": _pct(values, 90) * 1000, "mean_ms": statistics.fmean(values) * 1000,
                }
    finally:
        http.close()
    return results


# ----------------------------------------------------------------------------- API process (optionally profiled)

PROFILED_API = textwrap.dedent("""
    import os, signal, sys, yappi
    sys.path.insert(0, {root!r})
    yappi.set_clock_type({clock!r})
    yappi.start(builtins=True, profile_threads=True)
    # uvicorn shuts down on SIGTERM, restores this handler and raises the signal again
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    import uvicorn
    try:
        uvicorn.run("api.app:create_app", factory=True, host="127.0.0.1", port={port}, workers=1,
                    access_log=False, log_level="warning")
    finally:
        yappi.stop()
        yappi.get_func_stats().save({out!r}, type="pstat")
        with open({out!r} + ".threads", "w") as fh:
            yappi.get_thread_stats().print_all(out=fh)
""")


def print_profile(path: Path, top: int, clock: str) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\nAPI process profile (yappi, {clock} clock, all threads; own time total {total:.2f} s):")
    stats.sort_stats("tottime").print_stats(r"(hashlib|_io|socket|blobstore|uploads|documents|cases|minio|multipart)", top)
    stats.sort_stats("cumulative").print_stats(
        r"(store_upload|upload_document|execute_update|_inspect_and_put|put_stream|_put|_fresh|put_object|put_known|"
        r"_upload_part|spool|_copy_file|_sha256_and_size|"
        r"read_verified|iter_verified|check_file|inspect_file|sha256|_download|download|chunks|MultiPartParser.parse|"
        r"_url_open|iterate_in_threadpool|StreamingResponse|_form|get_request_handler)", top)
    threads = path.with_name(path.name + ".threads")
    if threads.exists():
        print(threads.read_text())


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,20", help="payload sizes in MiB, comma-separated")
    ap.add_argument("--reps", default="30,10", help="measured repetitions per size, comma-separated")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured repetitions per size")
    ap.add_argument("--kind", choices=("png", "pdf"), default="png")
    ap.add_argument("--client", choices=("urllib3", "httpx"), default="urllib3",
                    help="HTTP library of the API client (urllib3: the one under the minio SDK)")
    ap.add_argument("--profile", action="store_true", help="run the API process under yappi and print the profile")
    ap.add_argument("--profile-clock", choices=("cpu", "wall"), default="cpu",
                    help="yappi clock: CPU time per thread, or wall time (includes waiting for S3 and Temporal)")
    ap.add_argument("--profile-top", type=int, default=45)
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    reps = [int(r) for r in args.reps.split(",")]
    if len(reps) != len(sizes):
        raise SystemExit("--reps needs one count per size")

    from api.auth import mint_token
    from eakte.db import migrate

    tmp = Path(tempfile.mkdtemp(prefix="aktenlauf-docio-"))
    procs: list[devstack.ManagedProcess] = []
    url = f"sqlite:///{tmp / 'aktenlauf.db'}"
    worker = None
    prof_out = tmp / "api.pstat"
    try:
        temporal, weed = start_servers(tmp, procs)
        port = devstack.free_port()
        settings = bench_settings(url, temporal, weed, port, "docio")
        migrate(url)
        cmd = None
        if args.profile:
            cmd = [sys.executable, "-c", PROFILED_API.format(root=str(ROOT), port=port, out=str(prof_out),
                                                             clock=args.profile_clock)]
        worker = WorkerThread(settings, queues=("cases",))
        worker.start()
        procs.append(start_api(settings, port, tmp / "api.log", command=cmd))
        base = f"http://127.0.0.1:{port}"

        token = mint_token(settings, "portal-docio", ["integrator"])
        body = {"service_key": MELDE, "applicant": {"name": "Ida Owe", "address_lines": ["Weg 1", "12345 Musterstadt"]},
                "form": {"Zweck": "Durchsatz"}}
        r = httpx.post(f"{base}/v1/cases", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
        r.raise_for_status()
        case_id = r.json()["case_id"]
        print(f"API: uvicorn, 1 worker process{' under yappi' if args.profile else ''}; client: a separate "
              f"process ({args.client} for the API, the minio SDK for raw), one request at a time; payload: "
              f"{args.kind.upper()} with random pixels, fresh per repetition; SeaweedFS {weed.endpoint}", flush=True)

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            results = pool.apply(run_client, (base, token, case_id, (weed.endpoint, settings.s3_access_key, settings.s3_secret_key),
                                              args.kind, sizes, reps, args.warmup, args.client))

        print(f"\n{'size':>8} {'operation':14} {'n':>4} {'MiB/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'mean ms':>8}")
        for name, res in results.items():
            size, op = name.split("|")
            print(f"{size:>8} {op:14} {res['n']:>4} {res['mib_s']:>8.1f} {res['p50_ms']:>8.1f} "
                  f"{res['p90_ms']:>8.1f} {res['mean_ms']:>8.1f}")
        print(f"\n{'size':>8} {'direction':10} {'API/raw (MiB/s)':>16} {'raw/API (p50)':>14}  target >= {TARGET}")
        all_met = True
        for s in sizes:
            for api_op, raw_op, label in (("api upload", "raw put", "upload"), ("api download", "raw get", "download")):
                a, b = results[f"{s:g} MiB|{api_op}"], results[f"{s:g} MiB|{raw_op}"]
                ratio = a["mib_s"] / b["mib_s"]
                met = ratio >= TARGET
                all_met &= met
                print(f"{s:>4g} MiB {label:10} {ratio:>16.2f} {b['p50_ms'] / a['p50_ms']:>14.2f}  "
                      f"{'met' if met else 'NOT met'}")
        print(f"\ntarget (API at least {TARGET} of raw for every size and direction): {'met' if all_met else 'NOT met'}")
    finally:
        if worker is not None:
            worker.stop()
        for p in reversed(procs):  # the profiled API writes its profile on SIGTERM: give it time
            p.stop(timeout=30 if args.profile else None)
    if args.profile and prof_out.exists():
        print_profile(prof_out, args.profile_top, args.profile_clock)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
