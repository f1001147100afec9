"""Hostile uploads against every endpoint that takes a file or a body.

Upload endpoints (api/routers): POST /v1/cases/{id}/documents, POST /v1/documents/{id}/versions,
POST /v1/mailroom/scans (multipart ``UploadFile``) and POST /v1/admin/akten/import
(``request.stream()`` / multipart). JSON/raw bodies are read by POST /v1/cases (JSON model),
/v1/codec/{encode,decode} and /v1/payments/webhook (``request.body()``).

Each hostile request ends in a clear 4xx (problem+json) or, for an accepted letter, a failed
intake with a reason; a refused one leaves no row and no S3 object behind, and the API
process's memory stays bounded. The stack here is a real uvicorn server (tests/conftest.py:
``running_stack``) with a small upload limit, so "over the limit" bodies are cheap to send.
The corpus is read from ../shared/corpus/scans (never copied).
"""

from __future__ import annotations

import io
import select
import socket
import threading
import time
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select as sql_select

from eakte.models import Akte, Dokument, MailItem, Version, Vorgang
from tests.conftest import CORPUS, Stack, fresh_database, running_stack
from tests.integration.helpers import MELDE, application

MIB = 1024 * 1024
LIMIT = 3 * MIB                      # max_upload_bytes of this stack
BODY_LIMIT = LIMIT + MIB             # what api/app.py allows for a whole request (multipart overhead)
RSS_BUDGET = 150 * MIB               # growth of this process (API + worker threads) a hostile file may cause
TRIVIAL = (CORPUS / "trivial.pdf").read_bytes()


# --------------------------------------------------------------------------- the stack and the endpoints


@dataclass
class Target:
    name: str
    path: str
    headers: dict[str, str]
    field: str
    form: dict[str, str] = field(default_factory=dict)
    ok: int = 201


@dataclass
class Env:
    stack: Stack
    http: httpx.Client
    sessions: Any
    store: Any
    targets: dict[str, Target]
    json_bodies: dict[str, tuple[str, dict[str, str]]]


def _wait(http: httpx.Client, url: str, headers: dict[str, str], wanted: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = http.get(url, headers=headers)
        if r.status_code == 200:
            last = r.json()
            if last["status"] in wanted:
                return last
        time.sleep(0.25)
    raise AssertionError(f"{url} did not reach {wanted}; last: {last}")


@pytest.fixture(scope="module")
def env(database_url, temporal_server, s3_server, tmp_path_factory) -> Iterator[Env]:  # type: ignore[no-untyped-def]
    with fresh_database(database_url, tmp_path_factory) as url, \
            running_stack(url, temporal_server, s3_server, max_upload_bytes=LIMIT) as st, \
            httpx.Client(base_url=st.base_url, timeout=60) as http:
        portal = st.token("portal-hostile", "integrator")
        r = http.post("/v1/cases", json=application(MELDE), headers=portal)
        assert r.status_code in (200, 201, 202), r.text
        case_id = r.json()["case_id"]
        _wait(http, f"/v1/cases/{case_id}", portal, ("awaiting_decision",), 60)
        r = http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                      files={"file": ("nachweis.pdf", TRIVIAL, "application/pdf")}, data={"kind": "Nachweis"})
        assert r.status_code == 201, r.text
        document_id = r.json()["document_id"]
        targets = {
            "case-documents": Target("case-documents", f"/v1/cases/{case_id}/documents", portal, "file",
                                     {"kind": "Nachweis"}),
            "document-versions": Target("document-versions", f"/v1/documents/{document_id}/versions", portal, "file",
                                        {"reason": "korrigierte Fassung"}),
            "mailroom-scans": Target("mailroom-scans", "/v1/mailroom/scans", st.token("post-hostile", "mailroom"),
                                     "files", ok=202),
            "xdomea-import": Target("xdomea-import", "/v1/admin/akten/import?reason=Uebernahme",
                                    st.token("admin-hostile", "admin"), "file"),
        }
        json_bodies = {  # endpoints that read a whole non-file body
            "create-case": ("/v1/cases", portal),
            "codec-encode": ("/v1/codec/encode", st.token("admin-hostile", "admin")),
            "payment-webhook": ("/v1/payments/webhook", {}),
        }
        yield Env(st, http, st.sessions(), st.store(), targets, json_bodies)


