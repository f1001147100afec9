"""Content-addressed document storage on S3 through the minio SDK.

Objects live under ``sha256/<first two hex>/<hex>``: identical bytes are stored once, and
every read re-hashes what comes back and refuses a mismatch (IntegrityViolation).

Uploads are copied once into a private spool file (in the kernel, ``copy_file_range``, when the
upload already is a file, as the multipart parser leaves it), hashed once from that copy, and
sent in one PUT streamed from the file and signed with that hash (:meth:`_Minio.put_known`):
no second hashing pass and no copy of the body in memory.

Reads hash in a second thread while the next chunk comes off the socket (``hashlib`` and the
socket both release the GIL), so verifying costs little more than reading.
:meth:`BlobStore.read_verified` (HTTP downloads: no byte leaves before the whole object is
verified) keeps the object in memory within a per-object and a per-process budget, on disk
past either.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import queue
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
import urllib3
from minio import Minio
from minio.error import S3Error

from aktenlauf.errors import IntegrityViolation, Unavailable

log = structlog.get_logger(__name__)

CHUNK = 1024 * 1024
#: Reads take this much off the socket at a time (and hand it to the hashing thread).
READ_CHUNK = 4 * CHUNK
PART_SIZE = 16 * 1024 * 1024
#: Up to this size an object whose SHA-256 the store already knows goes up in one PUT, streamed
#: from its file and signed with that hash (no second pass over the bytes, no copy in memory);
#: larger ones as a multipart upload.
SINGLE_PUT_MAX = 512 * CHUNK
#: Request bodies go to the socket in blocks of this size (urllib3's default is 16 KiB).
SEND_BLOCK = CHUNK
#: A verified download is held in memory up to this size ...
MEMORY_SPOOL_MAX = 64 * CHUNK
#: ... while all verified downloads of the process held in memory stay below this; past
#: either limit it is spooled to a private temp file instead.
MEMORY_SPOOL_BUDGET = 256 * CHUNK
# A deduplicated upload rewrites an object older than this (keep it well below the sweep's grace period).
REFRESH_AFTER_S = 600


class TooLarge(ValueError):
    """More bytes arrived than the caller allowed (``max_bytes``)."""


@dataclass(frozen=True)
class BlobRef:
    bucket: str
    key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Spooled:
    """A private copy of an upload (only :meth:`BlobStore.spool` writes it), its SHA-256
    computed while it was written, and its size."""
    path: Path
    sha256: str
    size: int


class _MemoryBudget:
    """Bytes of verified downloads held in memory by this process (non-blocking reservations)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


_MEMORY = _MemoryBudget(MEMORY_SPOOL_BUDGET)


class _Sha256:
    """SHA-256 over chunks, computed in a helper thread while the caller reads the next chunk.

    The chunks are ``bytes`` (immutable), so what is hashed is exactly what was handed over.
    Small objects (one chunk) are hashed inline: a thread is not worth it."""

    _DONE = object()

    def __init__(self, expected_size: int | None) -> None:
        self._h = hashlib.sha256()
        self._q: queue.Queue[object] | None = None
        self._t: threading.Thread | None = None
        if expected_size is None or expected_size > READ_CHUNK:
            self._q = queue.Queue(maxsize=4)  # at most a few chunks wait: memory stays bounded
            self._t = threading.Thread(target=self._run, name="blob-sha256", daemon=True)
            self._t.start()

    def _run(self) -> None:
        assert self._q is not None
        while (chunk := self._q.get()) is not self._DONE:
            self._h.update(chunk)  # type: ignore[arg-type]

    def update(self, chunk: bytes) -> None:
        if self._q is None:
            self._h.update(chunk)
        else:
            self._q.put(chunk)

    def close(self) -> None:
        if self._t is not None and self._q is not None:
            self._q.put(self._DONE)
            self._t.join()
            self._q = None

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()


