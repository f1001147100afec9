"""The post channel's daily print batch: every letter queued for a day in ONE PDF for the
print room (Druckstraße), each letter a cover page with the recipient's address in a DIN 5008
address window followed by the document's pages.

Framework-free (SQLAlchemy, reportlab, pypdf). A day's batch is printed once: the first print
freezes which letters it holds, stores the PDF in S3 and marks the letters sent; printing the
same day again hands out the same stored bytes. Letters queued for a day whose batch is
already printed go to the next day's batch (``batch_date_for``), also the rare one that raced
with the first print.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aktenlauf.errors import NotFound
from eakte import records
from eakte.blobstore import BlobStore
from eakte.db import transaction
from eakte.models import Dispatch, Dokument, PrintBatch, Version, Vorgang, utcnow

# The letters' page geometry (DIN 5008 form B address window: 20 mm from the left, 45 mm from the
# top, 85 x 45 mm, the upper 17.7 mm the Zusatz- und Vermerkzone), fonts (the TrueType fonts
# bundled with reportlab: umlauts and the same glyphs on every host) and the lock around
# reportlab's global registries are eakte/render.py's, so a cover and a certificate agree.
from eakte.render import (_FONT, _FONT_BOLD, _LOCK, _WINDOW_NOTE_H, _WINDOW_PAD, _WINDOW_TOP, _WINDOW_W, _WINDOW_X,
                          _register_fonts)
from eakte.render import _fit as _fit_render

PAGE_W, PAGE_H = A4


@dataclass(frozen=True)
class Letter:
    """One letter of a batch, as queued (the recipient is the snapshot taken at dispatch)."""

    dispatch_id: str
    case_id: str
    dokument_id: str
    name: str
    address_lines: tuple[str, ...]
    aktenzeichen: str
    title: str
    object_key: str
    sha256: str


def _fit(text: str, font: str, size: float, width: float) -> str:
    """One line (whitespace and line breaks collapsed), cut with an ellipsis to ``width``."""
    return _fit_render(" ".join(text.split()), font, size, width)


def render_cover(letter: Letter, *, return_line: str, number: int, total: int, batch_date: dt.date,
                 document_pages: int) -> bytes:
    """A cover page (Anschreiben-Deckblatt) with the address in the window of a DIN C5/6 or DL
    window envelope, the Aktenzeichen and what is enclosed. Deterministic bytes."""
    with _LOCK:
        _register_fonts()
        return _cover(letter, return_line=return_line, number=number, total=total, batch_date=batch_date,
                      document_pages=document_pages)


def _cover(letter: Letter, *, return_line: str, number: int, total: int, batch_date: dt.date,
           document_pages: int) -> bytes:
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=1, pageCompression=1)
    c.setTitle(f"Druckstapel {batch_date.isoformat()} – Brief {number}")
    window_top = _WINDOW_TOP
    inner_x, inner_w = _WINDOW_X + _WINDOW_PAD, _WINDOW_W - 2 * _WINDOW_PAD
    # Rücksendeangabe at the bottom of the note zone, underlined
    note_bottom = window_top - _WINDOW_NOTE_H
    c.setFont(_FONT, 6.5)
    c.drawString(inner_x, note_bottom + 2 * mm, _fit(return_line, _FONT, 6.5, inner_w))
    c.setLineWidth(0.3)
    c.line(inner_x, note_bottom + 1.2 * mm, inner_x + inner_w, note_bottom + 1.2 * mm)
    # Anschriftzone: up to 9 lines of 10 pt
    y = note_bottom - 5 * mm
    lines = [letter.name, *letter.address_lines][:9]
    for i, line in enumerate(lines):
        font = _FONT_BOLD if i == 0 else _FONT
        c.setFont(font, 10)
        c.drawString(inner_x, y, _fit(line, font, 10, inner_w))  # measured in the font it is drawn in
        y -= 4.2 * mm
    # information block to the right of the window
    info_x = 125 * mm
    c.setFont(_FONT, 8)
    for j, (label, value) in enumerate((("Aktenzeichen", letter.aktenzeichen),
                                        ("Druckstapel", batch_date.strftime("%d.%m.%Y")),
                                        ("Brief", f"{number} von {total}"))):
        c.drawString(info_x, window_top - j * 9 * mm, label)
        c.setFont(_FONT_BOLD, 9)
        c.drawString(info_x, window_top - j * 9 * mm - 4 * mm, _fit(value, _FONT_BOLD, 9, PAGE_W - info_x - 20 * mm))
        c.setFont(_FONT, 8)
    # body: what is enclosed
    c.setFont(_FONT, 10)
    body_y = PAGE_H - 105 * mm
    c.drawString(25 * mm, body_y, "Anlage:")
    c.drawString(25 * mm, body_y - 6 * mm, _fit(letter.title, _FONT, 10, PAGE_W - 45 * mm))
    c.drawString(25 * mm, body_y - 12 * mm, f"({document_pages} Seite{'n' if document_pages != 1 else ''})")
    # fold marks (Falzmarken) for DIN lang at 105 and 210 mm, hole mark at 148.5 mm
    c.setLineWidth(0.4)
    for from_top, length in ((105 * mm, 5 * mm), (148.5 * mm, 7 * mm), (210 * mm, 5 * mm)):
        c.line(4 * mm, PAGE_H - from_top, 4 * mm + length, PAGE_H - from_top)
    c.showPage()
    c.save()
    return buf.getvalue()


def open_pdf(data: bytes) -> PdfReader:
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        reader.decrypt("")
    return reader


def assemble(parts: list[PdfReader]) -> tuple[bytes, int]:
    """One PDF of the parts' pages in order; returns the bytes and the page count."""
    writer = PdfWriter()
    for reader in parts:
        for page in reader.pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue(), len(writer.pages)


