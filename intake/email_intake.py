"""E-mail intake: read an RFC 5322 message (.eml upload or IMAP fetch) into what the mailroom
files: the body as text (text/plain preferred, HTML reduced to text), the attachments with
neutral filenames, and the message's provenance (Message-ID, sender, subject, date).

Everything here treats the message as hostile: the whole message, its header block, the number
of parts and attachments and the nesting depth are limited before anything is decoded, every
decode error is caught, and HTML is only ever *read* (never rendered, no URLs fetched). The
result is plain data; nothing is stored here. The same parse runs at intake (to refuse a message
with a clear reason before it is registered) and on the OCR queue (to make its documents), so
both always agree.
"""

from __future__ import annotations

import email
import email.policy
import html
import io
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from pathlib import Path

from intake.sniff import detect_kind, neutral_basename

CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "tiff": "image/tiff", "jpeg": "image/jpeg"}
EXTENSIONS = {"pdf": ".pdf", "png": ".png", "tiff": ".tiff", "jpeg": ".jpg"}
EML_CONTENT_TYPE = "message/rfc822"
#: header fields of which at least one must be present for bytes to count as an e-mail
_MAIL_FIELDS = ("from", "date", "message-id", "subject", "mime-version", "to", "received", "return-path")
_HEADER_LINE = re.compile(rb"^[!-9;-~]{1,76}:")
_PART_HEADER = re.compile(rb"(?im)^content-type[ \t]*:")


@dataclass(frozen=True)
class EmailLimits:
    """Bounds for one message; the defaults fit ordinary letters sent by e-mail."""

    max_bytes: int = 30 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # the top-level header block
    max_parts: int = 100  # every MIME part, containers included
    max_attachments: int = 20
    max_depth: int = 8  # multipart / message nesting
    max_body_chars: int = 200_000
    max_attachment_text_chars: int = 200_000