class VerifiedContent:
    """An object's bytes after its SHA-256 matched: in memory (``chunks``) or in a private
    spool file. File-like (``read``/``close``); close it to release memory or the file."""

    def __init__(self, size: int, *, chunks: list[bytes] | None = None, file: BinaryIO | None = None,
                 reserved: int = 0) -> None:
        self.size = size
        self.chunks = chunks
        self._file = file
        self._reserved = reserved
        self._buf: io.BytesIO | None = None  # built by read(); streaming uses ``chunks`` as they are

    @property
    def in_memory(self) -> bool:
        return self.chunks is not None

    def read(self, n: int = -1) -> bytes:
        if self._file is not None:
            return self._file.read(n)
        if self.chunks is None:
            return b""
        if self._buf is None:
            self._buf = io.BytesIO(b"".join(self.chunks))
        return self._buf.read(n)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._buf is not None:
            self._buf.close()
            self._buf = None
        self.chunks = None
        if self._reserved:
            _MEMORY.give(self._reserved)
            self._reserved = 0

    def __del__(self) -> None:  # a response never sent (client gone first) still gives its memory back
        self.close()

    def __enter__(self) -> VerifiedContent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Internal request header (never sent): ``(sha256 hex, length)`` of a body the caller already hashed.
_KNOWN_PAYLOAD = "x-aktenlauf-known-payload"


class _Minio(Minio):
    """The minio client, able to sign a PUT with a payload SHA-256 the caller already computed.

    Over plain HTTP the SDK signs every body with its SHA-256 (``x-amz-content-sha256``) and
    needs the body in memory for that: a second full pass over an upload the store hashed while
    spooling it. :meth:`put_known` hands the hash over instead and streams the body from its
    file; the server still checks the signed hash against the bytes it receives."""

    def _build_headers(self, host, headers=None, body=None, creds=None):  # type: ignore[no-untyped-def]
        known = headers.get(_KNOWN_PAYLOAD) if headers else None
        if known is None:
            return super()._build_headers(host, headers, body, creds)
        sha, length = known
        headers = {k: v for k, v in headers.items() if k != _KNOWN_PAYLOAD}  # the caller's stays for a retry
        headers, date = super()._build_headers(host, headers, None, creds)  # no body: nothing to hash
        headers["Content-Length"] = str(length)
        headers["x-amz-content-sha256"] = sha
        return headers, date

    def put_known(self, bucket: str, key: str, stream: BinaryIO, size: int, sha: str, content_type: str) -> None:
        """One PUT of ``size`` bytes from ``stream`` whose SHA-256 is ``sha``, streamed as it is read."""
        headers = {"Content-Type": content_type, "x-amz-meta-sha256": sha, _KNOWN_PAYLOAD: (sha, size)}
        resp = self._execute("PUT", bucket, key, body=stream, headers=headers, no_body_trace=True)  # type: ignore[arg-type]
        resp.close()


def object_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}"


