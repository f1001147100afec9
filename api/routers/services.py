"""The service catalog (public) and certificate verification (public).

Verification answers whether a document with a code is genuine (GET) and whether a PDF someone
holds is byte-identical to it and carries our valid seal (POST) -- without personal data, and
without telling a malformed code apart from an unknown one (both 404)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from asn1crypto import x509 as asn1_x509
from fastapi import APIRouter, File, UploadFile
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aktenlauf.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from api.context import ApiContext, Ctx
from eakte import records
from eakte.models import Dokument, Vorgang
from eakte.render import VERIFICATION_ALPHABET
from eakte.seal import SealCheck, check_seal, dev_seal, load_certificate

router = APIRouter(tags=["public"])


class ServiceOut(BaseModel):
    key: str
    name: str
    department: str
    department_name: str
    required_documents: list[str]
    fee_cents: int
    decision_required: bool
    certificate: bool
    processing_days: int
    payment_days: int
    retention_years: int


class VerificationOut(BaseModel):
    valid: bool
    kind: str  # the eAkte document kind (Urkunde, Bescheid, Schreiben)
    title: str  # fixed per kind and service, never personal data
    issued_at: dt.datetime
    sha256: str  # of the issued file: a holder can compare it with their copy
    issuer: str
    #: certificate | rejection | nachforderung | cancellation | withdrawal
    notice_kind: str | None = None
    service_name: str | None = None
    issuing_authority: str  # the authority and its department
    issued_on: dt.date
    sealed: bool  # the issued file carries the authority's seal and it validates
    seal_subject: str | None = None  # the seal certificate's subject


class FileVerificationOut(BaseModel):
    genuine: bool  # unchanged and the seal validates
    unchanged: bool  # byte-identical to the issued file
    signature_valid: bool  # the uploaded file's seal validates against our seal certificate and covers it whole
    sealed: bool  # the uploaded file carries a signature at all
    sha256: str  # of the uploaded file
    issued_sha256: str
    seal_subject: str | None = None
    problem: str | None = None  # why not genuine, in words


#: uploads to POST /v1/verify are PDFs a citizen or an office holds: certificates are a few hundred KiB
VERIFY_MAX_BYTES = 10 * 1024 * 1024
_CODE_RE = re.compile(f"^[{VERIFICATION_ALPHABET}]{{4}}-[{VERIFICATION_ALPHABET}]{{4}}-[{VERIFICATION_ALPHABET}]{{4}}$")
_UNKNOWN = "no document carries this verification code"


@router.get("/v1/services", response_model=list[ServiceOut])
async def list_services(ctx: Ctx) -> list[ServiceOut]:
    cat = ctx.catalog
    return [
        ServiceOut(key=s.key, name=s.name, department=s.department, department_name=cat.departments[s.department].name,
                   required_documents=s.required_documents, fee_cents=s.fee_cents,
                   decision_required=s.decision_required, certificate=s.certificate,
                   processing_days=s.processing_days, payment_days=s.payment_days, retention_years=s.retention_years)
        for s in cat.services.values()
    ]


@functools.lru_cache(maxsize=4)
def _seal_certificate(cert_path: Path | None, dev_dir: Path, authority: str) -> asn1_x509.Certificate:
    """Our seal certificate, the trust root for validation: the configured one, or the development
    seal's (created if the worker has not yet: same files, same atomic creation)."""
    return load_certificate(cert_path if cert_path is not None else dev_seal(dev_dir, authority)[1])


def _trust_root(ctx: ApiContext) -> asn1_x509.Certificate:
    s = ctx.settings
    return _seal_certificate(s.seal_cert_path, s.var_dir / "seal", ctx.catalog.authority_name)


_checks: OrderedDict[tuple[str, str], SealCheck] = OrderedDict()  # (sha256, trust root) -> result
_checks_lock = threading.Lock()


def _issued_seal(ctx: ApiContext, sha256: str, load: Callable[[], bytes]) -> SealCheck:
    """The seal check of an issued file, remembered per content hash (the file never changes);
    ``load`` gives its bytes on a miss."""
    root = _trust_root(ctx)
    cache_key = (sha256, root.sha256.hex())  # asn1crypto caches the certificate's hash
    with _checks_lock:
        if cache_key in _checks:
            _checks.move_to_end(cache_key)
            return _checks[cache_key]
    result = check_seal(load(), root)
    with _checks_lock:
        _checks[cache_key] = result
        while len(_checks) > 1024:
            _checks.popitem(last=False)
    return result


