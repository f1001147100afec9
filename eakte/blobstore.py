"""Content-addressed document storage on S3 through the minio SDK.

Objects live under ``sha256/<first two hex>/<hex>``: identical bytes are stored once, and
every read re-hashes what comes back and refuses a mismatch (IntegrityViolation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import tempfile
from collections.abc import Iterator
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
PART_SIZE = 16 * 1024 * 1024
# A deduplicated upload rewrites an object older than this (keep it well below the sweep's grace period).
REFRESH_AFTER_S = 600


@dataclass(frozen=True)
class BlobRef:
    bucket: str
    key: str
    sha256: str
    size: int


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
        with tempfile.NamedTemporaryFile(prefix="aktenlauf-upload-") as tmp:
            h = hashlib.sha256()
            size = 0
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ValueError("too large")
                h.update(chunk)
                tmp.write(chunk)
            tmp.flush()
            tmp.seek(0)
            return self._put(tmp, size, h.hexdigest(), content_type)  # type: ignore[arg-type]

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
        ``read_verified`` which buffers to a spool file first.
        """
        try:
            resp = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise IntegrityViolation(f"object {key} is missing from the store") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"object store unreachable: {exc}") from exc
        h = hashlib.sha256()
        try:
            for chunk in resp.stream(CHUNK):
                h.update(chunk)
                yield chunk
        finally:
            resp.close()
            resp.release_conn()
        if h.hexdigest() != sha256:
            log.error("blob.integrity_violation", key=key, expected=sha256, actual=h.hexdigest())
            raise IntegrityViolation(f"object {key} does not match its recorded SHA-256")

    def read_verified(self, key: str, sha256: str) -> BinaryIO:
        """Return a seekable file holding the verified bytes (spooled to disk past 8 MiB)."""
        spool = tempfile.SpooledTemporaryFile(max_size=8 * CHUNK)
        for chunk in self.iter_verified(key, sha256):
            spool.write(chunk)
        spool.seek(0)
        return spool  # type: ignore[return-value]

    def list_keys(self, prefix: str = "sha256/") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name:
                yield obj.object_name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


