"""Content-addressed document storage on S3 through the minio SDK.

Objects live under ``sha256/<first two hex>/<hex>``: identical bytes are stored once, and
every read re-hashes what comes back and refuses a mismatch (IntegrityViolation).

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


def object_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}"


class BlobStore:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *, secure: bool = False, region: str | None = None) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http)
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