class BlobStore:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False, region: str | None = None) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            blocksize=SEND_BLOCK,
        )
        self.client = _Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http)
        self.bucket = bucket

    # -- setup / health -------------------------------------------------------------
    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc

    def ping(self) -> None:
        try:
            self.client.bucket_exists(self.bucket)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc

    # -- writes ---------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc

    def _fresh(self, key: str) -> bool:
        """The object exists and was written less than REFRESH_AFTER_S ago."""
        try:
            st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        if st.last_modified is None:
            return False
        age = dt.datetime.now(dt.UTC) - st.last_modified.astimezone(dt.UTC)
        return age.total_seconds() < REFRESH_AFTER_S

    def put_bytes(self, data: bytes, content_type: str = "application/octet-stream") -> BlobRef:
        sha = hashlib.sha256(data).hexdigest()
        return self._put(io.BytesIO(data), len(data), sha, content_type)

    def put_file(self, path: Path, content_type: str = "application/octet-stream") -> BlobRef:
        sha = sha256_file(path)
        size = path.stat().st_size
        with path.open("rb") as fh:
            return self._put(fh, size, sha, content_type)

    def put_stream(self, stream: BinaryIO, content_type: str = "application/octet-stream", *, max_bytes: int | None = None) -> BlobRef:
        """Spool a stream of unknown length to a temp file (hashing as it goes), then store it.

        Raises ValueError("too large") as soon as more than ``max_bytes`` arrive.
        """
        with self.spool(stream, max_bytes=max_bytes) as spooled:
            return self.put_spooled(spooled, content_type)

    @contextmanager
    def spool(self, stream: BinaryIO, *, max_bytes: int | None = None, suffix: str = "") -> Iterator[Spooled]:
        """Copy a stream into a private temp file, hashing as it goes; removed on exit.

        For callers that must look at an upload before storing it (``api.uploads`` inspects
        it): inspect ``.path``, then :meth:`put_spooled`; the bytes are copied and hashed once.
        Raises ValueError("too large") as soon as more than ``max_bytes`` arrive."""
        tmp = tempfile.mkdtemp(prefix="aktenlauf-upload-")  # 0700: nobody else writes the copy
        try:
            path = Path(tmp) / f"upload{suffix}"
            copied = _copy_file(stream, path, max_bytes)
            if copied is not None:  # the kernel copied a file: now hash the copy itself, once
                os.chmod(path, 0o400)
                sha, size = _sha256_and_size(path)
                if size != copied:
                    raise IntegrityViolation(f"spooled upload {path} changed while it was hashed")
                yield Spooled(path, sha, size)
                return
            h = _Sha256(None)  # hashes in its thread while the next chunk is read and written
            size = 0
            try:
                with path.open("wb") as fh:
                    while chunk := stream.read(READ_CHUNK):
                        size += len(chunk)
                        if max_bytes is not None and size > max_bytes:
                            raise TooLarge("too large")
                        chunk = bytes(chunk)  # the hash and the copy see the same immutable bytes
                        h.update(chunk)
                        fh.write(chunk)
            finally:
                h.close()
            os.chmod(path, 0o400)
            yield Spooled(path, h.hexdigest(), size)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def put_spooled(self, spooled: Spooled, content_type: str = "application/octet-stream") -> BlobRef:
        """Store a :meth:`spool` copy under the hash computed while it was written."""
        with spooled.path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size != spooled.size:  # the copy changed: never store it
                raise IntegrityViolation(f"spooled upload {spooled.path} changed after it was hashed")
            return self._put(fh, spooled.size, spooled.sha256, content_type)

    def _put(self, stream: BinaryIO, size: int, sha: str, content_type: str) -> BlobRef:
        key = object_key(sha)
        ref = BlobRef(self.bucket, key, sha, size)
        try:
            if self._fresh(key):
                return ref  # content-addressed: identical bytes are stored once
            # new, or stored long ago and maybe orphaned: (re)write it so its age starts now and the
            # orphan sweep's grace period (eakte/sweep.py) spares it until this upload's row exists
            if size <= SINGLE_PUT_MAX and not self.client._base_url.is_https:  # https signs UNSIGNED-PAYLOAD
                self.client.put_known(self.bucket, key, stream, size, sha, content_type)
            else:
                self.client.put_object(
                    self.bucket, key, stream, size, content_type=content_type,
                    part_size=PART_SIZE, metadata={"x-amz-meta-sha256": sha},
                )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc
        log.debug("blob.stored", key=key, size=size)
        return ref

    def remove(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc

    # -- reads ----------------------------------------------------------------------
    def get_bytes(self, key: str, sha256: str) -> bytes:
        return b"".join(self.iter_verified(key, sha256))

    def download_to(self, key: str, sha256: str, path: Path) -> None:
        with path.open("wb") as fh:
            for chunk in self.iter_verified(key, sha256):
                fh.write(chunk)

    def iter_verified(self, key: str, sha256: str) -> Iterator[bytes]:
        """Stream an object; raises IntegrityViolation at the end if the hash differs.

        Callers that must not emit unverified bytes (e.g. HTTP downloads) use
        ``read_verified``, which holds the whole object (memory or a spool file) first.
        """
        resp = self._get(key)
        size = _content_length(resp)
        h = _Sha256(size)
        try:
            for chunk in resp.stream(READ_CHUNK):
                h.update(chunk)
                yield chunk
        finally:
            h.close()
            resp.close()
            resp.release_conn()
        self._check(key, sha256, h.hexdigest())

    def read_verified(self, key: str, sha256: str) -> VerifiedContent:
        """The object's bytes once their SHA-256 matched (IntegrityViolation otherwise).

        Held in memory up to MEMORY_SPOOL_MAX per object within MEMORY_SPOOL_BUDGET for the
        process, else in a private temp file. The caller closes the result."""
        resp = self._get(key)
        size = _content_length(resp)
        reserved = size if size is not None and size <= MEMORY_SPOOL_MAX and _MEMORY.take(size) else 0
        chunks: list[bytes] = []
        spool: BinaryIO | None = None if reserved or size == 0 else tempfile.TemporaryFile(prefix="aktenlauf-read-")
        h = _Sha256(size)
        ok = False
        try:
            for chunk in resp.stream(READ_CHUNK):
                h.update(chunk)
                if spool is None:
                    chunks.append(chunk)
                else:
                    spool.write(chunk)
            self._check(key, sha256, h.hexdigest())
            ok = True
        finally:
            h.close()
            resp.close()
            resp.release_conn()
            if not ok:
                if spool is not None:
                    spool.close()
                if reserved:
                    _MEMORY.give(reserved)
        if spool is None:
            return VerifiedContent(sum(map(len, chunks)), chunks=chunks, reserved=reserved)
        spool.seek(0, io.SEEK_END)
        n = spool.tell()
        spool.seek(0)
        return VerifiedContent(n, file=spool)

    def _get(self, key: str):  # type: ignore[no-untyped-def]
        try:
            return self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise IntegrityViolation(f"object {key} is missing from the store") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc

    @staticmethod
    def _check(key: str, expected: str, actual: str) -> None:
        if actual != expected:
            log.error("blob.integrity_violation", key=key, expected=expected, actual=actual)
            raise IntegrityViolation(f"object {key} does not match its recorded SHA-256")

    def list_keys(self, prefix: str = "sha256/") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name:
                yield obj.object_name


def _content_length(resp: urllib3.BaseHTTPResponse) -> int | None:
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _regular_file(stream: BinaryIO) -> BinaryIO | None:
    """The regular file behind ``stream`` (a rolled-over ``SpooledTemporaryFile``, as the multipart
    parser leaves a larger upload, or an open file), else None: memory and sockets are read."""
    f = getattr(stream, "_file", stream) if isinstance(stream, tempfile.SpooledTemporaryFile) else stream
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    try:
        return f if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None


def _copy_file(stream: BinaryIO, path: Path, max_bytes: int | None) -> int | None:
    """Copy what is left of a regular file (from its current position) to a new ``path`` in the
    kernel (``copy_file_range``: no pass through Python); returns the bytes copied, or None when
    ``stream`` is no regular file or the kernel cannot copy it (the caller then reads and writes).
    Raises TooLarge, copying nothing, when more than ``max_bytes`` are left."""
    src = _regular_file(stream)
    if src is None or not hasattr(os, "copy_file_range"):
        return None
    src.flush()  # written through the file object: make it visible to the kernel copy
    start = src.tell()
    left = os.fstat(src.fileno()).st_size - start
    if max_bytes is not None and left > max_bytes:
        raise TooLarge("too large")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    done = 0
    try:
        while done < left:
            n = os.copy_file_range(src.fileno(), fd, left - done, start + done, done)
            if n == 0:
                break
            done += n
    except OSError:  # e.g. a kernel or file system without it: copy in Python instead
        os.close(fd)
        os.unlink(path)
        src.seek(start)
        return None
    os.close(fd)
    src.seek(start + done)  # consumed, as a read to its end would leave it
    return done


def _sha256_and_size(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


