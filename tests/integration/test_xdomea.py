"""Export and exchange of Akten as xdomea-style packages, against the real API, database and S3.

A completed case is exported from the main instance, imported into a second instance (its own
database and bucket) and exported there again: the packages are byte-for-byte identical.
Hostile packages are refused with a precise 4xx and leave nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import uuid
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from aktenlauf import devstack
from aktenlauf.embedded import ApiServer
from aktenlauf.settings import Settings
from aktenlauf.wiring import blob_store, session_factory
from eakte import records, xdomea
from eakte.models import Akte, AuditEvent, Dokument, TimelineEvent, Version, Vorgang
from tests.conftest import fresh_database, stack_settings
from tests.integration.helpers import HUND, application, wait_for_case

NS = {"x": xdomea.NS, "al": xdomea.AL}
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- a second instance


@dataclass
class Instance:
    settings: Settings
    base_url: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=120)

    def admin(self) -> dict[str, str]:
        from api.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(self.settings, 'admin-b', ['admin'])}"}

    def counts(self) -> tuple[int, int, int, int, int, frozenset[str]]:
        """Rows that an import writes, and the objects in the bucket: what 'nothing written' compares."""
        sessions = session_factory(self.settings)
        try:
            with sessions() as s:
                rows = tuple(s.scalar(select(func.count()).select_from(m)) or 0
                             for m in (Akte, Vorgang, Dokument, Version, TimelineEvent))
        finally:
            sessions.kw["bind"].dispose()
        return (*rows, frozenset(blob_store(self.settings).list_keys()))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def second(stack, temporal_server, s3_server, tmp_path_factory) -> Iterator[Instance]:  # type: ignore[no-untyped-def]
    """Another town hall: its own database (fresh SQLite file or PostgreSQL database) and bucket."""
    from api.app import create_app
    from eakte.db import migrate

    with fresh_database(stack.settings.database_url, tmp_path_factory) as url:
        migrate(url)
        port = devstack.free_port()
        settings = stack_settings(url, temporal_server, s3_server, port)
        api = ApiServer(create_app(settings), port)
        api.start()
        try:
            yield Instance(settings=settings, base_url=f"http://127.0.0.1:{port}")
        finally:
            api.stop()


# --------------------------------------------------------------------------- cases to export


async def completed_hund_case(stack, portal_sub: str) -> tuple[dict[str, Any], str]:  # type: ignore[no-untyped-def]
    """A Hundeanmeldung run to completion through the API (no clerk, has a certificate); its Akte id."""
    portal = stack.token(portal_sub, "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(HUND, name="Hanna Hundehalterin"), headers=portal)
        assert r.status_code in (200, 201), r.text
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed", timeout=120)
    with stack.sessions()() as s:
        akte_id = s.scalar(select(Vorgang.akte_id).where(Vorgang.id == case["case_id"]))
    assert akte_id
    return case, akte_id


def add_second_version(stack, akte_id: str) -> None:  # type: ignore[no-untyped-def]
    """A corrected Antrag: version 2 with who and why (multi-version documents travel too)."""
    store = stack.store()
    ref = store.put_bytes(b'{"korrigiert": true, "nonce": "' + uuid.uuid4().hex.encode() + b'"}', "application/json")
    with stack.sessions()() as s, s.begin():
        doc = s.scalar(select(Dokument).where(Dokument.akte_id == akte_id).order_by(Dokument.created_at).limit(1))
        assert doc is not None
        records.add_version(s, doc, ref, created_by="clerk-xd", role="original", reason="Tippfehler im Namen berichtigt")


@pytest.fixture(scope="module")
async def exported(stack) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    case, akte_id = await completed_hund_case(stack, "portal-xdomea")
    add_second_version(stack, akte_id)
    admin = stack.token("admin-xd", "admin")
    async with stack.client() as http:
        r = await http.get(f"/v1/admin/akten/{akte_id}/export", params={"reason": "Abgabe an Nachbargemeinde"},
                           headers=admin)
    assert r.status_code == 200, r.text
    return {"case": case, "akte_id": akte_id, "package": r.content, "headers": r.headers}


@pytest.fixture(scope="module")
async def victim(stack) -> bytes:  # type: ignore[no-untyped-def]
    """A valid package never imported anywhere: the base every hostile package is made from."""
    _, akte_id = await completed_hund_case(stack, "portal-xdomea-hostile")
    async with stack.client() as http:
        r = await http.get(f"/v1/admin/akten/{akte_id}/export", params={"reason": "Testpaket"},
                           headers=stack.token("admin-xd", "admin"))
    assert r.status_code == 200, r.text
    return r.content


def members(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def manifest_of(package: bytes) -> tuple[str, ET.Element]:
    name, data = next(iter(members(package).items()))
    return name, ET.fromstring(data)


def rebuild(parts: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in parts:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# --------------------------------------------------------------------------- export


async def test_export_holds_the_manifest_and_every_file_with_its_hash(stack, exported) -> None:
    pkg = members(exported["package"])
    name, root = manifest_of(exported["package"])
    assert name.endswith("_Abgabe.Abgabe.0401.xml") and list(pkg)[0] == name
    assert root.tag == f"{{{xdomea.NS}}}Abgabe.Abgabe.0401"
    kopf = root.find("x:Kopf", NS)
    assert kopf.findtext("x:Nachrichtentyp/code", namespaces=NS) == "0401"
    assert name.startswith(kopf.findtext("x:ProzessID", namespaces=NS))
    assert kopf.findtext("x:Absender/x:Institution/x:Name", namespaces=NS)

    akte_el = root.find("x:Schriftgutobjekt/x:Akte", NS)
    with stack.sessions()() as s:
        akte = s.get(Akte, exported["akte_id"])
        versions = list(s.scalars(select(Version).join(Dokument).where(Dokument.akte_id == akte.id)))
        kinds = sorted(s.scalars(select(Dokument.kind).where(Dokument.akte_id == akte.id)))
    assert akte_el.findtext("x:AllgemeineMetadaten/x:Kennzeichen", namespaces=NS) == akte.aktenzeichen
    assert akte_el.findtext("x:AllgemeineMetadaten/x:Aktenplaneinheit/x:Kennzeichen", namespaces=NS) == "21.30"
    assert akte_el.findtext("x:AllgemeineMetadaten/x:Aktenplaneinheit/x:Inhaltsangabe", namespaces=NS)
    assert akte_el.findtext("x:AnwendungsspezifischeErweiterungXML/al:Akte/al:Status", namespaces=NS) == "closed"
    vorgang = akte_el.find("x:Akteninhalt/x:Vorgang", NS)
    assert vorgang.findtext("x:AllgemeineMetadaten/x:Betreff", namespaces=NS) == "Hundeanmeldung"
    assert vorgang.findtext("x:AnwendungsspezifischeErweiterungXML/al:Vorgang/al:Antragsteller/al:Name",
                            namespaces=NS) == "Hanna Hundehalterin"
    assert "erika@example.org" not in pkg[name].decode()  # contact data is not part of the official record
    docs = vorgang.findall("x:Dokument", NS)
    assert sorted(d.findtext("x:Typ", namespaces=NS) for d in docs) == kinds
    assert "Urkunde" in kinds

    listed = []
    for d in docs:
        for v in d.findall("x:Version", NS):
            file = v.findtext("x:Format/x:Primaerdokument/x:Dateiname", namespaces=NS)
            sha = v.findtext("x:AnwendungsspezifischeErweiterungXML/al:Version/al:SHA256", namespaces=NS)
            size = int(v.findtext("x:AnwendungsspezifischeErweiterungXML/al:Version/al:Groesse", namespaces=NS))
            assert hashlib.sha256(pkg[file]).hexdigest() == sha and len(pkg[file]) == size
            listed.append((sha, size))
    assert sorted(listed) == sorted((v.sha256, v.size) for v in versions)
    assert len(pkg) == 1 + len(versions)
    two = [d for d in docs if len(d.findall("x:Version", NS)) == 2]
    assert len(two) == 1 and two[0].findtext(
        "x:Version[2]/x:AnwendungsspezifischeErweiterungXML/al:Version/al:Grund", namespaces=NS
    ) == "Tippfehler im Namen berichtigt"
    assert exported["headers"]["content-type"] == "application/zip"
    assert exported["headers"]["x-content-sha256"] == hashlib.sha256(exported["package"]).hexdigest()


async def test_an_export_is_audited_with_its_reason(stack, exported) -> None:
    with stack.sessions()() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "akte.exported",
                                                         AuditEvent.target_id == exported["akte_id"])))
    assert [(e.actor, e.role, e.reason) for e in events][:1] == [("admin-xd", "admin", "Abgabe an Nachbargemeinde")]
    assert events[0].case_id == exported["case"]["case_id"]
    assert events[0].details["package_sha256"] == hashlib.sha256(exported["package"]).hexdigest()


async def test_the_same_akte_exports_to_identical_bytes(stack, exported) -> None:
    async with stack.client() as http:
        again = await http.get(f"/v1/admin/akten/{exported['akte_id']}/export", params={"reason": "nochmal"},
                               headers=stack.token("admin-other", "admin"))
    assert again.status_code == 200
    assert again.content == exported["package"]


async def test_export_needs_an_admin_a_reason_and_a_known_akte(stack, exported) -> None:
    url = f"/v1/admin/akten/{exported['akte_id']}/export"
    async with stack.client() as http:
        clerk = await http.get(url, params={"reason": "neugierig"}, headers=stack.token("c", "clerk", "steueramt"))
        portal = await http.get(url, params={"reason": "neugierig"}, headers=stack.token("portal-xdomea", "integrator"))
        anonymous = await http.get(url, params={"reason": "neugierig"})
        no_reason = await http.get(url, headers=stack.token("admin-xd", "admin"))
        unknown = await http.get(f"/v1/admin/akten/{uuid.uuid4().hex}/export", params={"reason": "Prüfung"},
                                 headers=stack.token("admin-xd", "admin"))
    assert (clerk.status_code, portal.status_code, anonymous.status_code) == (403, 403, 401)
    assert no_reason.status_code == 422
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"


async def test_an_aussonderung_message_for_the_archive_names_its_recipient(stack, exported) -> None:
    async with stack.client() as http:
        r = await http.get(f"/v1/admin/akten/{exported['akte_id']}/export", headers=stack.token("admin-xd", "admin"),
                           params={"reason": "Anbietung", "message_type": "0503", "recipient": "Stadtarchiv"})
    assert r.status_code == 200, r.text
    name, root = manifest_of(r.content)
    assert name.endswith("_Aussonderung.Aussonderung.0503.xml")
    assert root.findtext("x:Kopf/x:Nachrichtentyp/code", namespaces=NS) == "0503"
    assert root.findtext("x:Kopf/x:Empfaenger/x:Institution/x:Name", namespaces=NS) == "Stadtarchiv"
    assert xdomea.parse_message(members(r.content)[name]).akte.aktenzeichen == exported["case"]["aktenzeichen"]
    assert members(r.content).keys() - {name} == members(exported["package"]).keys() - {next(iter(members(
        exported["package"])))}


async def test_a_tampered_object_stops_the_export_and_is_audited(stack) -> None:
    _, akte_id = await completed_hund_case(stack, "portal-xdomea-tamper")
    store = stack.store()
    with stack.sessions()() as s:
        v = s.scalar(select(Version).join(Dokument).where(Dokument.akte_id == akte_id, Dokument.kind == "Urkunde"))
    original = store.get_bytes(v.object_key, v.sha256)
    store.client.put_object(store.bucket, v.object_key, io.BytesIO(b"%PDF-forged"), 11)
    try:
        async with stack.client() as http:
            r = await http.get(f"/v1/admin/akten/{akte_id}/export", params={"reason": "Abgabe"},
                               headers=stack.token("admin-xd", "admin"))
    finally:  # put the true bytes back: other tests verify the whole store
        store.client.put_object(store.bucket, v.object_key, io.BytesIO(original), len(original))
    assert r.status_code == 500 and r.json()["type"].endswith("integrity-violation")
    with stack.sessions()() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == akte_id)))
    assert "akte.export_failed" in actions and "akte.exported" not in actions


def test_an_oversized_export_is_refused_before_anything_is_written(stack, exported) -> None:
    out = io.BytesIO()
    with stack.sessions()() as s, s.begin(), pytest.raises(xdomea.ExportTooLarge) as err:
        xdomea.export_akte(s, stack.store(), exported["akte_id"], out, exported_by="t", max_bytes=100)
    assert err.value.status == 413 and out.getvalue() == b""


# --------------------------------------------------------------------------- round trip


async def test_round_trip_into_another_instance_is_byte_for_byte_identical(stack, second, exported) -> None:
    before = second.counts()
    async with second.client() as http:
        r = await http.post("/v1/admin/akten/import", content=exported["package"], params={"reason": "Übernahme"},
                            headers={**second.admin(), "Content-Type": "application/zip"})
        assert r.status_code == 201, r.text
        result = r.json()
        again = await http.get(f"/v1/admin/akten/{exported['akte_id']}/export", params={"reason": "Rückgabe"},
                               headers=second.admin())
    assert again.status_code == 200, again.text
    assert again.content == exported["package"]  # manifest and every file, byte for byte

    with stack.sessions()() as s:
        n_versions = s.scalar(select(func.count()).select_from(Version).join(Dokument)
                              .where(Dokument.akte_id == exported["akte_id"]))
    assert result["akte_id"] == exported["akte_id"] and result["versions"] == n_versions
    after = second.counts()
    assert after[0] == before[0] + 1 and after[3] == before[3] + n_versions
    with session_factory(second.settings)() as s:
        akte = s.get(Akte, exported["akte_id"])
        assert akte.imported_from and result["prozess_id"] in akte.imported_from
        assert akte.aktenzeichen == exported["case"]["aktenzeichen"]
        audit = s.scalar(select(AuditEvent).where(AuditEvent.action == "akte.imported"))
        assert (audit.actor, audit.reason, audit.target_id) == ("admin-b", "Übernahme", akte.id)
        keys = [v.object_key for v in s.scalars(select(Version).join(Dokument).where(Dokument.akte_id == akte.id))]
    store = blob_store(second.settings)
    assert all(store.exists(k) for k in keys)


async def test_importing_the_same_package_again_is_a_conflict(second, exported) -> None:
    async with second.client() as http:
        first = await http.post("/v1/admin/akten/import", content=exported["package"],
                                headers={**second.admin(), "Content-Type": "application/zip"})
        assert first.status_code in (201, 409)
        before = second.counts()
        again = await http.post("/v1/admin/akten/import", files={"file": ("p.zip", exported["package"],
                                                                          "application/zip")}, headers=second.admin())
    assert again.status_code == 409
    assert again.json()["reason"] == "already-imported"
    assert second.counts() == before


async def test_an_aktenzeichen_allocated_after_an_import_never_repeats_it(second, exported) -> None:
    async with second.client() as http:
        await http.post("/v1/admin/akten/import", content=exported["package"],
                        headers={**second.admin(), "Content-Type": "application/zip"})
    az = exported["case"]["aktenzeichen"]
    plan, year, seq = az.split("-")
    with session_factory(second.settings)() as s:
        nxt = records.next_sequence(s, plan, int(year))
        s.rollback()
    assert nxt > int(seq)


async def test_import_needs_an_admin(second, exported) -> None:
    from api.auth import mint_token

    clerk = {"Authorization": f"Bearer {mint_token(second.settings, 'c', ['clerk'], ['steueramt'])}"}
    async with second.client() as http:
        r = await http.post("/v1/admin/akten/import", content=exported["package"],
                            headers={**clerk, "Content-Type": "application/zip"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- hostile packages


def _hostile(victim: bytes, how: str) -> bytes:
    parts = list(members(victim).items())
    manifest_name, manifest = parts[0]
    files = parts[1:]
    if how == "path-traversal":
        return rebuild(parts + [("../../etc/cron.d/evil", b"* * * * * root sh")])
    if how == "absolute-path":
        return rebuild(parts + [("/tmp/evil.pdf", b"%PDF-1.4")])
    if how == "backslash":
        return rebuild(parts + [("..\\evil.pdf", b"%PDF-1.4")])
    if how == "directory":
        return rebuild([(manifest_name, manifest)] + [(f"sub/{n}", d) for n, d in files])
    if how == "wrong-hash":
        name, data = files[-1]
        forged = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, different bytes
        return rebuild([(manifest_name, manifest)] + files[:-1] + [(name, forged)])
    if how == "missing-file":
        return rebuild([(manifest_name, manifest)] + files[:-1])
    if how == "extra-file":
        return rebuild(parts + [("beipack.pdf", b"%PDF-1.4 nicht beschrieben")])
    if how == "duplicate-member":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the very thing we test
            return rebuild(parts + [files[0]])
    if how == "doctype":
        text = manifest.decode()
        bomb = ('<!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n')
        text = text.replace("?>\n", "?>\n" + bomb, 1).replace("<xdomea:Betreff>", "<xdomea:Betreff>&lol2;", 1)
        return rebuild([(manifest_name, text.encode())] + files)
    if how == "external-entity":
        text = manifest.decode().replace(
            "?>\n", '?>\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n', 1
        ).replace("<xdomea:Betreff>", "<xdomea:Betreff>&xxe;", 1)
        return rebuild([(manifest_name, text.encode())] + files)
    if how == "malformed-xml":
        return rebuild([(manifest_name, manifest[: len(manifest) // 2])] + files)
    if how == "wrong-structure":
        text = manifest.decode().replace("<xdomea:Typ>", "<xdomea:Typ>Geheimakte", 1)
        return rebuild([(manifest_name, text.encode())] + files)
    if how == "lying-size":  # the central directory claims fewer bytes than the member holds
        name, _ = files[-1]
        raw = bytearray(rebuild(parts))
        entry = raw.rfind(b"PK\x01\x02")  # the last central-directory header, then backwards to the member's
        while raw[entry + 46: entry + 46 + len(name)] != name.encode():
            entry = raw.rfind(b"PK\x01\x02", 0, entry)
        raw[entry + 24: entry + 28] = (10).to_bytes(4, "little")
        return bytes(raw)
    if how == "not-a-zip":
        return b"%PDF-1.4 this is not a package"
    if how == "zip-bomb":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(manifest_name, manifest)
            zf.writestr("bomb.pdf", b"\0" * (40 * 1024 * 1024))  # 40 MiB of zeros, ~40 KiB compressed
        return buf.getvalue()
    if how == "too-many-members":
        return rebuild(parts + [(f"f{i}.txt", b"") for i in range(xdomea.MAX_MEMBERS)])
    raise AssertionError(how)


HOSTILE = [
    ("path-traversal", 422, "unsafe-path"), ("absolute-path", 422, "unsafe-path"), ("backslash", 422, "unsafe-path"),
    ("directory", 422, "unsafe-path"), ("wrong-hash", 422, "hash-mismatch"), ("missing-file", 422, "missing-file"),
    ("extra-file", 422, "extra-file"), ("duplicate-member", 422, "duplicate-member"),
    ("doctype", 422, "dtd-forbidden"), ("external-entity", 422, "dtd-forbidden"),
    ("malformed-xml", 422, "malformed-xml"), ("lying-size", 422, "size-mismatch"),
    ("wrong-structure", 422, "schema"), ("not-a-zip", 422, "not-a-zip"),
    ("zip-bomb", 413, "too-large-uncompressed"), ("too-many-members", 413, "too-many-members"),
]


@pytest.mark.parametrize(("how", "status", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_a_hostile_package_is_refused_and_nothing_is_written(second, victim, how, status, reason) -> None:
    before = second.counts()
    async with second.client() as http:
        r = await http.post("/v1/admin/akten/import", content=_hostile(victim, how),
                            headers={**second.admin(), "Content-Type": "application/zip"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == reason
    assert second.counts() == before


async def test_a_package_over_the_upload_limit_is_refused_while_it_arrives(second) -> None:
    limit = second.settings.max_upload_bytes
    before = second.counts()

    async def body():  # chunked: no Content-Length for the middleware to judge
        for _ in range(limit // (1024 * 1024) + 2):
            yield b"\0" * (1024 * 1024)

    async with second.client() as http:
        r = await http.post("/v1/admin/akten/import", content=body(),
                            headers={**second.admin(), "Content-Type": "application/zip"})
    assert r.status_code == 413 and r.json()["type"].endswith("package-too-large")
    assert second.counts() == before


def test_a_failure_after_the_objects_were_stored_removes_them_again(second, victim, monkeypatch) -> None:
    before = second.counts()

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(xdomea, "_create_rows", crash)
    with pytest.raises(RuntimeError):
        xdomea.import_package(session_factory(second.settings), blob_store(second.settings), io.BytesIO(victim),
                              imported_by="t", max_bytes=second.settings.max_upload_bytes)
    assert second.counts() == before


# --------------------------------------------------------------------------- CLI


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENVIRONMENT": "test", "DATABASE_URL": settings.database_url,
           "S3_ENDPOINT": settings.s3_endpoint, "S3_ACCESS_KEY": settings.s3_access_key,
           "S3_SECRET_KEY": settings.s3_secret_key, "S3_BUCKET": settings.s3_bucket, "LOG_FORMAT": "console"}
    return subprocess.run([sys.executable, "-m", "aktenlauf.cli", "eakte", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_the_cli_exports_the_same_package_and_imports_it_elsewhere(stack, second, tmp_path) -> None:
    case, akte_id = await completed_hund_case(stack, "portal-xdomea-cli")
    async with stack.client() as http:
        api = await http.get(f"/v1/admin/akten/{akte_id}/export", params={"reason": "Vergleich"},
                             headers=stack.token("admin-xd", "admin"))
    out = tmp_path / "akte.zip"
    exp = _cli(stack.settings, "export", case["aktenzeichen"], "-o", str(out), "--reason", "Abgabe per CLI")
    assert exp.returncode == 0, exp.stderr
    assert out.read_bytes() == api.content
    imp = _cli(second.settings, "import", str(out), "--reason", "Übernahme per CLI")
    assert imp.returncode == 0, imp.stderr
    assert f'"aktenzeichen": "{case["aktenzeichen"]}"' in imp.stdout
    again = _cli(second.settings, "import", str(out))
    assert again.returncode == 1 and "already-imported" in again.stderr