def batch_date_for(session: Session, today: dt.date) -> dt.date:
    """The batch a letter queued now belongs to: today's, unless today's was printed already
    (then the next day whose batch is still open)."""
    day = today
    printed = set(session.scalars(select(PrintBatch.batch_date).where(PrintBatch.batch_date >= today)))
    while day in printed:
        day += dt.timedelta(days=1)
    return day


@dataclass(frozen=True)
class Printed:
    batch_date: dt.date
    pdf: bytes
    letters: int
    pages: int
    sha256: str
    reprint: bool


def _postpone_stragglers(session: Session, day: dt.date, included: list[str]) -> int:
    """Letters queued for ``day`` after its batch was frozen move to the next open day."""
    stmt = (update(Dispatch)
            .where(Dispatch.channel == "post", Dispatch.batch_date == day, Dispatch.status == "queued",
                   Dispatch.id.not_in(included or [""]))
            .values(batch_date=batch_date_for(session, day + dt.timedelta(days=1))))
    return session.execute(stmt).rowcount or 0


def print_batch(sessions: sessionmaker[Session], store: BlobStore, day: dt.date, *, actor: str, role: str,
                return_line: str) -> Printed:
    """The day's print batch: rendered and frozen at the first call, the same bytes afterwards.
    Every print is audited (``printbatch.print`` / ``printbatch.reprint``); the first also
    records ``document.dispatch.printed`` on each letter's case."""
    with transaction(sessions) as s:
        done = s.get(PrintBatch, day)
        if done is None:
            rows = list(s.execute(
                select(Dispatch.id, Dispatch.vorgang_id, Dispatch.recipient, Dispatch.dokument_id, Dispatch.sha256,
                       Vorgang.aktenzeichen, Dokument.title)
                .join(Vorgang, Vorgang.id == Dispatch.vorgang_id).join(Dokument, Dokument.id == Dispatch.dokument_id)
                .where(Dispatch.channel == "post", Dispatch.batch_date == day, Dispatch.status == "queued")
                .order_by(Dispatch.at, Dispatch.id)))
            if not rows:
                raise NotFound(f"no letters queued for the print batch of {day.isoformat()}")
            letters = []
            for r in rows:
                if r.sha256:  # the version the letter was queued with
                    sha, key = r.sha256, _version_key(s, r.dokument_id, r.sha256)
                else:
                    version = records.latest_version(s, r.dokument_id)
                    sha, key = version.sha256, version.object_key
                letters.append(Letter(dispatch_id=r.id, case_id=r.vorgang_id, dokument_id=r.dokument_id,
                                      name=str(r.recipient.get("name", "")),
                                      address_lines=tuple(str(x) for x in r.recipient.get("address_lines", [])),
                                      aktenzeichen=r.aktenzeichen, title=r.title, object_key=key, sha256=sha))
    if done is not None:
        return _reprint(sessions, store, done, actor=actor, role=role)

    parts = []
    for i, letter in enumerate(letters, 1):
        document = open_pdf(store.get_bytes(letter.object_key, letter.sha256))  # verified against its hash
        cover = render_cover(letter, return_line=return_line, number=i, total=len(letters), batch_date=day,
                             document_pages=len(document.pages))
        parts += [open_pdf(cover), document]
    pdf, pages = assemble(parts)
    ref = store.put_bytes(pdf, "application/pdf")  # object first, then the row that freezes the batch
    ids = [x.dispatch_id for x in letters]
    try:
        with transaction(sessions) as s:
            s.add(PrintBatch(batch_date=day, dispatch_ids=ids, letters=len(ids), pages=pages, bucket=ref.bucket,
                             object_key=ref.key, sha256=ref.sha256, size=ref.size, printed_by=actor))
            s.flush()
            now = utcnow()
            s.execute(update(Dispatch).where(Dispatch.id.in_(ids), Dispatch.status == "queued")
                      .values(status="sent", printed_at=now, sent_at=now))
            moved = _postpone_stragglers(s, day, ids)
            records.audit(s, actor=actor, role=role, action="printbatch.print", target_type="print_batch",
                          target_id=day.isoformat(), details={"letters": len(ids), "pages": pages,
                                                              "sha256": ref.sha256, "postponed": moved})
            for letter in letters:
                records.audit(s, actor=actor, role=role, action="document.dispatch.printed",
                              target_type="document", target_id=letter.dokument_id, case_id=letter.case_id,
                              details={"dispatch_id": letter.dispatch_id, "batch_date": day.isoformat()})
    except IntegrityError:  # printed by someone else meanwhile: theirs is the batch
        with transaction(sessions) as s:
            done = s.get(PrintBatch, day)
            assert done is not None
        return _reprint(sessions, store, done, actor=actor, role=role)
    return Printed(batch_date=day, pdf=pdf, letters=len(ids), pages=pages, sha256=ref.sha256, reprint=False)


