"""Reading e-mails for the mailroom: body and attachments out, hostile MIME refused with a reason
or read as far as it goes, never a crash."""

from __future__ import annotations

import base64
import io
import random
from email.message import EmailMessage

import pytest
from pypdf import PdfReader

from intake.email_intake import (
    EmailLimits,
    EmailRejected,
    looks_like_email,
    neutral_filename,
    parse_email,
    render_body_pdf,
)
from tests.conftest import CORPUS

LIMITS = EmailLimits()
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63"
                    "f8cfc0f01f0005000201e2b1d1a00000000049454e44ae426082")


def _mail(body: str = "Sehr geehrte Damen und Herren,\nanbei mein Antrag.", html: str | None = None) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "Erika Mustermann <erika@example.org>"
    m["To"] = "poststelle@musterstadt.de"
    m["Subject"] = "Antrag Wohngeld – Unterlagen"
    m["Date"] = "Sun, 22 Nov 2026 09:00:00 +0100"
    m["Message-ID"] = "<abc123@example.org>"
    m.set_content(body)
    if html is not None:
        m.add_alternative(html, subtype="html")
    return m


def test_plain_body_is_preferred_and_attachments_keep_sniffed_types_and_safe_names() -> None:
    m = _mail(html="<p>HTML-Fassung</p>")
    m.add_attachment((CORPUS / "trivial.pdf").read_bytes(), maintype="application", subtype="octet-stream",
                     filename="../../etc/pass\x07wd.pdf")
    m.add_attachment(PNG, maintype="image", subtype="png", filename="foto.exe")
    mail = parse_email(m.as_bytes(), LIMITS)
    assert mail.body_source == "plain" and "anbei mein Antrag" in mail.body and "HTML-Fassung" not in mail.body
    assert mail.subject == "Antrag Wohngeld – Unterlagen" and mail.message_id == "<abc123@example.org>"
    pdf, png = mail.attachments
    assert (pdf.kind, pdf.content_type) == ("pdf", "application/pdf")
    assert "/" not in pdf.filename and "\x07" not in pdf.filename and pdf.filename.endswith(".pdf")
    assert (png.kind, png.filename) == ("png", "foto.exe.png")  # the bytes decide the type, not the name
    assert [a.index for a in mail.attachments] == [1, 2]


def test_an_html_only_body_is_reduced_to_its_visible_text() -> None:
    m = EmailMessage()
    m["From"], m["Subject"] = "a@example.org", "Nur HTML"
    m.set_content("<html><head><title>t</title><style>p{color:red}</style></head><body><p>Ihr Zeichen: "
                  "32.10-2026-000123</p><script>alert('x')</script><ul><li>Punkt&nbsp;eins</li></ul>"
                  "<img src='http://tracker.example/x.png'></body></html>", subtype="html")
    mail = parse_email(m.as_bytes(), LIMITS)
    assert mail.body_source == "html"
    assert "Ihr Zeichen: 32.10-2026-000123" in mail.body and "Punkt eins" in mail.body.replace("\xa0", " ")
    assert "alert" not in mail.body and "color" not in mail.body and "tracker" not in mail.body


def test_text_joins_subject_body_and_attachment_texts() -> None:
    m = _mail()
    m.add_attachment("Anlage mit Text: Kassenzeichen 4711", filename="notiz.txt")
    mail = parse_email(m.as_bytes(), LIMITS)
    assert mail.attachments[0].kind == "text"
    assert mail.text().startswith("Betreff: Antrag Wohngeld") and "Kassenzeichen 4711" in mail.text()


def test_too_many_attachments_are_refused_with_a_reason() -> None:
    m = _mail()
    for i in range(4):
        m.add_attachment(b"x" * 10, maintype="application", subtype="octet-stream", filename=f"a{i}.bin")
    with pytest.raises(EmailRejected) as exc:
        parse_email(m.as_bytes(), EmailLimits(max_attachments=3))
    assert exc.value.code == "too_many_attachments" and "3" in exc.value.reason


def _nested(depth: int) -> bytes:
    parts = [b"From: a@example.org\r\nSubject: tief\r\nMIME-Version: 1.0\r\n"]
    for i in range(depth):
        parts.append(f"Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n".encode())
    parts.append(b"Content-Type: text/plain\r\n\r\ninnen\r\n")
    parts += [f"--b{i}--\r\n".encode() for i in reversed(range(depth))]
    return b"".join(parts)