class EmailRejected(Exception):
    """The message cannot be taken in; ``code`` is stable, ``reason`` is for the mailroom clerk."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Attachment:
    index: int  # 1-based position among the attachments (stable: same message, same numbering)
    filename: str  # neutralised
    kind: str | None  # pdf | png | tiff | jpeg (sniffed from the bytes) | text | None
    content_type: str  # what we serve it as: sniffed, never the sender's declaration
    data: bytes
    text: str | None = None  # for text attachments: their decoded text


@dataclass
class ParsedEmail:
    subject: str
    sender: str
    date: str
    message_id: str
    body: str
    body_source: str  # plain | html | none
    attachments: list[Attachment] = field(default_factory=list)
    #: what the parser had to repair (broken boundaries, bad base64 ...): shown, never fatal
    defects: list[str] = field(default_factory=list)
    skipped_inline: int = 0  # inline images of an HTML body (logos), not filed

    def provenance(self) -> dict[str, str]:
        """Technical provenance that may travel in a workflow payload (no personal data)."""
        return {"message_id": self.message_id[:300]} if self.message_id else {}

    def text(self) -> str:
        """What the reference matcher and classifier read: subject, body, attachment texts."""
        parts = [f"Betreff: {self.subject}" if self.subject else "", self.body]
        parts += [a.text for a in self.attachments if a.text]
        return "\n\n".join(p for p in parts if p and p.strip())


# --------------------------------------------------------------------------- recognising a message


def looks_like_email(head: bytes) -> bool:
    """True if ``head`` (the first few KiB) starts like an RFC 5322 message: header lines, and
    at least one field every mail carries. A PDF, image or text file does not."""
    start = head.lstrip(b"\r\n")
    if start.startswith(b"From "):  # mbox "From_" line some exporters leave in
        start = start.split(b"\n", 1)[1] if b"\n" in start else b""
    if not _HEADER_LINE.match(start):
        return False
    names = {m.group(1).lower().decode("ascii", "replace")
             for m in re.finditer(rb"(?m)^([!-9;-~]{1,76}):", start[:16384])}
    return any(f in names for f in _MAIL_FIELDS)


# --------------------------------------------------------------------------- parsing


def parse_email_file(path: Path, limits: EmailLimits) -> ParsedEmail:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise EmailRejected("email_too_large", f"Die E-Mail ist größer als {limits.max_bytes // (1024 * 1024)} MiB.")
    return parse_email(path.read_bytes(), limits)


def parse_email(data: bytes, limits: EmailLimits) -> ParsedEmail:
    """Parse one message within ``limits``; raises :class:`EmailRejected`, never anything else."""
    if not data.strip():
        raise EmailRejected("empty", "Die E-Mail ist leer.")
    if len(data) > limits.max_bytes:
        raise EmailRejected("email_too_large", f"Die E-Mail ist größer als {limits.max_bytes // (1024 * 1024)} MiB.")
    _check_header_block(data, limits)
    if not looks_like_email(data[:65536]):
        raise EmailRejected("not_an_email", "Die Datei ist keine E-Mail (RFC 822).")
    if len(_PART_HEADER.findall(data)) > limits.max_parts:  # before the parser spends time on them
        raise EmailRejected("too_many_parts", f"Die E-Mail hat mehr als {limits.max_parts} MIME-Teile.")
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except RecursionError as exc:
        raise EmailRejected("email_too_deep", "Die E-Mail ist zu tief verschachtelt.") from exc
    except Exception as exc:
        raise EmailRejected("email_unreadable", f"Die E-Mail kann nicht gelesen werden ({type(exc).__name__}).") from exc
    try:
        return _read(msg, limits)  # type: ignore[arg-type]
    except EmailRejected:
        raise
    except RecursionError as exc:
        raise EmailRejected("email_too_deep", "Die E-Mail ist zu tief verschachtelt.") from exc
    except Exception as exc:
        raise EmailRejected("email_unreadable", f"Die E-Mail kann nicht gelesen werden ({type(exc).__name__}).") from exc


def _check_header_block(data: bytes, limits: EmailLimits) -> None:
    window = data[: limits.max_header_bytes + 4]
    if b"\n\n" not in window and b"\r\n\r\n" not in window and len(data) > limits.max_header_bytes:
        raise EmailRejected("email_header_too_large",
                            f"Der Kopf der E-Mail ist größer als {limits.max_header_bytes // 1024} KiB.")


def _header(msg: Message, name: str, limit: int = 500) -> str:
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001 - an undecodable header is left out, not fatal
        return ""
    return _oneline(str(value or ""))[:limit]


def _oneline(text: str) -> str:
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class _Leaf:
    part: Message
    in_related: bool
    depth: int


def _read(msg: EmailMessage, limits: EmailLimits) -> ParsedEmail:
    leaves: list[_Leaf] = []
    counter = [0]
    _walk(msg, 0, False, leaves, counter, limits)
    defects = sorted({type(d).__name__ for d in _all_defects(msg)})
    body_part = _body_part(msg)
    body, source = ("", "none")
    if body_part is not None:
        body, source = _body_text(body_part, limits)
    attachments: list[Attachment] = []
    skipped = 0
    for leaf in leaves:
        part = leaf.part
        if part is body_part:
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        has_name = bool(_safe_param_filename(part))
        if ctype in ("text/plain", "text/html") and not has_name and disposition != "attachment":
            if body_part is not None and _alternative_of(msg, part, body_part):
                continue  # the HTML twin of the plain body
            extra, _ = _body_text(part, limits)  # a further inline text (forwarded text, signature)
            body = (body + "\n\n" + extra).strip()[: limits.max_body_chars]
            continue
        if leaf.in_related and not has_name and disposition != "attachment":
            skipped += 1  # an HTML body's inline image (logo): not a document of the letter
            continue
        if len(attachments) >= limits.max_attachments:
            raise EmailRejected("too_many_attachments",
                                f"Die E-Mail hat mehr als {limits.max_attachments} Anhänge.")
        attachments.append(_attachment(part, len(attachments) + 1, limits))
    return ParsedEmail(subject=_header(msg, "subject"), sender=_header(msg, "from"), date=_header(msg, "date", 100),
                       message_id=_header(msg, "message-id", 300), body=body, body_source=source,
                       attachments=attachments, defects=defects, skipped_inline=skipped)


def _count_part(depth: int, counter: list[int], limits: EmailLimits) -> None:
    """One more MIME part at this depth: refuse the message once it has too many or nests too deep."""
    counter[0] += 1
    if counter[0] > limits.max_parts:
        raise EmailRejected("too_many_parts", f"Die E-Mail hat mehr als {limits.max_parts} MIME-Teile.")
    if depth > limits.max_depth:
        raise EmailRejected("email_too_deep",
                            f"Die E-Mail ist tiefer als {limits.max_depth} Ebenen verschachtelt.")


def _walk(part: Message, depth: int, in_related: bool, leaves: list[_Leaf], counter: list[int],
          limits: EmailLimits) -> None:
    _count_part(depth, counter, limits)
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        related = in_related or part.get_content_subtype() == "related"
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                _walk(sub, depth + 1, related, leaves, counter, limits)
        return
    if part.get_content_type() == "message/rfc822":
        # a forwarded message is kept whole as an attachment; its depth still counts
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            if isinstance(sub, Message):
                _count_only(sub, depth + 1, counter, limits)
    leaves.append(_Leaf(part, in_related, depth))


def _count_only(part: Message, depth: int, counter: list[int], limits: EmailLimits) -> None:
    _count_part(depth, counter, limits)
    payload = part.get_payload() if part.is_multipart() or part.get_content_type() == "message/rfc822" else None
    for sub in payload if isinstance(payload, list) else []:
        if isinstance(sub, Message):
            _count_only(sub, depth + 1, counter, limits)


def _all_defects(msg: Message) -> list[object]:
    found: list[object] = list(getattr(msg, "defects", []))
    for part in msg.walk():
        if part is not msg:
            found.extend(getattr(part, "defects", []))
    return found


def _body_part(msg: EmailMessage) -> Message | None:
    try:
        if msg.get_content_maintype() == "multipart" and not isinstance(msg.get_payload(), list):
            return None  # broken boundaries: no part structure to pick a body from
        return msg.get_body(preferencelist=("plain", "html"))
    except Exception:  # noqa: BLE001
        return None


def _alternative_of(root: Message, part: Message, body: Message) -> bool:
    """Is ``part`` a sibling of ``body`` inside the same multipart/alternative?"""
    for container in root.walk():
        if container.get_content_type() == "multipart/alternative":
            payload = container.get_payload()
            if isinstance(payload, list) and any(p is body for p in _leaves_of(payload)) \
                    and any(p is part for p in _leaves_of(payload)):
                return True
    return False


def _leaves_of(parts: list[Message]) -> list[Message]:
    out: list[Message] = []
    for p in parts:
        out.extend(x for x in p.walk() if not x.is_multipart())
    return out


def _decoded_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - garbage transfer encoding: keep what the raw part holds
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "replace") if isinstance(raw, str) else b""


def _part_text(part: Message, limit: int) -> str:
    data = _decoded_bytes(part)[: limit * 4]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # unknown charset name
        text = data.decode("utf-8", errors="replace")
    return text[:limit]


def _body_text(part: Message, limits: EmailLimits) -> tuple[str, str]:
    text = _part_text(part, limits.max_body_chars)
    if part.get_content_subtype() == "html":
        return _clean_text(html_to_text(text))[: limits.max_body_chars], "html"
    return _clean_text(text), "plain"


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _safe_param_filename(part: Message) -> str:
    try:
        return str(part.get_filename() or "")
    except Exception:  # noqa: BLE001 - a broken RFC 2231 parameter
        return ""


def _attachment(part: Message, index: int, limits: EmailLimits) -> Attachment:
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        try:
            data = inner.as_bytes(policy=email.policy.default) if isinstance(inner, Message) else _decoded_bytes(part)
        except Exception:  # noqa: BLE001
            data = _decoded_bytes(part)
        name = neutral_filename(_safe_param_filename(part), default=f"nachricht-{index}", ext=".eml")
        return Attachment(index, name, None, "application/octet-stream", data)
    data = _decoded_bytes(part)
    kind = detect_kind(data[:16]) if data else None
    declared = _safe_param_filename(part)
    if kind is not None:
        return Attachment(index, neutral_filename(declared, default=f"anhang-{index}", ext=EXTENSIONS[kind]),
                          kind, CONTENT_TYPES[kind], data)
    if part.get_content_maintype() == "text" and ctype in ("text/plain", "text/csv", "text/html"):
        text = _part_text(part, limits.max_attachment_text_chars)
        text = html_to_text(text) if ctype == "text/html" else text
        return Attachment(index, neutral_filename(declared, default=f"anhang-{index}", ext=".txt"), "text",
                          "application/octet-stream", data, text=_clean_text(text))
    return Attachment(index, neutral_filename(declared, default=f"anhang-{index}", ext=""), None,
                      "application/octet-stream", data)


def neutral_filename(name: str | None, *, default: str, ext: str) -> str:
    """The sender's filename without paths, control characters and odd Unicode (the rules of
    ``api.uploads.safe_filename``), ending in ``ext`` when one is given (the sniffed type wins
    over the name: ``rechnung.pdf.exe`` that is a PDF is stored as ``rechnung.pdf.exe.pdf``)."""
    base = neutral_basename(name)
    if not base:
        base = default + ext
    if ext and not base.lower().endswith(_ALIASES.get(ext, (ext,))):
        base += ext
    return base


_ALIASES = {".tiff": (".tiff", ".tif"), ".jpg": (".jpg", ".jpeg")}


# --------------------------------------------------------------------------- HTML → text


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML body. Nothing is rendered or fetched: script,
    style and head contents are dropped, block elements become line breaks."""

    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "svg", "object", "iframe"})
    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote",
                        "pre", "hr", "ul", "ol", "section", "article", "header", "footer", "address"})

    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.out = io.StringIO()
        self.skip = 0
        self.limit = limit
        self.size = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self._write("\n")
        if tag == "li":
            self._write("- ")
        elif tag in ("td", "th"):
            self._write(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
            self._write("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self._write(data)

    def _write(self, s: str) -> None:
        if self.size < self.limit:
            self.out.write(s)
            self.size += len(s)


def html_to_text(markup: str, limit: int = 400_000) -> str:
    parser = _TextExtractor(limit)
    try:
        parser.feed(markup[: limit * 2])
        parser.close()
    except Exception:  # noqa: BLE001 - malformed markup: fall back to stripping tags
        return html.unescape(re.sub(r"<[^>]*>", " ", markup[: limit * 2]))[:limit]
    text = parser.out.getvalue()
    text = re.sub(r"[ \t\xa0]+", " ", text)
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()


# --------------------------------------------------------------------------- the body as a PDF

_FONT = "AktenlaufMailVera"
_FONT_BOLD = "AktenlaufMailVera-Bold"
_LOCK = threading.Lock()  # reportlab keeps global font registries


def render_body_pdf(mail: ParsedEmail, *, received_at: str = "") -> bytes:
    """The message as an archivable PDF: sender, date, subject, the attachment list and the
    body text (line-wrapped, as many pages as needed). Its text layer is the body itself."""
    import os

    import reportlab
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen.canvas import Canvas

    with _LOCK:
        fonts = os.path.join(os.path.dirname(reportlab.__file__), "fonts")
        registered = set(pdfmetrics.getRegisteredFontNames())
        for name, file in ((_FONT, "Vera.ttf"), (_FONT_BOLD, "VeraBd.ttf")):
            if name not in registered:
                pdfmetrics.registerFont(TTFont(name, os.path.join(fonts, file)))
        buf = io.BytesIO()
        c = Canvas(buf, pagesize=A4, invariant=True, pageCompression=1)
        c.setTitle(mail.subject or "E-Mail")
        c.setCreator("aktenlauf Poststelle")
        width, height = A4
        margin, size, leading = 56.0, 10.0, 13.0
        y = height - margin

        def line(text: str, font: str = _FONT) -> None:
            nonlocal y
            if y < margin:
                c.showPage()
                y = height - margin
            c.setFont(font, size)
            c.drawString(margin, y, text)
            y -= leading

        max_w = width - 2 * margin
        head = [("Von", mail.sender), ("Datum", mail.date), ("Betreff", mail.subject)]
        if received_at:
            head.append(("Eingang", received_at))
        if mail.attachments:
            head.append(("Anlagen", ", ".join(a.filename for a in mail.attachments)))
        for label, value in head:
            for i, chunk in enumerate(_wrap(f"{label}: {value}", _FONT_BOLD, size, max_w, pdfmetrics)):
                line(chunk, _FONT_BOLD if i == 0 else _FONT)
        y -= leading
        for paragraph in (mail.body or "(kein Text)").split("\n"):
            for chunk in _wrap(paragraph, _FONT, size, max_w, pdfmetrics) or [""]:
                line(chunk)
        c.showPage()
        c.save()
        return buf.getvalue()


def _wrap(text: str, font: str, size: float, max_w: float, metrics: object) -> list[str]:
    width = metrics.stringWidth  # type: ignore[attr-defined]
    out: list[str] = []
    current = ""
    for word in text.replace("\t", "    ").split(" "):
        candidate = f"{current} {word}" if current else word
        if width(candidate, font, size) <= max_w:
            current = candidate
            continue
        if current:
            out.append(current)
        while width(word, font, size) > max_w and len(word) > 1:  # an overlong word (URL) is cut
            cut = max(1, int(len(word) * max_w / width(word, font, size)))
            out.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        out.append(current)
    return out