def _normalise(code: str) -> str:
    code = code.strip().upper()
    if not _CODE_RE.match(code):
        raise NotFound(_UNKNOWN)  # a malformed code is answered like an unknown one
    return code


def _notice_kind(d: Dokument) -> str | None:
    _, sep, rest = d.idempotency_key.partition(":issue:")
    return rest.split(":")[0] if sep else None


def _issued(code: str) -> Callable[[Session], tuple[Dokument, str, str, Vorgang | None]]:
    """A query for the document with this code, its current version's (object key, sha256) and its case."""

    def find(s: Session) -> tuple[Dokument, str, str, Vorgang | None]:
        d = s.scalar(select(Dokument).where(Dokument.verification_code == code))
        if d is None:
            raise NotFound(_UNKNOWN)
        v = records.latest_version(s, d.id)
        case = s.get(Vorgang, d.vorgang_id) if d.vorgang_id else None
        s.expunge_all()
        return d, v.object_key, v.sha256, case

    return find


@router.get("/v1/verify/{code}", response_model=VerificationOut,
            responses={404: {"description": "no document carries this code (or the code is malformed)"}})
async def verify(code: str, ctx: Ctx) -> VerificationOut:
    """Is a document with this code genuine? Kind, service, issuing authority, date, the file's
    SHA-256 and whether its seal validates -- without personal data."""
    code = _normalise(code)
    d, key, sha256, case = await ctx.db(_issued(code))
    check = await run_in_threadpool(_issued_seal, ctx, sha256, lambda: ctx.store.get_bytes(key, sha256))
    dept = ctx.catalog.departments.get(case.department or "") if case is not None else None
    authority = ctx.catalog.authority_name + (f", {dept.name}" if dept else "")
    return VerificationOut(valid=True, kind=d.kind, title=d.title, issued_at=d.created_at, sha256=sha256,
                           issuer=ctx.catalog.authority_name, notice_kind=_notice_kind(d),
                           service_name=case.service_name if case is not None else None,
                           issuing_authority=authority, issued_on=d.created_at.date(), sealed=check.valid,
                           seal_subject=check.signer_subject if check.valid else None)


async def _read_bounded(upload: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is larger than {limit // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/verify/{code}", response_model=FileVerificationOut,
             responses={404: {"description": "no document carries this code (or the code is malformed)"},
                        413: {"description": "the file is too large"}, 415: {"description": "not a PDF"},
                        422: {"description": "no file, or an empty one"}})
async def verify_file(code: str, ctx: Ctx,
                      file: Annotated[UploadFile, File(description="the PDF to check against the issued one")]
                      ) -> FileVerificationOut:
    """Is this PDF the one issued under the code, unchanged, with a valid seal of the authority?"""
    code = _normalise(code)
    _, _, issued_sha256, _ = await ctx.db(_issued(code))
    data = await _read_bounded(file, min(VERIFY_MAX_BYTES, ctx.settings.max_upload_bytes))
    if not data:
        raise InvalidInput("the file is empty")
    if b"%PDF-" not in data[:1024]:
        raise UnsupportedMediaType("only PDF files can be verified")
    sha256 = hashlib.sha256(data).hexdigest()
    unchanged = sha256 == issued_sha256
    # the issued bytes themselves: the same check GET /v1/verify made (and remembered)
    check = await run_in_threadpool(_issued_seal, ctx, sha256, lambda: data) if unchanged else \
        await run_in_threadpool(check_seal, data, _trust_root(ctx))
    problem = None
    if not check.valid:
        problem = check.problem
    elif not unchanged:
        problem = "the file carries a valid seal but is not the document issued under this code"
    return FileVerificationOut(genuine=unchanged and check.valid, unchanged=unchanged, signature_valid=check.valid,
                               sealed=check.sealed, sha256=sha256, issued_sha256=issued_sha256,
                               seal_subject=check.signer_subject if check.valid else None, problem=problem)