FILE_TARGETS = ["case-documents", "document-versions", "mailroom-scans"]
ALL_TARGETS = [*FILE_TARGETS, "xdomea-import"]


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Snapshot:
    rows: dict[str, int]
    keys: frozenset[str]


def snapshot(env: Env) -> Snapshot:
    with env.sessions() as s:
        rows = {m.__name__: s.scalar(sql_select(func.count()).select_from(m)) or 0
                for m in (Dokument, Version, MailItem, Akte, Vorgang)}
    return Snapshot(rows, frozenset(env.store.list_keys()))


def assert_nothing_stored(env: Env, before: Snapshot) -> None:
    after = snapshot(env)
    assert after.rows == before.rows, f"rows changed after a refused upload: {before.rows} -> {after.rows}"
    assert after.keys == before.keys, f"objects left behind: {sorted(after.keys - before.keys)}"


def multipart(parts: list[tuple[str, bytes, bytes | None, str]]) -> tuple[bytes, str]:
    """A multipart body built by hand, so filenames can hold raw bytes httpx would escape.
    ``parts``: (field, filename bytes or None for a text field, content type)."""
    boundary = "hostile" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, data, filename, ctype in parts:
        out.write(f"--{boundary}\r\n".encode())
        disp = f'Content-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            disp += b'; filename="' + filename + b'"'
        out.write(disp + b"\r\n")
        if filename is not None:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(env: Env, t: Target, data: bytes, filename: bytes = b"dokument.pdf",
           ctype: str = "application/pdf") -> httpx.Response:
    parts = [(t.field, data, filename, ctype)] + [(k, v.encode(), None, "") for k, v in t.form.items()]
    body, content_type = multipart(parts)
    return env.http.post(t.path, content=body, headers={**t.headers, "Content-Type": content_type})