@pytest.mark.parametrize(("depth", "code"), [(30, "email_too_deep"), (5000, "too_many_parts")])
def test_deep_nesting_is_refused(depth: int, code: str) -> None:
    assert parse_email(_nested(5), LIMITS).body == "innen"
    with pytest.raises(EmailRejected) as exc:
        parse_email(_nested(depth), LIMITS)
    assert exc.value.code == code


def test_a_huge_header_block_and_a_huge_message_are_refused() -> None:
    huge = b"From: a@example.org\r\nX-Junk: " + b"a" * 200_000 + b"\r\n\r\nbody"
    with pytest.raises(EmailRejected) as exc:
        parse_email(huge, LIMITS)
    assert exc.value.code == "email_header_too_large"
    with pytest.raises(EmailRejected) as exc:
        parse_email(_mail().as_bytes(), EmailLimits(max_bytes=100))
    assert exc.value.code == "email_too_large"


def test_broken_boundaries_base64_garbage_and_zip_attachments_are_read_as_far_as_they_go() -> None:
    broken = (b"From: a@example.org\r\nSubject: kaputt\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n"
              b"--WRONG\r\nContent-Type: text/plain\r\n\r\nText ohne passende Grenze\r\n")
    mail = parse_email(broken, LIMITS)
    assert mail.subject == "kaputt" and mail.defects  # the repair is noted, nothing raised
    garbage = (b"From: a@example.org\r\nSubject: b64\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
               b"--B\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\nHallo\r\n"
               b"--B\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
               b"Content-Disposition: attachment; filename*=utf-8''%FF%FE%00evil.pdf\r\n\r\n"
               b"!!!!not*base64@@@@====\r\n"
               b"--B\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=\"a.zip\"\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"PK\x03\x04" + b"\x00" * 50) +
               b"\r\n--B--\r\n")
    mail = parse_email(garbage, LIMITS)
    assert "Hallo" in mail.body
    names = [a.filename for a in mail.attachments]
    assert len(names) == 2 and all("\x00" not in n and "/" not in n for n in names)
    assert mail.attachments[1].kind is None and mail.attachments[1].content_type == "application/octet-stream"


def test_random_damage_never_raises_anything_but_a_refusal() -> None:
    m = _mail(html="<p>x</p>")
    m.add_attachment((CORPUS / "trivial.pdf").read_bytes(), maintype="application", subtype="pdf", filename="a.pdf")
    good = m.as_bytes()
    rng = random.Random(4)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(1, len(data))]
        try:
            parse_email(bytes(data), LIMITS)
        except EmailRejected:
            pass


def test_only_messages_look_like_email() -> None:
    assert looks_like_email(_mail().as_bytes())
    assert not looks_like_email((CORPUS / "trivial.pdf").read_bytes()[:4096])
    assert not looks_like_email(b"Liebe Grete,\nwie geht es dir?\n")
    assert not looks_like_email(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(EmailRejected):
        parse_email(b"just: words\n", LIMITS)  # a header-like line, but no mail header field


def test_the_body_pdf_carries_the_text_with_umlauts() -> None:
    body = "Grüße aus Köln — Straße 5.\n" + ("Ein langer Satz, der umbrechen muss. " * 200)
    mail = parse_email(_mail(body=body).as_bytes(), LIMITS)
    pdf = PdfReader(io.BytesIO(render_body_pdf(mail, received_at="2026-11-22T09:00")))
    assert len(pdf.pages) >= 2
    text = "".join(p.extract_text() for p in pdf.pages)
    assert "Grüße aus Köln" in text and "Antrag Wohngeld" in text


@pytest.mark.parametrize(("name", "ext", "expected"), [
    ("../x/..\\bescheid.pdf", ".pdf", "bescheid.pdf"), ("", ".pdf", "anhang.pdf"), ("...", "", "anhang"),
    ("scan.TIF", ".tiff", "scan.TIF"), ("a\nb\rc.png", ".png", "abc.png"),
])
def test_neutral_filenames(name: str, ext: str, expected: str) -> None:
    assert neutral_filename(name, default="anhang", ext=ext) == expected


