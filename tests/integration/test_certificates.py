"""Sealed certificates end to end against the real stack: a Meldebescheinigung is approved, paid
and issued; its seal validates; public verification tells genuine from changed without personal data."""

from __future__ import annotations

import hashlib
import io

from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy import func, select

from aktenlauf.wiring import document_seal
from eakte.models import Dokument
from eakte.seal import check_seal
from tests.integration.helpers import MELDE, application, approve_and_pay

PORTAL = ("portal-cert", "integrator")
CLERK = ("clerk-cert", "clerk", "buergerbuero")


async def _issued_certificate(stack) -> tuple[str, dict, bytes, str]:  # type: ignore[no-untyped-def]
    portal, clerk = stack.token(*PORTAL), stack.token(*CLERK)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE, name="Erika Siegeltest"), headers=portal)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        done = await approve_and_pay(http, case_id, clerk, portal)
        cert = next(doc for doc in done["documents"] if doc["kind"] == "Urkunde")
        dl = await http.get(cert["download_url"], headers=portal)
        assert dl.status_code == 200
    with stack.sessions()() as s:
        code = s.get(Dokument, cert["id"]).verification_code
    return case_id, cert, dl.content, code


async def test_an_issued_certificate_is_sealed_and_publicly_verifiable(stack) -> None:
    case_id, cert, pdf, code = await _issued_certificate(stack)
    assert hashlib.sha256(pdf).hexdigest() == cert["sha256"]

    # the seal: a PAdES signature over the whole file that validates against our seal certificate
    seal = document_seal(stack.settings, "Stadt Musterstadt")
    check = check_seal(pdf, seal.certificate)
    assert check.valid and check.covers_whole_file, check
    assert PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0].sig_object["/SubFilter"] == "/ETSI.CAdES.detached"

    async with stack.client() as http:
        # GET: genuine, what and by whom, but no personal data
        v = await http.get(f"/v1/verify/{code}")
        assert v.status_code == 200, v.text
        body = v.json()
        assert body["valid"] is True and body["sealed"] is True
        assert body["notice_kind"] == "certificate" and body["service_name"] == "Meldebescheinigung"
        assert body["issuing_authority"] == "Stadt Musterstadt, Bürgerbüro"
        assert body["sha256"] == cert["sha256"]
        assert body["seal_subject"] == seal.subject
        for personal in ("Erika", "Siegeltest", "Hauptstraße", "12345", "erika@example.org"):
            assert personal not in v.text
        # lower case and spaces around the code are accepted; malformed and unknown codes are the same 404
        assert (await http.get(f"/v1/verify/{code.lower()}")).status_code == 200
        for bad in ("AAAA-BBBB-CCCC", "not-a-code", "A" * 300):
            r = await http.get(f"/v1/verify/{bad}")
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")

        # POST with the true bytes: genuine and unchanged
        r = await http.post(f"/v1/verify/{code}", files={"file": ("zertifikat.pdf", pdf, "application/pdf")})
        assert r.status_code == 200, r.text
        assert r.json()["genuine"] is True
        assert r.json()["unchanged"] is True and r.json()["signature_valid"] is True

        # one byte changed inside the signed range: not unchanged, seal invalid
        sig = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[0]
        changed = bytearray(pdf)
        changed[sig.byte_range[1] // 2] ^= 0x01
        r = await http.post(f"/v1/verify/{code}", files={"file": ("x.pdf", bytes(changed), "application/pdf")})
        assert r.status_code == 200, r.text
        assert r.json()["unchanged"] is False and r.json()["signature_valid"] is False
        assert r.json()["genuine"] is False and r.json()["problem"]

        # bad uploads: not a PDF 415, empty 422, too large 413, unknown code 404 -- all problem+json
        r = await http.post(f"/v1/verify/{code}", files={"file": ("x.txt", b"hello", "text/plain")})
        assert r.status_code == 415 and r.headers["content-type"].startswith("application/problem+json")
        r = await http.post(f"/v1/verify/{code}", files={"file": ("x.pdf", b"", "application/pdf")})
        assert r.status_code == 422
        r = await http.post(f"/v1/verify/{code}", files={"file": ("x.pdf", b"%PDF-" + b"0" * (11 * 1024 * 1024),
                                                                    "application/pdf")})
        assert r.status_code == 413
        r = await http.post("/v1/verify/AAAA-BBBB-CCCC", files={"file": ("x.pdf", pdf, "application/pdf")})
        assert r.status_code == 404

    with stack.sessions()() as s:  # exactly one certificate, filed under the historical key
        n = s.scalar(select(func.count()).select_from(Dokument).where(
            Dokument.idempotency_key == f"{case_id}:issue:certificate"))
        assert n == 1