def assert_problem(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, f"{r.status_code} (wanted {statuses}): {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == r.status_code and body["detail"] and body["type"].startswith("urn:aktenlauf:problem:")
    return body


class RssPeak:
    """Peak resident memory of this process (uvicorn thread + worker thread live here) while
    the block runs, relative to the start: sampled from /proc every 10 ms."""

    def __enter__(self) -> RssPeak:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096


# --------------------------------------------------------------------------- raw HTTP


def _raw_request_head(env: Env, path: str, headers: dict[str, str], extra: str) -> bytes:
    host = env.stack.base_url.removeprefix("http://")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect(env: Env) -> socket.socket:
    host, port = env.stack.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def declared_gigabyte(env: Env, path: str, headers: dict[str, str], content_type: str) -> tuple[int, dict[str, str], float]:
    """Declare a 1 GB body, send 8 KB of it: the answer must come without the rest."""
    with _connect(env) as sock:
        started = time.monotonic()
        sock.sendall(_raw_request_head(env, path, headers, f"Content-Type: {content_type}\r\nContent-Length: {10**9}"))
        sock.sendall(b"--x\r\n" + b"A" * 8192)
        status, resp_headers, _ = _read_response(sock, 10)
        return status, resp_headers, time.monotonic() - started


def chunked_flood(env: Env, path: str, headers: dict[str, str], content_type: str, preamble: bytes,
                  cap: int) -> tuple[int | None, int, dict[str, str]]:
    """Stream an endless chunked body (no Content-Length); stop when the server answers.
    Returns (status or None, bytes sent when the answer was seen, headers)."""
    sent = 0
    with _connect(env) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        sock.sendall(_raw_request_head(env, path, headers,
                                       f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked"))
        piece = b"0" * (256 * 1024)
        first = preamble + piece[: len(piece) - len(preamble)]
        try:
            while sent < cap:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                block = first if sent == 0 else piece
                sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read what it said
        else:
            if sent >= cap:  # the server read everything: finish the body, take its answer
                try:
                    sock.sendall(b"0\r\n\r\n")
                except OSError:
                    pass
        try:
            status, resp_headers, _ = _read_response(sock, 30)
        except (ConnectionResetError, TimeoutError, IndexError, ValueError):
            return None, sent, {}
        return status, sent, resp_headers


# --------------------------------------------------------------------------- bombs


def flate_bomb_pdf(inflated: int = 256 * MIB) -> bytes:
    """A valid one-page PDF whose content stream is ~1 KB stored and ``inflated`` bytes decoded
    (spaces, deflated twice: /Filter [/FlateDecode /FlateDecode])."""
    c = zlib.compressobj(9)
    block = b" " * MIB
    once = b"".join(c.compress(block) for _ in range(inflated // MIB)) + c.flush()
    twice = zlib.compress(once, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << >> >>",
        b"<< /Length %d /Filter [/FlateDecode /FlateDecode] >>\nstream\n" % len(twice) + twice + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % o for o in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def zip_bomb(inflated: int = 200 * MIB) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("rechnung.pdf", "w", force_zip64=True) as member:
            block = b"\0" * MIB
            for _ in range(inflated // MIB):
                member.write(block)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"flate": flate_bomb_pdf(), "zip": zip_bomb()}


# --------------------------------------------------------------------------- tests: every upload endpoint


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_a_zero_byte_file_is_refused_and_nothing_is_stored(env: Env, target: str) -> None:
    before = snapshot(env)
    r = upload(env, env.targets[target], b"", b"leer.pdf")
    assert_problem(r, 422)
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_a_declared_gigabyte_is_refused_before_the_body_is_read(env: Env, target: str) -> None:
    before = snapshot(env)
    t = env.targets[target]
    status, headers, took = declared_gigabyte(env, t.path, t.headers, "multipart/form-data; boundary=x")
    assert status == 413, status
    assert headers["content-type"].startswith("application/problem+json")
    assert took < 5, f"the 413 took {took:.1f} s: the server waited for the body"
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_a_chunked_body_over_the_limit_is_cut_off_at_the_limit(env: Env, target: str) -> None:
    """No Content-Length to judge: the server must stop reading once the limit is passed,
    not spool the whole body (to memory or disk) and refuse it afterwards."""
    before = snapshot(env)
    t = env.targets[target]
    preamble = (f'--x\r\nContent-Disposition: form-data; name="{t.field}"; filename="gross.pdf"\r\n'
                "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n").encode()
    cap = BODY_LIMIT + 64 * MIB  # without a streaming limit the server reads all of it
    status, sent, headers = chunked_flood(env, t.path, t.headers, "multipart/form-data; boundary=x", preamble, cap)
    assert status == 413, f"status {status} after {sent / MIB:.0f} MiB"
    assert headers["content-type"].startswith("application/problem+json")
    # loopback socket buffers may hold some MiB more than the server took; not the whole flood
    assert sent < BODY_LIMIT + 16 * MIB, f"the server read on to {sent / MIB:.0f} MiB before answering 413"
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("body_endpoint", ["create-case", "codec-encode", "payment-webhook"])
def test_a_chunked_json_body_over_the_limit_is_cut_off(env: Env, body_endpoint: str) -> None:
    path, headers = env.json_bodies[body_endpoint]
    before = snapshot(env)
    with RssPeak() as rss:
        status, sent, _ = chunked_flood(env, path, headers, "application/json", b'{"payloads": ["',
                                        BODY_LIMIT + 64 * MIB)
    assert status == 413, f"status {status} after {sent / MIB:.0f} MiB"
    assert sent < BODY_LIMIT + 16 * MIB, f"the server read on to {sent / MIB:.0f} MiB before answering"
    assert rss.growth < RSS_BUDGET, f"memory grew by {rss.growth / MIB:.0f} MiB"
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_a_multipart_body_just_over_the_limit_is_refused(env: Env, target: str) -> None:
    before = snapshot(env)
    r = upload(env, env.targets[target], b"%PDF-1.4\n" + b"0" * (LIMIT + 1), b"gross.pdf")
    assert_problem(r, 413)
    assert_nothing_stored(env, before)


LIES = {
    "exe-as-pdf": (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\0" * 2000, b"setup.pdf", "application/pdf"),
    "zip-as-pdf": (None, b"rechnung.pdf", "application/pdf"),  # a small ZIP, built below
    "html-as-png": (b"<!doctype html><script>alert(1)</script>", b"bild.png", "image/png"),
    "text-as-pdf": (b"Sehr geehrte Damen und Herren,\n" * 20, b"brief.pdf", "application/pdf"),
}


def _small_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.pdf", TRIVIAL)
    return buf.getvalue()


@pytest.mark.parametrize("lie", sorted(LIES))
@pytest.mark.parametrize("target", FILE_TARGETS)
def test_a_file_whose_bytes_lie_about_its_type_is_refused_with_415(env: Env, target: str, lie: str) -> None:
    data, name, ctype = LIES[lie]
    before = snapshot(env)
    r = upload(env, env.targets[target], data if data is not None else _small_zip(), name, ctype)
    assert_problem(r, 415)
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("what", ["pdf-as-package", "exe-as-zip", "zip-bomb-as-pdf"])
def test_the_import_refuses_what_is_not_a_package(env: Env, bombs: dict[str, bytes], what: str) -> None:
    t = env.targets["xdomea-import"]
    before = snapshot(env)
    with RssPeak() as rss:
        if what == "pdf-as-package":  # a raw application/zip body that is a PDF
            r = env.http.post(t.path, content=TRIVIAL, headers={**t.headers, "Content-Type": "application/zip"})
        elif what == "exe-as-zip":
            r = env.http.post(t.path, content=b"MZ\x90\x00" + b"\0" * 4000,
                              headers={**t.headers, "Content-Type": "application/zip"})
        else:  # multipart with a ZIP bomb named .pdf
            r = upload(env, t, bombs["zip"], b"bescheid.pdf", "application/pdf")
        status = r.status_code
    assert 400 <= status < 500, r.text
    assert_problem(r, status)
    assert rss.growth < RSS_BUDGET, f"memory grew by {rss.growth / MIB:.0f} MiB"
    assert_nothing_stored(env, before)


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_a_zip_bomb_named_pdf_is_refused_without_being_inflated(env: Env, bombs: dict[str, bytes], target: str) -> None:
    assert len(bombs["zip"]) < LIMIT
    before = snapshot(env)
    with RssPeak() as rss:
        r = upload(env, env.targets[target], bombs["zip"], b"bescheid.pdf", "application/pdf")
    assert_problem(r, 415)
    assert rss.growth < RSS_BUDGET, f"memory grew by {rss.growth / MIB:.0f} MiB"
    assert_nothing_stored(env, before)


HOSTILE_NAMES = {
    "dotdot": "../../../etc/passwd.pdf".encode(),
    "absolute": b"/etc/shadow.pdf",
    "windows": b"C:\\Windows\\System32\\evil.pdf",
    "nul": b"brief\x00.exe.pdf",
    "controls": b"a\x07b\x1b[31m\x7fc\x08.pdf",
    "long": ("x" * 300 + ".pdf").encode(),
    "rtl-override": "rechnung\u202efdp.exe".encode(),
    "bidi-isolates": "\u2066\u2067brief\u2069\u200b.pdf".encode(),
    "only-dots": b"..",
    "percent-encoded": b"..%2F..%2Fetc%2Fpasswd.pdf",
}


def _assert_safe_name(name: str) -> None:
    assert name, "empty stored name"
    assert "/" not in name and "\\" not in name, name
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name), repr(name)
    assert not name.startswith(".") and ".." not in name.split("/"), name
    assert len(name) <= 255, len(name)


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
@pytest.mark.parametrize("target", FILE_TARGETS)
def test_hostile_filenames_are_sanitised_or_refused(env: Env, target: str, name: str) -> None:
    t = env.targets[target]
    before = snapshot(env)
    # a fresh file each time: the mailroom answers the same bytes again as a duplicate
    r = upload(env, t, TRIVIAL + f"\n%{uuid.uuid4().hex}\n".encode(), HOSTILE_NAMES[name])
    if r.status_code >= 400:
        assert_problem(r, 400, 422)
        assert_nothing_stored(env, before)
        return
    assert r.status_code == t.ok, r.text
    if target == "mailroom-scans":
        item = r.json()["items"][0]
        _assert_safe_name(item["filename"])
        final = _wait(env.http, f"/v1/mailroom/items/{item['id']}", t.headers, ("filed", "triage", "failed"), 120)
        stored = [final["filename"]]
    else:
        with env.sessions() as s:
            doc = s.get(Dokument, r.json()["document_id"])
            stored = [doc.filename]
    with env.sessions() as s:  # every stored name of every row, not only the answered one
        stored += list(s.scalars(sql_select(Dokument.filename))) + list(s.scalars(sql_select(MailItem.filename)))
    for stored_name in stored:
        _assert_safe_name(stored_name)


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_a_flate_bomb_pdf_is_refused_by_the_inspection(env: Env, bombs: dict[str, bytes], target: str) -> None:
    """~1 KB on the wire, 256 MiB once its content stream is inflated. A case document is
    refused with 422 ``decompression-bomb`` and nothing is stored; the mailroom keeps the
    letter and ends it ``failed`` with ``decompression_bomb``, from the inspection before OCR
    (in seconds, not after half a minute of OCR on 256 MiB of spaces)."""
    t = env.targets[target]
    before = snapshot(env)
    started = time.monotonic()
    with RssPeak() as rss:
        r = upload(env, t, bombs["flate"], b"bombe.pdf")
        item = None
        if target == "mailroom-scans":
            assert r.status_code == 202, r.text
            item = _wait(env.http, f"/v1/mailroom/items/{r.json()['items'][0]['id']}", t.headers,
                         ("filed", "triage", "failed"), 60)
    took = time.monotonic() - started
    assert rss.growth < RSS_BUDGET, f"memory grew by {rss.growth / MIB:.0f} MiB"
    if item is not None:  # the mailroom keeps the original and says why it could not read it
        assert (item["status"], item["reason_code"]) == ("failed", "decompression_bomb"), item
        assert "decompression bomb" in item["reason"] and "Traceback" not in item["reason"], item
        assert took < 15, f"the bomb took {took:.1f} s to be refused"
        return
    body = assert_problem(r, 422)
    assert body["type"] == "urn:aktenlauf:problem:decompression-bomb", body
    assert "decompression bomb" in body["detail"], body
    assert took < 5, f"the refusal took {took:.1f} s"
    assert_nothing_stored(env, before)


#: what the inspection says about a corpus file a clerk could not open, as a problem code
UNOPENABLE = {
    "invalid.pdf": "pdf-unreadable",           # header + EOF only
    "encrypted-userpw.pdf": "pdf-encrypted",   # needs a password
    "hugemono.pdf": "image-too-large",         # 35000 x 35000 declared in 11 KB
    "livecycle.pdf": "pdf-unsupported",        # dynamic XFA form: only Adobe Reader shows it
}
NOT_A_DOCUMENT = {"README.md", "linn.txt"}     # 415 from the magic bytes


@pytest.mark.parametrize("name", sorted(UNOPENABLE))
@pytest.mark.parametrize("target", ["case-documents", "document-versions"])
def test_a_pdf_a_clerk_cannot_open_is_refused_with_its_code(env: Env, target: str, name: str) -> None:
    before = snapshot(env)
    r = upload(env, env.targets[target], (CORPUS / name).read_bytes(), name.encode())
    body = assert_problem(r, 422)
    assert body["type"] == f"urn:aktenlauf:problem:{UNOPENABLE[name]}", body
    assert_nothing_stored(env, before)


def test_an_image_declaring_gigapixels_is_refused_from_its_header(env: Env) -> None:
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 1, 0, 0, 0, 0))
           + chunk(b"IEND", b""))
    before = snapshot(env)
    r = upload(env, env.targets["case-documents"], png, b"riesig.png", "image/png")
    body = assert_problem(r, 422)
    assert body["type"] == "urn:aktenlauf:problem:image-too-large", body
    assert_nothing_stored(env, before)


CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir())


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_every_corpus_file_is_filed_or_refused_precisely(env: Env, name: str) -> None:
    t = env.targets["case-documents"]
    data = (CORPUS / name).read_bytes()
    ctype = {"png": "image/png", "pdf": "application/pdf"}.get(name.rsplit(".", 1)[-1], "text/plain")
    before = snapshot(env)
    with RssPeak() as rss:
        r = upload(env, t, data, name.encode(), ctype)
    assert r.status_code < 500, r.text
    assert rss.growth < RSS_BUDGET, f"memory grew by {rss.growth / MIB:.0f} MiB"
    if name in UNOPENABLE or name in NOT_A_DOCUMENT:
        body = assert_problem(r, 415 if name in NOT_A_DOCUMENT else 422)
        if name in UNOPENABLE:
            assert body["type"] == f"urn:aktenlauf:problem:{UNOPENABLE[name]}", body
        assert_nothing_stored(env, before)
        return
    assert r.status_code == 201, r.text
    after = snapshot(env)
    assert after.rows["Dokument"] == before.rows["Dokument"] + 1 and after.rows["Version"] == before.rows["Version"] + 1
    with env.sessions() as s:
        doc = s.get(Dokument, r.json()["document_id"])
        assert doc is not None and doc.filename == name
        v = doc.versions[0]
    assert v.object_key in after.keys and v.size == len(data)
