"""The electronic seal (elektronisches Siegel) on issued documents: a PAdES baseline signature
(PAdES-B-B, ETSI.CAdES.detached) with pyHanko, and its validation.

Framework-free: never imports FastAPI or Temporal and never reads ``os.environ``; the worker and
the API hand in the paths from the settings.

Why the signature is *deterministic*: issued documents are stored content-addressed, and an
activity retried after a crash between the S3 put and the database commit must write the same
object again, not a second, different one. So

* the signing time is given by the caller (derived from ``issued_on``, not from the clock),
* the signature scheme is RSA PKCS#1 v1.5 (deterministic; PSS and ECDSA are randomised),
* the incremental update's second ``/ID`` and ``/ModDate`` (Info dictionary and XMP) are pinned
  instead of pyHanko's ``os.urandom``/"now".

With an EC production key the signature bytes differ per attempt; idempotency then rests on the
document's idempotency key alone (the object of a crashed attempt becomes an orphan the sweep removes).

Development seal: :func:`ensure_dev_seal` creates a self-signed RSA key and certificate once (key
file mode 0600, written atomically, so an API and a worker starting together agree on one pair).
Production uses the configured key and certificate (see aktenlauf/settings.py, SEAL_*).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import hashlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.metadata.model import DocumentMetadata
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import get_pyca_cryptography_hash
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

__all__ = ["DEV_SEAL_SUBJECT", "Seal", "SealCheck", "SealError", "check_seal", "dev_seal", "ensure_dev_seal",
           "open_seal"]

DEV_SEAL_SUBJECT = "Stadt Musterstadt Dienstsiegel (Entwicklung)"
SEAL_FIELD = "Dienstsiegel"
KEY_FILE = "seal-key.pem"
CERT_FILE = "seal-cert.pem"
#: the development certificate is valid from here, so any issued_on of a test or a replayed case
#: (signing time = issued_on, midnight UTC) lies inside its validity
_DEV_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_DEV_YEARS = 30

_LOCK = threading.Lock()  # creating the dev seal: one thread at a time per process


class SealError(ValueError):
    """The seal key/certificate is missing, unreadable or does not fit together."""


def _outside_event_loop(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Call ``fn`` (a pyHanko sync wrapper, which runs ``asyncio.run`` inside) on a thread without a
    running event loop: directly in a worker thread, on a helper thread from async code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# --------------------------------------------------------------------------- key material


def ensure_dev_seal(directory: Path, subject: str = DEV_SEAL_SUBJECT,
                    organisation: str = "Stadt Musterstadt") -> tuple[Path, Path]:
    """The development seal's (key, certificate) paths under ``directory``, created if absent.

    Idempotent: an existing pair is kept as it is (certificates issued with it stay verifiable).
    The key is written with mode 0600 and both files are placed with an atomic no-replace link,
    so two processes starting at once end up with one pair. A key without its certificate (or
    the other way round) is refused instead of silently replaced."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    with _LOCK:
        if key_path.exists() and cert_path.exists():
            _check_key_mode(key_path)
            return key_path, cert_path
        if key_path.exists() != cert_path.exists():
            raise SealError(f"incomplete development seal in {directory}: {KEY_FILE} and {CERT_FILE} belong "
                            "together; remove the remaining one to create a new pair")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
        ])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_DEV_NOT_BEFORE)
            .not_valid_after(dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=365 * _DEV_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        # the key first: a cert without its key is never visible to another process
        if not _place(key_path, key_pem, 0o600):
            # another process won the race for the key: wait for its certificate
            return _wait_for(key_path, cert_path)
        _place(cert_path, cert_pem, 0o644)
        return key_path, cert_path


def _place(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to ``path`` unless it exists (atomic: temp file + link); False if it existed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _wait_for(key_path: Path, cert_path: Path, timeout_s: float = 10.0) -> tuple[Path, Path]:
    import time

    deadline = time.monotonic() + timeout_s
    while not cert_path.exists():
        if time.monotonic() > deadline:
            raise SealError(f"{key_path} exists but {cert_path} did not appear")
        time.sleep(0.05)
    return key_path, cert_path


def _check_key_mode(key_path: Path) -> None:
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SealError(f"the seal key {key_path} is readable by others (mode {mode:o}); chmod 600 it")


def load_certificate(cert_path: Path) -> asn1_x509.Certificate:
    try:
        data = cert_path.read_bytes()
    except OSError as exc:
        raise SealError(f"seal certificate {cert_path} cannot be read: {exc.strerror}") from exc
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SealError(f"seal certificate {cert_path} is not a PEM or DER X.509 certificate") from exc
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def subject_of(cert: asn1_x509.Certificate) -> str:
    """The certificate subject as an RFC 4514 string, e.g. ``CN=...,O=...,C=DE``."""
    return x509.load_der_x509_certificate(cert.dump()).subject.rfc4514_string()


def open_seal(key_path: Path | None, cert_path: Path | None, passphrase: bytes | None = None, *,
              dev_dir: Path | None = None, name: str = "", production: bool = False) -> Seal:
    """The configured seal, or in dev/test (no paths, ``dev_dir`` given) the development seal,
    created once. Production without a configured key and certificate is refused."""
    if key_path is not None and cert_path is not None:
        return Seal.load(key_path, cert_path, passphrase, name=name)
    if production or dev_dir is None or key_path is not None or cert_path is not None:
        raise SealError("the seal needs both SEAL_KEY_PATH and SEAL_CERT_PATH"
                        + (" in production" if production else ""))
    return Seal.load(*dev_seal(dev_dir, name), name=name)


def dev_seal(dev_dir: Path, name: str = "") -> tuple[Path, Path]:
    """The (key, certificate) paths of authority ``name``'s development seal, created once."""
    subject = f"{name} Dienstsiegel (Entwicklung)" if name else DEV_SEAL_SUBJECT
    return ensure_dev_seal(dev_dir, subject=subject, organisation=name or "Stadt Musterstadt")


# --------------------------------------------------------------------------- signing


class _PinnedMetadata(DocumentMetadata):
    """pyHanko sets ``last_modified = "now"`` right before writing; this keeps the pinned time."""

    _pinned: dt.datetime | None = None

    def __setattr__(self, name: str, value: object) -> None:
        if name == "last_modified" and value == "now" and self._pinned is not None:
            value = self._pinned
        super().__setattr__(name, value)


class _DeterministicWriter(IncrementalPdfFileWriter):
    """An incremental writer whose new trailer /ID and modification dates derive from its input."""

    def __init__(self, data: bytes, when: dt.datetime) -> None:
        super().__init__(io.BytesIO(data), strict=True)
        id1 = self._document_id[0]
        id2 = generic.ByteStringObject(hashlib.sha256(b"aktenlauf-seal\0" + data).digest()[:16])
        self._document_id = generic.ArrayObject([id1, id2])
        meta = _PinnedMetadata()
        object.__setattr__(meta, "_pinned", when)
        meta.last_modified = when
        self._meta = meta


@dataclass(frozen=True)
class Seal:
    """A loaded seal: pyHanko signer plus the certificate (trust root for our own validation)."""

    signer: signers.SimpleSigner
    certificate: asn1_x509.Certificate
    subject: str
    name: str  # the organisation that seals, printed as the signature's /Name
    #: the signature container's reserved size, measured by pyHanko's estimate at the first signature
    #: (a dry-run signature) and reused: it depends on the key and certificate only, so every later
    #: document gets exactly the reservation it would have got, without a second signature per document
    _reserved: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path, passphrase: bytes | None = None, *, name: str = "") -> Seal:
        """Load key and certificate (PEM or DER); raises :class:`SealError` with a clear reason."""
        for p in (key_path, cert_path):
            if not p.is_file():
                raise SealError(f"seal file {p} does not exist")
        _check_key_mode(key_path)
        cert = load_certificate(cert_path)
        try:
            signer = signers.SimpleSigner.load(str(key_path), str(cert_path), key_passphrase=passphrase or None)
        except Exception as exc:  # noqa: BLE001 - pyHanko logs and raises various types for bad keys
            raise SealError(f"seal key {key_path} cannot be loaded (wrong passphrase or not a private key)") from exc
        if signer is None:  # older pyHanko returns None on failure
            raise SealError(f"seal key {key_path} cannot be loaded (wrong passphrase or not a private key)")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        try:
            raw = key_path.read_bytes()
            loader = serialization.load_pem_private_key if b"-----BEGIN" in raw else serialization.load_der_private_key
            private_key = loader(raw, password=passphrase or None)  # parsed once: checked here, signs below
        except (ValueError, TypeError) as exc:
            raise SealError(f"seal key {key_path} cannot be loaded (wrong passphrase or not a private key)") from exc
        key_pub = private_key.public_key().public_bytes(*spki)
        if x509.load_der_x509_certificate(cert.dump()).public_key().public_bytes(*spki) != key_pub:
            raise SealError(f"seal key {key_path} does not belong to the certificate {cert_path}")
        kept = _ParsedKeySigner.__new__(_ParsedKeySigner)  # the same signer, keeping the parsed key
        kept.__dict__.update(signer.__dict__)
        kept.private_key = private_key
        return cls(signer=kept, certificate=cert, subject=subject_of(cert), name=name)

    def signing_time(self, issued_on: dt.date) -> dt.datetime:
        """Midnight UTC of ``issued_on``, but never before the certificate's validity starts."""
        t = dt.datetime.combine(issued_on, dt.time(0), tzinfo=dt.UTC)
        not_before = self.certificate.not_valid_before
        return max(t, not_before)

    def sign(self, pdf: bytes, when: dt.datetime, *, reason: str = "Dienstsiegel", location: str = "") -> bytes:
        """``pdf`` with a PAdES-B-B seal appended as an incremental update (same input -> same bytes
        for an RSA key)."""
        writer = _DeterministicWriter(pdf, when)
        meta = signers.PdfSignatureMetadata(
            field_name=SEAL_FIELD, md_algorithm="sha256", subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason, location=location or None, name=self.name or None,
        )
        pdf_signer = _PinnedTimeSigner(meta, signer=self.signer, when=when, reserved=self._reserved)
        out = io.BytesIO()
        _outside_event_loop(pdf_signer.sign_pdf, writer, output=out, bytes_reserved=self._reserved.get("size"))
        return out.getvalue()


class _ParsedKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner parses the private key from DER for every raw signature, and
    cryptography's key checks make that ~150 ms for RSA-3072 (more than the rest of sealing
    together). This one signs with the key parsed once at load; same algorithms, same bytes."""

    private_key: object

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm).signature_algo
        key = self.private_key
        if mechanism == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), get_pyca_cryptography_hash(digest_algorithm))
        if mechanism == "ecdsa" and isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
        return super().sign_raw(data, digest_algorithm)  # anything else: pyHanko's own way


class _PinnedTimeSigner(signers.PdfSigner):
    def __init__(self, meta: signers.PdfSignatureMetadata, *, signer: signers.Signer, when: dt.datetime,
                 reserved: dict[str, int]) -> None:
        super().__init__(meta, signer=signer)
        self._when = when
        self._reserved = reserved

    def init_signing_session(self, pdf_out, existing_fields_only=False):  # type: ignore[no-untyped-def]
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        session.system_time = self._when  # the CMS signing-time and the signature's /M
        estimate, reserved = session.estimate_signature_container_size, self._reserved

        async def remembered(validation_info, tight=False):  # type: ignore[no-untyped-def]
            size = await estimate(validation_info, tight=tight)
            reserved.setdefault("size", size)
            return size

        session.estimate_signature_container_size = remembered  # only called while no size is known
        return session


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class SealCheck:
    """What validating a PDF's seal found."""

    sealed: bool  # the file carries at least one signature
    valid: bool  # cryptographically sound, intact, trusted (our seal) and covering the whole file
    intact: bool = False
    trusted: bool = False
    covers_whole_file: bool = False
    signer_subject: str | None = None
    signing_time: dt.datetime | None = None
    problem: str | None = None