def _version_key(session: Session, dokument_id: str, sha256: str) -> str:
    key = session.scalar(select(Version.object_key).where(Version.dokument_id == dokument_id,
                                                          Version.sha256 == sha256).limit(1))
    if key is None:
        raise NotFound(f"document {dokument_id} has no version {sha256}")
    return key


def _reprint(sessions: sessionmaker[Session], store: BlobStore, done: PrintBatch, *, actor: str,
             role: str) -> Printed:
    pdf = store.get_bytes(done.object_key, done.sha256)
    with transaction(sessions) as s:
        moved = _postpone_stragglers(s, done.batch_date, list(done.dispatch_ids))
        records.audit(s, actor=actor, role=role, action="printbatch.reprint", target_type="print_batch",
                      target_id=done.batch_date.isoformat(),
                      details={"letters": done.letters, "sha256": done.sha256, "postponed": moved})
    return Printed(batch_date=done.batch_date, pdf=pdf, letters=done.letters, pages=done.pages,
                   sha256=done.sha256, reprint=True)


@dataclass(frozen=True)
class BatchDay:
    batch_date: dt.date
    letters: int
    queued: int
    printed: int
    pages: int | None
    printed_at: dt.datetime | None
    printed_by: str | None


def list_days(session: Session, *, before: dt.date | None, limit: int) -> list[BatchDay]:
    """Days with letters for the post channel, newest first, with their counts."""
    queued = func.sum(case((Dispatch.status == "queued", 1), else_=0))
    q = (select(Dispatch.batch_date, func.count(Dispatch.id), queued)
         .where(Dispatch.channel == "post", Dispatch.batch_date.is_not(None))
         .group_by(Dispatch.batch_date).order_by(Dispatch.batch_date.desc()).limit(limit))
    if before is not None:
        q = q.where(Dispatch.batch_date < before)
    days = list(session.execute(q))
    batches = {b.batch_date: b for b in session.scalars(
        select(PrintBatch).where(PrintBatch.batch_date.in_([d[0] for d in days] or [dt.date.min])))}
    out = []
    for day, total, n_queued in days:
        b = batches.get(day)
        out.append(BatchDay(batch_date=day, letters=int(total), queued=int(n_queued or 0),
                            printed=b.letters if b else 0, pages=b.pages if b else None,
                            printed_at=b.printed_at if b else None, printed_by=b.printed_by if b else None))
    return out
