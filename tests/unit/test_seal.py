"""The electronic seal (eakte/seal.py): PAdES signature over issued PDFs, validated with pyHanko
against our seal certificate; the development seal; production refuses to run without a seal."""

from __future__ import annotations

import datetime as dt
import io
import os
import stat
from pathlib import Path

import pikepdf
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from aktenlauf.settings import Settings
from eakte.render import Authority, DocumentData, render_document
from eakte.seal import SealError, Seal, check_seal, ensure_dev_seal, open_seal

AUTH = Authority("Stadt Musterstadt", "Bürgerbüro", ("Rathausplatz 1", "12345 Musterstadt"),
                 "http://127.0.0.1:8000/v1/verify/")
ISSUED = dt.date(2026, 11, 22)


def _pdf(**kw: object) -> bytes:
    values: dict[str, object] = dict(kind="certificate", authority=AUTH, service_name="Meldebescheinigung",
                                     aktenzeichen="32.10-2026-000042", applicant_name="Erika Mustermann",
                                     applicant_address_lines=("Hauptstraße 5",), issued_on=ISSUED,
                                     verification_code="K7QF-9M2X-4TPA", fee_cents=1000, sealed=True)
    values.update(kw)
    return render_document(DocumentData(**values))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def seal(tmp_path_factory: pytest.TempPathFactory) -> Seal:
    key, cert = ensure_dev_seal(tmp_path_factory.mktemp("seal"))
    return Seal.load(key, cert, name="Stadt Musterstadt")


@pytest.fixture(scope="module")
def sealed(seal: Seal) -> bytes:
    return seal.sign(_pdf(), seal.signing_time(ISSUED), location="Stadt Musterstadt")


def test_a_sealed_document_validates_against_our_seal_certificate(seal: Seal, sealed: bytes) -> None:
    check = check_seal(sealed, seal.certificate)
    assert check.sealed and check.valid and check.intact and check.trusted and check.covers_whole_file
    assert check.signer_subject == "CN=Stadt Musterstadt Dienstsiegel (Entwicklung),O=Stadt Musterstadt,C=DE"
    assert check.signing_time == dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


def test_the_seal_is_a_pades_signature_appended_as_incremental_update(sealed: bytes) -> None:
    unsigned = _pdf()
    assert sealed.startswith(unsigned)  # the rendered file is untouched: an incremental update
    sig = PdfFileReader(io.BytesIO(sealed)).embedded_signatures[0]
    assert sig.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert sig.field_name == "Dienstsiegel"


def test_sealing_is_deterministic_for_the_same_input(seal: Seal, sealed: bytes) -> None:
    assert seal.sign(_pdf(), seal.signing_time(ISSUED), location="Stadt Musterstadt") == sealed


def test_one_flipped_byte_inside_the_signed_range_fails_validation(seal: Seal, sealed: bytes) -> None:
    sig = PdfFileReader(io.BytesIO(sealed)).embedded_signatures[0]
    start, length = sig.byte_range[0], sig.byte_range[1]
    changed = bytearray(sealed)
    pos = start + length // 2  # inside the page content, well inside the first signed range
    changed[pos] ^= 0x01
    check = check_seal(bytes(changed), seal.certificate)
    assert check.sealed and not check.valid and not check.intact


def test_bytes_appended_after_sealing_are_not_covered(seal: Seal, sealed: bytes) -> None:
    check = check_seal(sealed + b"\n%%appended\n", seal.certificate)
    assert not check.valid and not check.covers_whole_file


def test_a_seal_of_someone_else_is_not_trusted(tmp_path: Path, seal: Seal) -> None:
    other = Seal.load(*ensure_dev_seal(tmp_path, subject="Falsches Siegel"))
    forged = other.sign(_pdf(), other.signing_time(ISSUED))
    check = check_seal(forged, seal.certificate)
    assert check.sealed and not check.valid and not check.trusted


def test_an_unsigned_or_unreadable_file_is_reported_not_raised(seal: Seal) -> None:
    assert check_seal(_pdf(), seal.certificate).sealed is False
    assert check_seal(b"not a pdf at all", seal.certificate).valid is False


def test_dev_seal_is_created_once_with_a_private_key_file(tmp_path: Path) -> None:
    key, cert = ensure_dev_seal(tmp_path / "seal")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes(), cert.read_bytes()
    again = ensure_dev_seal(tmp_path / "seal")
    assert again == (key, cert) and (key.read_bytes(), cert.read_bytes()) == before
    assert sorted(p.name for p in (tmp_path / "seal").iterdir()) == ["seal-cert.pem", "seal-key.pem"]


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key, cert = ensure_dev_seal(tmp_path)
    os.chmod(key, 0o644)
    with pytest.raises(SealError, match="readable by others"):
        Seal.load(key, cert)


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(tmp_path: Path) -> None:
    key_a, _ = ensure_dev_seal(tmp_path / "a")
    _, cert_b = ensure_dev_seal(tmp_path / "b")
    with pytest.raises(SealError, match="does not belong"):
        Seal.load(key_a, cert_b)


def test_production_without_a_configured_seal_refuses_to_start(tmp_path: Path) -> None:
    # the seal rule alone (the other production rules, e.g. no dev secrets, are tested elsewhere)
    settings = Settings(environment="test")
    settings.environment = "production"
    with pytest.raises(ValueError, match="SEAL_KEY_PATH and SEAL_CERT_PATH"):
        settings._seal_configured_in_production()
    with pytest.raises(SealError, match="production"):
        open_seal(None, None, dev_dir=tmp_path, production=True)
    key, cert = ensure_dev_seal(tmp_path / "configured")
    settings.seal_key_path, settings.seal_cert_path = key, cert
    assert settings._seal_configured_in_production() is settings
    assert open_seal(key, cert, production=True).subject.startswith("CN=")


def test_the_sealed_file_still_claims_pdfa_with_consistent_metadata(sealed: bytes) -> None:
    with pikepdf.open(io.BytesIO(sealed)) as pdf:
        meta = pdf.open_metadata()
        assert meta.pdfa_status == "2B"
        assert str(pdf.docinfo["/Producer"]) == meta["pdf:Producer"]  # Info and XMP agree after sealing
        assert "/OutputIntents" in pdf.Root
        intent = pdf.Root.OutputIntents[0]
        assert intent.S == "/GTS_PDFA1" and int(intent.DestOutputProfile.N) == 3
        for page in pdf.pages:
            for annot in page.obj.get("/Annots", []):
                assert int(annot.F) & 4 and not int(annot.F) & (1 | 2 | 32)  # printed, never hidden
            for font in page.Resources.Font.values():
                assert "/FontFile2" in font.FontDescriptor  # embedded