def check_seal(pdf: bytes, trust_root: asn1_x509.Certificate) -> SealCheck:
    """Validate the last signature in ``pdf`` against ``trust_root`` (our seal certificate).

    Never raises for bad input: a damaged or unsigned file is reported as not valid."""
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        sigs = reader.embedded_signatures
    except Exception as exc:  # noqa: BLE001 - any parse failure means: not a (valid) sealed PDF
        return SealCheck(sealed=False, valid=False, problem=f"not a readable PDF: {type(exc).__name__}")
    if not sigs:
        return SealCheck(sealed=False, valid=False, problem="the file carries no seal")
    sig = sigs[-1]
    ctx = ValidationContext(trust_roots=[trust_root], allow_fetching=False, revocation_mode="soft-fail")
    try:
        status = _outside_event_loop(validate_pdf_signature, sig, ctx, skip_diff=True)
    except Exception as exc:  # noqa: BLE001 - a mangled signature container is a failed validation
        return SealCheck(sealed=True, valid=False, problem=f"the seal cannot be validated: {type(exc).__name__}")
    whole = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    try:
        subject: str | None = subject_of(status.signing_cert)
    except Exception:  # noqa: BLE001
        subject = None
    ok = bool(status.intact and status.valid and status.trusted and whole)
    problem = None
    if not ok:
        problem = ("the signed content was changed" if not status.intact else
                   "the signature value is wrong" if not status.valid else
                   "the seal is not ours" if not status.trusted else
                   "the file was changed after sealing")
    return SealCheck(sealed=True, valid=ok, intact=bool(status.intact), trusted=bool(status.trusted),
                     covers_whole_file=whole, signer_subject=subject, signing_time=status.signer_reported_dt,
                     problem=problem)
