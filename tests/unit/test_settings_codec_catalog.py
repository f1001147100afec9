"""Settings refuse dev secrets outside dev; the payload codec encrypts and rotates; the catalog
is validated data."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from aktenlauf.codec import EncryptionCodec
from aktenlauf.settings import Settings
from intake.catalog import CatalogError, load_catalog

CATALOG = Path(__file__).resolve().parents[2] / "intake" / "catalog.yaml"


def test_production_refuses_the_development_secrets() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]


def test_production_starts_with_real_secrets() -> None:
    s = Settings(_env_file=None, environment="production", jwt_secret="j" * 40, payment_webhook_secret="w" * 32,  # type: ignore[call-arg]
                 certificate_code_secret="c" * 32, s3_secret_key="s" * 20, integrator_webhook_secret="i" * 32,
                 seal_key_path="/run/secrets/seal-key.pem", seal_cert_path="/run/secrets/seal-cert.pem",
                 payload_keys="k2:" + base64.b64encode(b"n" * 32).decode())
    assert s.payload_key_ring()[0][0] == "k2"


def _key(kid: str, byte: bytes) -> tuple[str, bytes]:
    return kid, byte * 32


def test_codec_hides_the_plaintext_and_round_trips() -> None:
    codec = EncryptionCodec([_key("k1", b"a")])
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"name": "Erika Mustermann"}')
    (sealed,) = asyncio.run(codec.encode([original]))
    assert b"Erika" not in sealed.SerializeToString()
    assert sealed.metadata["encryption-key-id"] == b"k1"
    (opened,) = asyncio.run(codec.decode([sealed]))
    assert opened == original


def test_codec_reads_payloads_of_a_rotated_out_key() -> None:
    old = EncryptionCodec([_key("k1", b"a")])
    (sealed,) = asyncio.run(old.encode([Payload(data=b"x")]))
    rotated = EncryptionCodec([_key("k2", b"b"), _key("k1", b"a")])
    assert asyncio.run(rotated.decode([sealed]))[0].data == b"x"
    (new,) = asyncio.run(rotated.encode([Payload(data=b"y")]))
    assert new.metadata["encryption-key-id"] == b"k2"
    with pytest.raises(ValueError, match="unknown key id"):
        asyncio.run(old.decode([new]))


def test_codec_refuses_a_tampered_payload() -> None:
    codec = EncryptionCodec([_key("k1", b"a")])
    (sealed,) = asyncio.run(codec.encode([Payload(data=b"secret")]))
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        asyncio.run(codec.decode([sealed]))


def test_catalog_has_the_required_services_with_all_fields() -> None:
    cat = load_catalog(CATALOG)
    names = {s.name for s in cat.services.values()}
    assert {"Meldebescheinigung", "Geburtsurkunde", "Hundeanmeldung", "Gewerbeanmeldung", "Mängelmeldung",
            "Wunschkennzeichen-Reservierung"} <= names
    defect = next(s for s in cat.services.values() if s.name == "Mängelmeldung")
    assert defect.fee_cents == 0 and not defect.certificate
    for s in cat.services.values():
        assert s.department in cat.departments and s.retention_years > 0 and s.keywords


@pytest.mark.parametrize(("mutation", "message"), [
    ("department: buergerbuero", "department: nowhere"),
    ('key: "99115005012000"', 'key: "99107010001000"'),
    ("fee_cents: 1000", "fee_cents: -5"),
])
def test_an_invalid_catalog_is_refused_with_a_reason(tmp_path: Path, mutation: str, message: str) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text(CATALOG.read_text(encoding="utf-8").replace(mutation, message, 1), encoding="utf-8")
    with pytest.raises(CatalogError):
        load_catalog(bad)
