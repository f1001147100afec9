"""A first mailroom path: scanned letters are OCRed, matched to their case, or wait in triage;
hostile files end with a reason and leave nothing half-stored."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select

from eakte.models import Dokument, MailItem, Version
from tests.conftest import CORPUS
from tests.integration.helpers import MELDE, application, wait_for_case, wait_for_mail


def _scanned_letter(aktenzeichen: str) -> bytes:
    """A letter as a scanner would deliver it: a 200-dpi greyscale PNG, no text layer."""
    import reportlab

    font_path = Path(reportlab.__file__).parent / "fonts" / "Vera.ttf"
    font = ImageFont.truetype(str(font_path), 34)
    img = Image.new("L", (1654, 2339), 255)
    d = ImageDraw.Draw(img)
    lines = ["Erika Mustermann", "Hauptstraße 5, 12345 Musterstadt", "", "An die Stadt Musterstadt",
             "Bürgerbüro", "", f"Ihr Zeichen: {aktenzeichen}", "", "Sehr geehrte Damen und Herren,",
             "anbei sende ich die angeforderte Kopie meines Ausweises.", "", "Mit freundlichen Grüßen"]
    for i, line in enumerate(lines):
        d.text((160, 200 + i * 60), line, fill=0, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", dpi=(200, 200))
    return buf.getvalue()


async def _upload(stack, http, name: str, data: bytes, ctype: str = "application/pdf"):  # type: ignore[no-untyped-def]
    return await http.post("/v1/mailroom/scans", headers=stack.token("post-1", "mailroom"),
                           files=[("files", (name, data, ctype))])


async def test_a_scanned_letter_with_an_aktenzeichen_is_filed_into_its_case(stack) -> None:
    portal = stack.token("portal-mail", "integrator")
    mailroom = stack.token("post-1", "mailroom")
    async with stack.client() as http:
        created = (await http.post("/v1/cases", json=application(MELDE), headers=portal)).json()
        await wait_for_case(http, created["case_id"], portal, status="awaiting_decision")
        r = await _upload(stack, http, "brief.png", _scanned_letter(created["aktenzeichen"]), "image/png")
        assert r.status_code == 202, r.text
        item = await wait_for_mail(http, r.json()["items"][0]["id"], mailroom)
        assert item["status"] == "filed", item
        assert item["case_id"] == created["case_id"]
        assert item["detected_reference"] == created["aktenzeichen"]
        assert "Ausweis" in (item["text_preview"] or "")
        clerk = stack.token("clerk-bb", "clerk", "buergerbuero")
        case = (await http.get(f"/v1/cases/{created['case_id']}", headers=clerk)).json()
        assert item["document_id"] in [d["id"] for d in case["documents"]]
        assert any("Post" in e["message"] for e in case["timeline"])
    with stack.sessions()() as s:
        roles = sorted(v.role for v in s.scalars(select(Version).where(Version.dokument_id == item["document_id"])))
        assert roles == ["original", "processed"]


async def test_a_real_scan_without_reference_waits_in_triage_with_its_text(stack) -> None:
    mailroom = stack.token("post-1", "mailroom")
    async with stack.client() as http:
        r = await _upload(stack, http, "linn.pdf", (CORPUS / "linn.pdf").read_bytes())
        assert r.status_code == 202
        item = await wait_for_mail(http, r.json()["items"][0]["id"], mailroom)
        assert item["status"] == "triage", item
        assert item["pages"] == 1 and len(item["text_preview"]) > 200
        listed = (await http.get("/v1/mailroom/items", params={"status": "triage"}, headers=mailroom)).json()
        assert item["id"] in [i["id"] for i in listed]


@pytest.mark.parametrize(("name", "code"), [("invalid.pdf", "unreadable_pdf"), ("hugemono.pdf", "image_too_large"),
                                            ("encrypted-userpw.pdf", "encrypted")])
async def test_hostile_files_fail_with_a_reason_and_leave_no_orphans(stack, name: str, code: str) -> None:
    mailroom = stack.token("post-1", "mailroom")
    async with stack.client() as http:
        r = await _upload(stack, http, name, (CORPUS / name).read_bytes())
        assert r.status_code == 202, r.text
        item = await wait_for_mail(http, r.json()["items"][0]["id"], mailroom, timeout=120)
    assert item["status"] == "failed" and item["reason_code"] == code
    assert item["reason"] and "Traceback" not in item["reason"]
    with stack.sessions()() as s:
        doc = s.get(Dokument, item["document_id"])
        assert [v.role for v in doc.versions] == ["original"]  # the original is kept, nothing else was made
    assert_no_orphans(stack)


async def test_bad_uploads_get_precise_4xx_and_store_nothing(stack) -> None:
    before = set(stack.store().list_keys())
    async with stack.client() as http:
        assert (await _upload(stack, http, "leer.pdf", b"")).status_code == 422
        assert (await _upload(stack, http, "notes.txt", b"just some text", "text/plain")).status_code == 415
        assert (await _upload(stack, http, "x.pdf", b"MZ\x90\x00 windows exe")).status_code == 415
        big = b"%PDF-1.4\n" + b"0" * (stack.settings.max_upload_bytes + 10)
        assert (await _upload(stack, http, "big.pdf", big)).status_code == 413
        assert await _declared_gigabyte(stack) == 413
        r = await http.post("/v1/mailroom/scans", headers=stack.token("portal-1", "integrator"),
                            files=[("files", ("a.pdf", (CORPUS / "trivial.pdf").read_bytes(), "application/pdf"))])
        assert r.status_code == 403
    assert set(stack.store().list_keys()) == before


async def test_filenames_with_paths_and_control_characters_are_neutralised(stack) -> None:
    mailroom = stack.token("post-1", "mailroom")
    async with stack.client() as http:
        r = await _upload(stack, http, "../../etc/pa\x07ss\nwd.pdf", (CORPUS / "trivial.pdf").read_bytes())
        assert r.status_code == 202
        name = r.json()["items"][0]["filename"]
        assert "/" not in name and "\n" not in name and "\x07" not in name and not name.startswith(".")
        await wait_for_mail(http, r.json()["items"][0]["id"], mailroom)


async def _declared_gigabyte(stack) -> int:  # type: ignore[no-untyped-def]
    """Send headers declaring a 1 GB body, then only a few bytes: refused before reading."""
    import asyncio

    host, port = stack.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = stack.token("post-1", "mailroom")["Authorization"]
    writer.write((f"POST /v1/mailroom/scans HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
                  "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000000\r\n\r\n--x\r\n").encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


def assert_no_orphans(stack) -> None:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        recorded = set(s.scalars(select(Version.object_key)))
        # a duplicate delivery (intake/channels.py) has no document of its own
        assert all(m.dokument_id for m in s.scalars(select(MailItem).where(MailItem.status != "duplicate")))
    stored = set(stack.store().list_keys())
    assert stored <= recorded, f"objects without a record: {sorted(stored - recorded)[:5]}"
