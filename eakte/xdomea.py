"""Export and import of an Akte as an xdomea-style package (ZIP: one XML message + the files).

The message follows the structure of xdomea 3.0.0 (namespace ``urn:xoev-de:xdomea:schema:3.0.0``):
``Kopf`` (ProzessID, Nachrichtentyp, Erstellungszeitpunkt, Absender, Empfaenger) and
``Schriftgutobjekt/Akte`` → ``Akteninhalt/Vorgang`` → ``Dokument`` → ``Version`` →
``Format/Primaerdokument``. Everything xdomea has no element for (exact timestamps, document
kind and channel, version role and reason, size and SHA-256 of every file, the applicant) is
carried in ``AnwendungsspezifischeErweiterungXML`` in the namespace ``urn:aktenlauf:xdomea:1``
(prefix ``al``), the extension point xdomea provides for exactly that.

Export is deterministic: member order, ZIP timestamps, the ProzessID and the Erstellungszeitpunkt
are derived from the Akte itself (the ProzessID from a hash of the content, the time from the last
change recorded in the Akte), so an unchanged Akte always exports to identical bytes — also after
an import into another instance. Files are streamed from the blob store (every read verified
against its SHA-256) straight into the ZIP; no document is held in memory whole.

Import validates everything before it writes anything: ZIP structure and limits (member count,
declared and actual sizes, names: no paths, no ``..``, no backslashes), the XML (no DTD, no
entities, via defusedxml), the message structure and values, conflicts with this instance's
records, and the size and SHA-256 of every file. Only then are the objects stored
(content-addressed, so existing ones are reused) and all rows created in one transaction; when
anything fails after the first object was written, the objects this import added are removed
again (unless something else references them meanwhile).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tempfile
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import defusedxml
import defusedxml.ElementTree as SafeET
import structlog
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from aktenlauf.errors import AktenlaufError, Conflict, IntegrityViolation, InvalidInput, NotFound, PayloadTooLarge
from eakte import records, search
from eakte.aktenplan import Aktenplan, load_aktenplan
from eakte.blobstore import CHUNK, BlobStore, object_key
from eakte.models import Akte, AktenzeichenCounter, Dokument, TimelineEvent, Version, Vorgang

log = structlog.get_logger(__name__)

NS = "urn:xoev-de:xdomea:schema:3.0.0"
AL = "urn:aktenlauf:xdomea:1"
ET.register_namespace("xdomea", NS)
ET.register_namespace("al", AL)

ABGABE = ("0401", "Abgabe.Abgabe")  # Abgabe durchführen: hand an Akte to another authority/system
AUSSONDERUNG = ("0503", "Aussonderung.Aussonderung")  # Aussonderung durchführen: hand over to the archive
MESSAGES = {ABGABE[0]: ABGABE, AUSSONDERUNG[0]: AUSSONDERUNG}
LIST_NACHRICHTENTYP = "urn:xoev-de:xdomea:codeliste:nachrichtentyp"

MAX_MEMBERS = 5000
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
IMPORT_INTEGRATOR = "import:xdomea"  # imported cases belong to no integrator of this instance

_MEMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MANIFEST = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_"
                       r"(Abgabe\.Abgabe\.0401|Aussonderung\.Aussonderung\.0503)\.xml$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_AKTENZEICHEN = re.compile(r"^(\d{2}\.\d{2})-(\d{4})-(\d{6})$")
_EXT = re.compile(r"^\.[a-z0-9]{1,8}$")
_ID_PREFIXES = ("case-", "xdomea-")


# --------------------------------------------------------------------------- errors


class InvalidPackage(InvalidInput):
    """The package is not a well-formed, consistent aktenlauf/xdomea package (422)."""

    code = "invalid-package"
    title = "Invalid xdomea package"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class PackageTooLarge(PayloadTooLarge):
    code = "package-too-large"
    title = "Package too large"

    def __init__(self, detail: str, *, reason: str = "too-large") -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class ExportTooLarge(PayloadTooLarge):
    code = "export-too-large"
    title = "Export too large"


class ImportConflict(Conflict):
    code = "import-conflict"
    title = "The Akte conflicts with records of this instance"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ExportSummary:
    akte_id: str
    aktenzeichen: str
    prozess_id: str
    message_type: str  # "0401" | "0503"
    filename: str  # the package's xdomea file name: <ProzessID>_<Nachrichtentyp>.zip
    vorgaenge: int
    documents: int
    versions: int
    bytes_total: int  # sum of the document files
    package_size: int | None  # None when ``out`` cannot be re-read (not seekable)
    package_sha256: str | None


@dataclass(frozen=True)
class ImportSummary:
    akte_id: str
    aktenzeichen: str
    prozess_id: str
    source: str
    vorgaenge: int
    documents: int
    versions: int
    bytes_total: int
    objects_stored: int  # objects this import added to the store (others already existed)
    package_sha256: str


# --------------------------------------------------------------------------- small helpers


def _ts(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _xdomea_id(local_id: str) -> str:
    """The xdomea ID (a UUID) of a record: our ids are UUID hex, case ids ``case-<hex>``."""
    raw = local_id
    for prefix in _ID_PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
    try:
        return str(uuid.UUID(hex=raw))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:aktenlauf:{local_id}"))


def _extension(filename: str, content_type: str) -> str:
    suffix = Path(filename).suffix.lower()
    if _EXT.match(suffix):
        return suffix
    return {"application/pdf": ".pdf", "image/png": ".png", "image/tiff": ".tiff", "image/jpeg": ".jpg",
            "application/json": ".json", "text/plain": ".txt"}.get(content_type, ".bin")


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, ns: str = NS, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}", {k: v for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def _al(parent: ET.Element, tag: str, text: str | int | bool | None) -> None:
    """An extension field; absent values are left out (import reads them back as None)."""
    if text is None:
        return
    if isinstance(text, bool):
        text = "true" if text else "false"
    _sub(parent, tag, text, ns=AL)


def _code(parent: ET.Element, tag: str, code: str, name: str, list_uri: str | None = None,
          version: str | None = None) -> None:
    attrs = {"listURI": list_uri, "listVersionID": version} if list_uri and version else {}
    el = _sub(parent, tag, **attrs)
    ET.SubElement(el, "code").text = code
    ET.SubElement(el, "name").text = name


# --------------------------------------------------------------------------- export


@dataclass
class _PlannedFile:
    member: str
    version: Version


def export_akte(
    session: Session, store: BlobStore, akte_id: str, out: BinaryIO, *, exported_by: str,
    role: str = "system", reason: str | None = None, sender: str = "aktenlauf", recipient: str | None = None,
    message_type: str = ABGABE[0], max_bytes: int | None = None,
    aktenplan: Aktenplan | None = None,
) -> ExportSummary:
    """Write the Akte as an xdomea-style ZIP to ``out`` and audit ``akte.exported``.

    ``out`` should be seekable (a file, a spooled temp file) for the output to be byte-identical
    across runs; on a non-seekable stream the ZIP is valid but uses data descriptors. Raises
    NotFound, ExportTooLarge (before anything is written) and IntegrityViolation (a stored
    object no longer matches its hash: the output is then incomplete and must be discarded).
    The audit event is appended last, so the caller's transaction holds the audit lock briefly.
    """
    if message_type not in MESSAGES:
        raise ValueError(f"unknown xdomea message type {message_type!r}")
    akte = session.get(Akte, akte_id) or session.scalar(select(Akte).where(Akte.aktenzeichen == akte_id))
    if akte is None:
        raise NotFound(f"Akte {akte_id} not found")
    if akte.disposal_status == "destroyed":
        raise Conflict(f"the Akte {akte.aktenzeichen} was destroyed (Aussonderung); only its disposal record remains")
    vorgaenge = list(session.scalars(select(Vorgang).where(Vorgang.akte_id == akte.id)
                                     .order_by(Vorgang.created_at, Vorgang.id)))
    docs = list(session.scalars(select(Dokument).where(Dokument.akte_id == akte.id)
                                .options(selectinload(Dokument.versions))
                                .order_by(Dokument.created_at, Dokument.id)))
    timeline = list(session.scalars(select(TimelineEvent).where(TimelineEvent.vorgang_id.in_([v.id for v in vorgaenge]))
                                    .order_by(TimelineEvent.at, TimelineEvent.id))) if vorgaenge else []
    plan = aktenplan if aktenplan is not None else load_aktenplan()
    entry = plan.entry(akte.file_plan)

    files: list[_PlannedFile] = []
    for d in docs:
        ext = _extension(d.filename, d.content_type)
        for v in d.versions:
            files.append(_PlannedFile(member=f"{_xdomea_id(d.id)}_v{v.number}{ext}", version=v))
    total = sum(f.version.size for f in files)
    if max_bytes is not None and total > max_bytes:
        raise ExportTooLarge(f"the Akte {akte.aktenzeichen} holds {total} bytes of documents; exports over the API "
                             f"are limited to {max_bytes} bytes (use `aktenlauf eakte export` for large Akten)",
                             bytes_total=total, limit=max_bytes)

    stamps = [akte.created_at, akte.closed_at, *(v.updated_at for v in vorgaenge), *(v.closed_at for v in vorgaenge),
              *(d.created_at for d in docs), *(f.version.created_at for f in files), *(t.at for t in timeline)]
    as_of = max(s for s in stamps if s is not None).astimezone(dt.UTC)

    body = _schriftgutobjekt(akte, vorgaenge, docs, timeline, files, entry_title=entry.title if entry else None,
                             appraisal=entry.appraisal if entry else None)
    body_bytes = ET.tostring(body, encoding="utf-8")
    prozess_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:aktenlauf:xdomea:{message_type}:{akte.id}:"
                                                    f"{hashlib.sha256(body_bytes).hexdigest()}"))
    code, name = MESSAGES[message_type]
    root = ET.Element(f"{{{NS}}}{name}.{code}")
    kopf = _sub(root, "Kopf")
    _sub(kopf, "ProzessID", prozess_id)
    _code(kopf, "Nachrichtentyp", code, name, LIST_NACHRICHTENTYP, "2.0")
    _sub(kopf, "Erstellungszeitpunkt", _ts(as_of))
    _sub(_sub(_sub(kopf, "Absender"), "Institution"), "Name", sender)
    _sub(_sub(_sub(kopf, "Empfaenger"), "Institution"), "Name", recipient or "Empfänger des Abgabepakets")
    _sub(kopf, "Importbestaetigung", "0")
    _sub(kopf, "Empfangsbestaetigung", "0")
    root.append(body)
    manifest = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)

    zip_time = (max(as_of.year, 1980), as_of.month, as_of.day, as_of.hour, as_of.minute, as_of.second - as_of.second % 2)
    manifest_name = f"{prozess_id}_{name}.{code}.xml"
    with zipfile.ZipFile(out, "w", allowZip64=True) as zf:
        zf.writestr(_zinfo(manifest_name, zip_time, zipfile.ZIP_DEFLATED), manifest, compresslevel=9)
        for f in files:
            zi = _zinfo(f.member, zip_time, zipfile.ZIP_STORED)
            zi.file_size = f.version.size
            written = 0
            with zf.open(zi, "w") as w:
                for chunk in store.iter_verified(f.version.object_key, f.version.sha256):
                    written += len(chunk)
                    w.write(chunk)
            if written != f.version.size:
                raise IntegrityViolation(f"object {f.version.object_key} has {written} bytes, "
                                         f"its record says {f.version.size}")
    package_size, package_sha = _rehash(out)
    summary = ExportSummary(
        akte_id=akte.id, aktenzeichen=akte.aktenzeichen, prozess_id=prozess_id, message_type=code,
        filename=f"{prozess_id}_{name}.{code}.zip", vorgaenge=len(vorgaenge), documents=len(docs),
        versions=len(files), bytes_total=total, package_size=package_size, package_sha256=package_sha,
    )
    records.audit(session, actor=exported_by, role=role, action="akte.exported", target_type="akte",
                  target_id=akte.id, case_id=vorgaenge[0].id if vorgaenge else None, reason=reason,
                  details={"aktenzeichen": akte.aktenzeichen, "prozess_id": prozess_id, "message_type": code,
                           "documents": len(docs), "versions": len(files), "bytes": total,
                           "package_sha256": package_sha})
    log.info("xdomea.exported", akte_id=akte.id, aktenzeichen=akte.aktenzeichen, versions=len(files), bytes=total)
    return summary


def _zinfo(name: str, when: tuple[int, int, int, int, int, int], compress_type: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=when)
    zi.compress_type = compress_type
    zi.create_system = 3  # unix, independent of the exporting machine
    zi.external_attr = 0o100644 << 16
    return zi


def _rehash(out: BinaryIO) -> tuple[int | None, str | None]:
    try:
        end = out.tell()
        out.seek(0)
    except (OSError, AttributeError, ValueError):
        return None, None
    h = hashlib.sha256()
    try:
        while chunk := out.read(CHUNK):
            h.update(chunk)
    except (OSError, ValueError):  # write-only stream
        out.seek(end)
        return None, None
    out.seek(end)
    return end, h.hexdigest()


def _schriftgutobjekt(akte: Akte, vorgaenge: list[Vorgang], docs: list[Dokument], timeline: list[TimelineEvent],
                      files: list[_PlannedFile], *, entry_title: str | None, appraisal: str | None) -> ET.Element:
    sgo = ET.Element(f"{{{NS}}}Schriftgutobjekt")
    a = _sub(sgo, "Akte")
    _sub(_sub(a, "Identifikation"), "ID", _xdomea_id(akte.id))
    meta = _sub(a, "AllgemeineMetadaten")
    _sub(meta, "Betreff", akte.title)
    _sub(meta, "Kennzeichen", akte.aktenzeichen)
    if akte.department:
        _sub(meta, "Federfuehrung", akte.department)
    _medium(meta)
    plan = _sub(meta, "Aktenplaneinheit")
    _sub(plan, "Kennzeichen", akte.file_plan)
    if entry_title:
        _sub(plan, "Inhaltsangabe", entry_title)
    if appraisal:
        arch = _sub(a, "ArchivspezifischeMetadaten")
        _code(_sub(arch, "Aussonderungsart"), "Aussonderungsart", appraisal,
              {"A": "archivwürdig", "B": "bewerten", "V": "vernichten"}.get(appraisal, appraisal))
    lz = _sub(a, "Laufzeit")
    _sub(lz, "Beginn", akte.created_at.astimezone(dt.UTC).date().isoformat())
    if akte.closed_at is not None:
        _sub(lz, "Ende", akte.closed_at.astimezone(dt.UTC).date().isoformat())
    inhalt = _sub(a, "Akteninhalt")

    by_doc: dict[str, list[_PlannedFile]] = {}
    for f in files:
        by_doc.setdefault(f.version.dokument_id, []).append(f)
    for v in vorgaenge:
        _vorgang(inhalt, v, [d for d in docs if d.vorgang_id == v.id], [t for t in timeline if t.vorgang_id == v.id],
                 by_doc)
    loose = [d for d in docs if d.vorgang_id is None or d.vorgang_id not in {v.id for v in vorgaenge}]
    for i, d in enumerate(loose, 1):
        _dokument(inhalt, d, i, by_doc.get(d.id, []))

    ext = _sub(_sub(a, "AnwendungsspezifischeErweiterungXML"), "Akte", ns=AL)
    _al(ext, "Status", akte.status)
    _al(ext, "Aktenplannummer", akte.file_plan)
    _al(ext, "Jahr", akte.year)
    _al(ext, "Laufnummer", akte.seq)
    _al(ext, "Vertraulich", akte.confidential)
    if akte.confidential_roles:
        roles = _sub(ext, "Rollen", ns=AL)
        for r in sorted(akte.confidential_roles):
            _al(roles, "Rolle", r)
    _al(ext, "Aufbewahrungsjahre", akte.retention_years)
    _al(ext, "AufbewahrenBis", akte.retention_until.isoformat() if akte.retention_until else None)
    _al(ext, "Angelegt", _ts(akte.created_at))
    _al(ext, "Geschlossen", _ts(akte.closed_at))
    return sgo


def _medium(meta: ET.Element) -> None:
    _code(meta, "Medium", "001", "Elektronisch", "urn:xoev-de:xdomea:codeliste:medium", "1.0")


def _vorgang(parent: ET.Element, v: Vorgang, docs: list[Dokument], timeline: list[TimelineEvent],
             by_doc: dict[str, list[_PlannedFile]]) -> None:
    el = _sub(parent, "Vorgang")
    _sub(_sub(el, "Identifikation"), "ID", _xdomea_id(v.id))
    meta = _sub(el, "AllgemeineMetadaten")
    _sub(meta, "Betreff", v.service_name or "Vorgang ohne Leistung")
    _sub(meta, "Kennzeichen", v.aktenzeichen)
    if v.department:
        _sub(meta, "Federfuehrung", v.department)
    _medium(meta)
    lz = _sub(el, "Laufzeit")
    _sub(lz, "Beginn", v.created_at.astimezone(dt.UTC).date().isoformat())
    if v.closed_at is not None:
        _sub(lz, "Ende", v.closed_at.astimezone(dt.UTC).date().isoformat())
    for t in timeline:
        h = _sub(el, "HistorienProtokollInformation")
        _sub(h, "Akteur", "aktenlauf")
        _sub(h, "DatumUhrzeit", _ts(t.at))
        _sub(h, "Aktion", t.message)
        h.set(f"{{{AL}}}Schritt", t.step)
        h.set(f"{{{AL}}}Status", t.status)
        h.set(f"{{{AL}}}Oeffentlich", "true" if t.public else "false")
    for i, d in enumerate(docs, 1):
        _dokument(el, d, i, by_doc.get(d.id, []))
    ext = _sub(_sub(el, "AnwendungsspezifischeErweiterungXML"), "Vorgang", ns=AL)
    _al(ext, "Leistungsschluessel", v.service_key)
    _al(ext, "Leistung", v.service_name)
    _al(ext, "Status", v.status)
    _al(ext, "Schritt", v.step)
    _al(ext, "Gebuehr", v.fee_cents)
    _al(ext, "Zahlungsstatus", v.payment_status)
    _al(ext, "Entscheidung", v.decision)
    _al(ext, "EntschiedenVon", v.decided_by)
    _al(ext, "Begruendung", v.decision_reason)
    _al(ext, "FaelligAm", v.due_on.isoformat() if v.due_on else None)
    _al(ext, "Angelegt", _ts(v.created_at))
    _al(ext, "Geaendert", _ts(v.updated_at))
    _al(ext, "Geschlossen", _ts(v.closed_at))
    # the applicant, as far as the official record needs it: who, where, and the id that answers Auskunft
    app = v.applicant or {}
    ant = _sub(ext, "Antragsteller", ns=AL)
    _al(ant, "Kennung", v.applicant_id)
    _al(ant, "Name", app.get("name"))
    for line in app.get("address_lines") or []:
        _al(ant, "Anschriftzeile", str(line))


def _dokument(parent: ET.Element, d: Dokument, number: int, files: list[_PlannedFile]) -> None:
    el = _sub(parent, "Dokument")
    ident = _sub(el, "Identifikation")
    _sub(ident, "ID", _xdomea_id(d.id))
    _sub(ident, "NummerImUebergeordnetenContainer", number)
    meta = _sub(el, "AllgemeineMetadaten")
    _sub(meta, "Betreff", d.title)
    _medium(meta)
    if d.received_at is not None:
        _sub(el, "Posteingangsdatum", d.received_at.astimezone(dt.UTC).date().isoformat())
    _sub(el, "Typ", d.kind)
    _sub(el, "Bearbeiter", d.created_by)
    for f in files:
        v = f.version
        ver = _sub(el, "Version")
        _sub(ver, "Nummer", v.number)
        fmt = _sub(ver, "Format")
        _sub(fmt, "SonstigerName", d.content_type)
        _sub(fmt, "Version", "")
        prim = _sub(fmt, "Primaerdokument")
        _sub(prim, "Dateiname", f.member)
        _sub(prim, "DateinameOriginal", d.filename)
        _sub(prim, "Ersteller", v.created_by)
        _sub(prim, "DatumUhrzeit", _ts(v.created_at))
        vext = _sub(_sub(ver, "AnwendungsspezifischeErweiterungXML"), "Version", ns=AL)
        _al(vext, "ID", _xdomea_id(v.id))
        _al(vext, "Rolle", v.role)
        _al(vext, "Grund", v.reason)
        _al(vext, "Groesse", v.size)
        _al(vext, "SHA256", v.sha256)
    ext = _sub(_sub(el, "AnwendungsspezifischeErweiterungXML"), "Dokument", ns=AL)
    _al(ext, "Dateityp", d.content_type)
    _al(ext, "Kanal", d.channel)
    _al(ext, "Absender", d.sender)
    _al(ext, "Eingegangen", _ts(d.received_at))
    _al(ext, "Pruefcode", d.verification_code)
    _al(ext, "Oeffentlich", d.public)
    _al(ext, "Angelegt", _ts(d.created_at))


# --------------------------------------------------------------------------- import: parsing


@dataclass
class _PVersion:
    id: str
    number: int
    member: str
    filename: str
    created_by: str
    created_at: dt.datetime
    role: str
    reason: str | None
    size: int
    sha256: str


@dataclass
class _PDokument:
    id: str
    vorgang_id: str | None
    kind: str
    title: str
    filename: str
    content_type: str
    channel: str
    sender: str | None
    received_at: dt.datetime | None
    verification_code: str | None
    public: bool
    created_by: str
    created_at: dt.datetime
    versions: list[_PVersion] = field(default_factory=list)


@dataclass
class _PEvent:
    at: dt.datetime
    step: str
    status: str
    public: bool
    message: str


@dataclass
class _PVorgang:
    id: str
    aktenzeichen: str
    values: dict[str, Any]
    applicant: dict[str, Any]
    applicant_id: str | None
    events: list[_PEvent] = field(default_factory=list)


@dataclass
class _PAkte:
    id: str
    aktenzeichen: str
    file_plan: str
    year: int
    seq: int
    title: str
    department: str | None
    status: str
    confidential: bool
    confidential_roles: list[str]
    retention_years: int
    retention_until: dt.date | None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    vorgaenge: list[_PVorgang] = field(default_factory=list)
    documents: list[_PDokument] = field(default_factory=list)


@dataclass
class _PMessage:
    prozess_id: str
    message_type: str
    sender: str
    akte: _PAkte


def _schema(detail: str) -> InvalidPackage:
    return InvalidPackage("schema", f"the message does not have the expected structure: {detail}")


class _Reader:
    """Strict accessors over the parsed message, naming the offending path in every error."""

    @staticmethod
    def one(el: ET.Element, path: str, ns: str = NS) -> ET.Element:
        found = el.findall(_q(path, ns))
        if len(found) != 1:
            raise _schema(f"expected exactly one {path} in {_local(el.tag)}, found {len(found)}")
        return found[0]

    @staticmethod
    def opt(el: ET.Element, path: str, ns: str = NS) -> ET.Element | None:
        found = el.findall(_q(path, ns))
        if len(found) > 1:
            raise _schema(f"{path} appears {len(found)} times in {_local(el.tag)}")
        return found[0] if found else None

    @classmethod
    def text(cls, el: ET.Element, path: str, ns: str = NS, *, max_len: int = 300) -> str:
        value = (cls.one(el, path, ns).text or "").strip()
        if not value:
            raise _schema(f"{path} in {_local(el.tag)} is empty")
        if len(value) > max_len:
            raise _schema(f"{path} in {_local(el.tag)} is longer than {max_len} characters")
        return value

    @classmethod
    def opt_text(cls, el: ET.Element, path: str, ns: str = NS, *, max_len: int = 300) -> str | None:
        node = cls.opt(el, path, ns)
        if node is None:
            return None
        value = (node.text or "").strip()
        if len(value) > max_len:
            raise _schema(f"{path} in {_local(el.tag)} is longer than {max_len} characters")
        return value

    @classmethod
    def ts(cls, el: ET.Element, path: str, ns: str = NS) -> dt.datetime:
        return _parse_ts(cls.text(el, path, ns, max_len=40), path)

    @classmethod
    def opt_ts(cls, el: ET.Element, path: str, ns: str = NS) -> dt.datetime | None:
        value = cls.opt_text(el, path, ns, max_len=40)
        return _parse_ts(value, path) if value else None

    @classmethod
    def integer(cls, el: ET.Element, path: str, ns: str = NS, *, lo: int = 0, hi: int = 2**62) -> int:
        value = cls.text(el, path, ns, max_len=20)
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise _schema(f"{path} in {_local(el.tag)} is not a number between {lo} and {hi}")
        return int(value)

    @classmethod
    def flag(cls, el: ET.Element, path: str, ns: str = NS) -> bool:
        value = cls.opt_text(el, path, ns, max_len=5)
        if value not in (None, "true", "false"):
            raise _schema(f"{path} in {_local(el.tag)} must be true or false")
        return value == "true"


def _q(path: str, ns: str) -> str:
    return "/".join(f"{{{ns}}}{p}" for p in path.split("/"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_ts(value: str, what: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise _schema(f"{what} is not an ISO 8601 timestamp: {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        raise _schema(f"{what} has no time zone: {value[:40]!r}")
    return parsed.astimezone(dt.UTC)


def _uuid_hex(value: str, what: str) -> str:
    try:
        u = uuid.UUID(value)
    except ValueError as exc:
        raise _schema(f"{what} is not a UUID: {value[:60]!r}") from exc
    if str(u) != value.lower():
        raise _schema(f"{what} is not a UUID in canonical form: {value[:60]!r}")
    return u.hex


def parse_message(data: bytes) -> _PMessage:
    """Parse and check the XML message. No DTDs, entities or external references are accepted."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise InvalidPackage("dtd-forbidden", "the message contains a DTD or entity declarations, which are refused")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (defusedxml.DTDForbidden, defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as exc:
        raise InvalidPackage("dtd-forbidden", f"the message contains a DTD or entities, which are refused: {exc}") \
            from exc
    except ET.ParseError as exc:
        raise InvalidPackage("malformed-xml", f"the message is not well-formed XML: {exc}") from exc
    r = _Reader
    tag = root.tag
    code_by_tag = {f"{{{NS}}}{name}.{code}": code for code, name in MESSAGES.values()}
    if tag not in code_by_tag:
        raise _schema(f"the root element is {tag!r}, expected an xdomea {NS} Abgabe.Abgabe.0401 or "
                      "Aussonderung.Aussonderung.0503 message")
    message_type = code_by_tag[tag]
    kopf = r.one(root, "Kopf")
    prozess_id = r.text(kopf, "ProzessID", max_len=36)
    _uuid_hex(prozess_id, "Kopf/ProzessID")
    if (r.one(kopf, "Nachrichtentyp").findtext("code") or "").strip() != message_type:
        raise _schema("Kopf/Nachrichtentyp does not match the root element")
    r.ts(kopf, "Erstellungszeitpunkt")
    sender = r.text(kopf, "Absender/Institution/Name", max_len=150)
    sgo = r.one(root, "Schriftgutobjekt")
    others = [_local(c.tag) for c in sgo if c.tag != f"{{{NS}}}Akte"]
    if others or len(sgo) != 1:
        raise InvalidPackage("unsupported", "the package must hold exactly one Akte as its Schriftgutobjekt "
                                            f"(found {len(sgo)} objects{': ' + ', '.join(others) if others else ''})")
    return _PMessage(prozess_id=prozess_id, message_type=message_type, sender=sender, akte=_parse_akte(sgo[0]))


def _parse_akte(a: ET.Element) -> _PAkte:
    r = _Reader
    akte_id = _uuid_hex(r.text(a, "Identifikation/ID", max_len=36), "Akte/Identifikation/ID")
    meta = r.one(a, "AllgemeineMetadaten")
    az = r.text(meta, "Kennzeichen", max_len=40)
    ext = r.one(r.one(a, "AnwendungsspezifischeErweiterungXML"), "Akte", AL)
    file_plan = r.text(ext, "Aktenplannummer", AL, max_len=16)
    year = r.integer(ext, "Jahr", AL, lo=1900, hi=9999)
    seq = r.integer(ext, "Laufnummer", AL, lo=1, hi=999_999)
    if az != records.format_aktenzeichen(file_plan, year, seq) or not _AKTENZEICHEN.match(az):
        raise _schema(f"the Aktenzeichen {az!r} does not match file plan {file_plan}, year {year}, sequence {seq}")
    if r.text(meta, "Aktenplaneinheit/Kennzeichen", max_len=16) != file_plan:
        raise _schema("Aktenplaneinheit/Kennzeichen differs from the Aktenzeichen's file-plan number")
    status = r.text(ext, "Status", AL, max_len=16)
    if status not in ("open", "closed"):
        raise _schema(f"Akte status {status!r} is not open or closed")
    roles_el = r.opt(ext, "Rollen", AL)
    roles = [(x.text or "").strip() for x in roles_el.findall(f"{{{AL}}}Rolle")] if roles_el is not None else []
    if any(not re.match(r"^[a-z][a-z0-9_-]{1,39}$", x) for x in roles):
        raise _schema("Akte/Rollen holds an invalid role name")
    until = r.opt_text(ext, "AufbewahrenBis", AL, max_len=10)
    try:
        retention_until = dt.date.fromisoformat(until) if until else None
    except ValueError as exc:
        raise _schema("AufbewahrenBis is not a date") from exc
    akte = _PAkte(
        id=akte_id, aktenzeichen=az, file_plan=file_plan, year=year, seq=seq,
        title=r.text(meta, "Betreff", max_len=200), department=r.opt_text(meta, "Federfuehrung", max_len=64) or None,
        status=status, confidential=r.flag(ext, "Vertraulich", AL), confidential_roles=roles,
        retention_years=r.integer(ext, "Aufbewahrungsjahre", AL, lo=1, hi=200), retention_until=retention_until,
        created_at=r.ts(ext, "Angelegt", AL), closed_at=r.opt_ts(ext, "Geschlossen", AL),
    )
    inhalt = r.one(a, "Akteninhalt")
    for child in inhalt:
        if child.tag == f"{{{NS}}}Vorgang":
            vorgang, docs = _parse_vorgang(child, az)
            akte.vorgaenge.append(vorgang)
            akte.documents.extend(docs)
        elif child.tag == f"{{{NS}}}Dokument":
            akte.documents.append(_parse_dokument(child, None))
        else:
            raise InvalidPackage("unsupported", f"Akteninhalt holds a {_local(child.tag)}; only Vorgang and "
                                                "Dokument are supported")
    return akte


def _parse_vorgang(el: ET.Element, aktenzeichen: str) -> tuple[_PVorgang, list[_PDokument]]:
    r = _Reader
    vid = "xdomea-" + _uuid_hex(r.text(el, "Identifikation/ID", max_len=36), "Vorgang/Identifikation/ID")
    meta = r.one(el, "AllgemeineMetadaten")
    az = r.text(meta, "Kennzeichen", max_len=40)
    if az != aktenzeichen:
        raise _schema(f"the Vorgang's Kennzeichen {az!r} differs from its Akte's {aktenzeichen!r}")
    ext = r.one(r.one(el, "AnwendungsspezifischeErweiterungXML"), "Vorgang", AL)
    r.text(meta, "Betreff", max_len=200)
    service_key = r.opt_text(ext, "Leistungsschluessel", AL, max_len=32)
    due = r.opt_text(ext, "FaelligAm", AL, max_len=10)
    fee = r.opt_text(ext, "Gebuehr", AL, max_len=12)
    if fee is not None and not fee.isdigit():
        raise _schema("Vorgang/Gebuehr is not a number")
    try:
        due_on = dt.date.fromisoformat(due) if due else None
    except ValueError as exc:
        raise _schema("Vorgang/FaelligAm is not a date") from exc
    values: dict[str, Any] = {
        "service_key": service_key, "service_name": r.opt_text(ext, "Leistung", AL, max_len=200),
        "department": r.opt_text(meta, "Federfuehrung", max_len=64) or None,
        "status": r.text(ext, "Status", AL, max_len=32), "step": r.text(ext, "Schritt", AL, max_len=32),
        "fee_cents": int(fee) if fee is not None else 0,
        "payment_status": r.opt_text(ext, "Zahlungsstatus", AL, max_len=16),
        "decision": r.opt_text(ext, "Entscheidung", AL, max_len=16),
        "decided_by": r.opt_text(ext, "EntschiedenVon", AL, max_len=200),
        "decision_reason": r.opt_text(ext, "Begruendung", AL, max_len=10_000),
        "due_on": due_on, "created_at": r.ts(ext, "Angelegt", AL), "updated_at": r.ts(ext, "Geaendert", AL),
        "closed_at": r.opt_ts(ext, "Geschlossen", AL),
    }
    ant = r.one(ext, "Antragsteller", AL)
    applicant: dict[str, Any] = {}
    applicant_id = r.opt_text(ant, "Kennung", AL, max_len=200)
    if applicant_id:
        applicant["id"] = applicant_id
    name = r.opt_text(ant, "Name", AL, max_len=300)
    if name:
        applicant["name"] = name
    lines = [(x.text or "").strip()[:300] for x in ant.findall(f"{{{AL}}}Anschriftzeile")]
    if lines:
        applicant["address_lines"] = lines
    vorgang = _PVorgang(id=vid, aktenzeichen=az, values=values, applicant=applicant, applicant_id=applicant_id)
    for h in el.findall(f"{{{NS}}}HistorienProtokollInformation"):
        vorgang.events.append(_PEvent(
            at=r.ts(h, "DatumUhrzeit"), message=r.opt_text(h, "Aktion", max_len=10_000) or "",
            step=(h.get(f"{{{AL}}}Schritt") or "")[:32], status=(h.get(f"{{{AL}}}Status") or "")[:32],
            public=h.get(f"{{{AL}}}Oeffentlich") == "true"))
    docs = [_parse_dokument(d, vid) for d in el.findall(f"{{{NS}}}Dokument")]
    return vorgang, docs


def _parse_dokument(el: ET.Element, vorgang_id: str | None) -> _PDokument:
    r = _Reader
    did = _uuid_hex(r.text(el, "Identifikation/ID", max_len=36), "Dokument/Identifikation/ID")
    kind = r.text(el, "Typ", max_len=16)
    if kind not in records.DOCUMENT_KINDS:
        raise _schema(f"document kind {kind!r} is not one of {', '.join(records.DOCUMENT_KINDS)}")
    ext = r.one(r.one(el, "AnwendungsspezifischeErweiterungXML"), "Dokument", AL)
    doc = _PDokument(
        id=did, vorgang_id=vorgang_id, kind=kind, title=r.text(r.one(el, "AllgemeineMetadaten"), "Betreff"),
        filename="", content_type=r.text(ext, "Dateityp", AL, max_len=100),
        channel=r.text(ext, "Kanal", AL, max_len=32), sender=r.opt_text(ext, "Absender", AL, max_len=200),
        received_at=r.opt_ts(ext, "Eingegangen", AL), verification_code=r.opt_text(ext, "Pruefcode", AL, max_len=20),
        public=r.flag(ext, "Oeffentlich", AL), created_by=r.text(el, "Bearbeiter", max_len=200),
        created_at=r.ts(ext, "Angelegt", AL),
    )
    for ver in el.findall(f"{{{NS}}}Version"):
        fmt = r.one(ver, "Format")
        prim = r.one(fmt, "Primaerdokument")
        vext = r.one(r.one(ver, "AnwendungsspezifischeErweiterungXML"), "Version", AL)
        sha = r.text(vext, "SHA256", AL, max_len=64)
        if not _SHA256.match(sha):
            raise _schema(f"SHA256 of a version of document {did} is not 64 lower-case hex digits")
        doc.versions.append(_PVersion(
            id=_uuid_hex(r.text(vext, "ID", AL, max_len=36), "Version/ID"),
            number=r.integer(ver, "Nummer", lo=1, hi=100_000), member=r.text(prim, "Dateiname", max_len=200),
            filename=r.text(prim, "DateinameOriginal"), created_by=r.text(prim, "Ersteller", max_len=200),
            created_at=r.ts(prim, "DatumUhrzeit"), role=r.text(vext, "Rolle", AL, max_len=16),
            reason=r.opt_text(vext, "Grund", AL, max_len=10_000), size=r.integer(vext, "Groesse", AL), sha256=sha))
    if not doc.versions:
        raise _schema(f"document {did} has no Version")
    if [v.number for v in doc.versions] != list(range(1, len(doc.versions) + 1)):
        raise _schema(f"the versions of document {did} are not numbered 1, 2, 3, …")
    doc.filename = doc.versions[-1].filename
    return doc


# --------------------------------------------------------------------------- import: the package


def _check_members(zf: zipfile.ZipFile, *, max_bytes: int, max_members: int) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > max_members:
        raise PackageTooLarge(f"the package has {len(infos)} members; at most {max_members} are accepted",
                              reason="too-many-members")
    members: dict[str, zipfile.ZipInfo] = {}
    declared = 0
    for info in infos:
        name = info.filename
        if (name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/") or re.match(r"^[A-Za-z]:", name)
                or "/" in name or "\x00" in name):
            raise InvalidPackage("unsafe-path", f"the member {name[:120]!r} has a path; package members must be plain "
                                                "file names (no directories, '..', absolute paths or backslashes)")
        if not _MEMBER.match(name):
            raise InvalidPackage("unsafe-path", f"the member name {name[:120]!r} has characters that are not allowed")
        if name in members:
            raise InvalidPackage("duplicate-member", f"the member {name!r} appears twice in the package")
        if info.flag_bits & 0x1:
            raise InvalidPackage("encrypted", f"the member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidPackage("unsupported-compression", f"the member {name!r} uses an unsupported compression")
        declared += info.file_size
        if declared > max_bytes:
            raise PackageTooLarge(f"the package's members declare more than {max_bytes} bytes uncompressed",
                                  reason="too-large-uncompressed")
        members[name] = info
    return members


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> Iterator[bytes]:
    """Yield a member's bytes, refusing more than it declared (or than ``limit``)."""
    cap = min(info.file_size, limit)
    seen = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(CHUNK):
                seen += len(chunk)
                if seen > cap:
                    raise InvalidPackage("size-mismatch", f"the member {info.filename!r} holds more bytes than it "
                                                          "declares")
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError) as exc:  # CRC mismatch, truncated data, bad deflate stream
        raise InvalidPackage("corrupt-member", f"the member {info.filename!r} cannot be read: {exc}") from exc
    if seen != info.file_size:
        raise InvalidPackage("size-mismatch", f"the member {info.filename!r} declares {info.file_size} bytes "
                                              f"but holds {seen}")


def _conflicts(session: Session, akte: _PAkte) -> None:
    def clash(reason: str, detail: str) -> ImportConflict:
        return ImportConflict(reason, detail)

    existing = session.get(Akte, akte.id)
    if existing is not None:
        raise clash("already-imported", f"the Akte {akte.aktenzeichen} (id {akte.id}) already exists in this instance"
                    + (f" (imported from {existing.imported_from})" if existing.imported_from else ""))
    taken = session.scalar(select(Akte.id).where(or_(Akte.aktenzeichen == akte.aktenzeichen, (
        (Akte.file_plan == akte.file_plan) & (Akte.year == akte.year) & (Akte.seq == akte.seq)))).limit(1))
    if taken is not None:
        raise clash("aktenzeichen-taken", f"the Aktenzeichen {akte.aktenzeichen} is already used by another Akte in "
                    "this instance; an Akte keeps its Aktenzeichen on import, so it cannot be imported here")
    vids = [v.id for v in akte.vorgaenge]
    if vids and session.scalar(select(Vorgang.id).where(or_(Vorgang.id.in_(vids),
                                                            Vorgang.aktenzeichen == akte.aktenzeichen)).limit(1)):
        raise clash("vorgang-exists", "a Vorgang of the package already exists in this instance")
    dids = [d.id for d in akte.documents]
    if dids and session.scalar(select(Dokument.id).where(or_(
            Dokument.id.in_(dids), Dokument.idempotency_key.in_([f"xdomea:{d}" for d in dids]))).limit(1)):
        raise clash("dokument-exists", "a Dokument of the package already exists in this instance")
    codes = [d.verification_code for d in akte.documents if d.verification_code]
    if codes and session.scalar(select(Dokument.id).where(Dokument.verification_code.in_(codes)).limit(1)):
        raise clash("verification-code-taken", "a verification code of the package is already used in this instance")
    verids = [v.id for d in akte.documents for v in d.versions]
    if verids and session.scalar(select(Version.id).where(Version.id.in_(verids)).limit(1)):
        raise clash("version-exists", "a Version of the package already exists in this instance")


def import_package(
    sessions: sessionmaker[Session], store: BlobStore, fileobj: BinaryIO, *, imported_by: str, max_bytes: int,
    role: str = "admin", reason: str | None = None, aktenplan: Aktenplan | None = None,
    max_members: int = MAX_MEMBERS,
) -> ImportSummary:
    """Validate a package completely, then store its objects and create its records in one transaction.

    ``fileobj`` is a seekable file holding the ZIP. Raises InvalidPackage (422), PackageTooLarge
    (413), ImportConflict (409); on any failure nothing stays behind (rows rolled back, objects
    this import added removed again).
    """
    fileobj.seek(0, 2)
    size = fileobj.tell()
    if size > max_bytes:
        raise PackageTooLarge(f"the package has {size} bytes; at most {max_bytes} are accepted")
    fileobj.seek(0)
    h = hashlib.sha256()
    while chunk := fileobj.read(CHUNK):
        h.update(chunk)
    package_sha = h.hexdigest()
    fileobj.seek(0)
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise InvalidPackage("not-a-zip", f"the upload is not a readable ZIP file: {exc}") from exc
    with zf:
        members = _check_members(zf, max_bytes=max_bytes, max_members=max_members)
        manifests = [n for n in members if _MANIFEST.match(n)]
        if len(manifests) != 1:
            raise InvalidPackage("manifest", "the package must hold exactly one xdomea message named "
                                             "<ProzessID>_Abgabe.Abgabe.0401.xml (or …_Aussonderung.Aussonderung.0503"
                                             f".xml); found {len(manifests)}")
        minfo = members[manifests[0]]
        if minfo.file_size > MAX_MANIFEST_BYTES:
            raise PackageTooLarge(f"the message is larger than {MAX_MANIFEST_BYTES} bytes", reason="manifest-too-large")
        msg = parse_message(b"".join(_read_member(zf, minfo, MAX_MANIFEST_BYTES)))
        m = _MANIFEST.match(manifests[0])
        assert m is not None
        if m.group(1) != msg.prozess_id or not m.group(2).endswith(msg.message_type):
            raise _schema("the message's file name does not match its ProzessID and message type")
        akte = msg.akte
        plan = aktenplan if aktenplan is not None else load_aktenplan()
        if plan.entry(akte.file_plan) is None:
            raise InvalidPackage("unknown-file-plan", f"the file-plan number {akte.file_plan} of the Akte is not in "
                                                      "this instance's Aktenplan")
        # every file referenced once, every member referenced (no extra files), sizes as declared
        referenced: dict[str, _PVersion] = {}
        for d in akte.documents:
            for v in d.versions:
                if v.member in referenced or v.member == manifests[0]:
                    raise _schema(f"the file {v.member!r} is referenced more than once")
                referenced[v.member] = v
        missing = sorted(set(referenced) - set(members))
        if missing:
            raise InvalidPackage("missing-file", f"the message references files the package does not hold: "
                                                 f"{', '.join(missing[:5])}")
        extra = sorted(set(members) - set(referenced) - {manifests[0]})
        if extra:
            raise InvalidPackage("extra-file", f"the package holds files the message does not describe: "
                                               f"{', '.join(extra[:5])}")
        for name, v in referenced.items():
            if members[name].file_size != v.size:
                raise InvalidPackage("size-mismatch", f"the file {name!r} has {members[name].file_size} bytes, "
                                                      f"the message says {v.size}")
        ids = [d.id for d in akte.documents] + [v.id for d in akte.documents for v in d.versions]
        if len(set(ids)) != len(ids) or len({v.id for v in akte.vorgaenge}) != len(akte.vorgaenge):
            raise _schema("an ID appears twice in the message")
        with sessions() as s:
            _conflicts(s, akte)

        with tempfile.TemporaryDirectory(prefix="aktenlauf-import-") as tmp:
            # 1. every file's size and SHA-256, before anything is stored
            paths: dict[str, Path] = {}
            for i, (name, v) in enumerate(referenced.items()):
                path = Path(tmp) / f"{i:06d}"
                fh = hashlib.sha256()
                with path.open("wb") as out:
                    for chunk in _read_member(zf, members[name], max_bytes):
                        fh.update(chunk)
                        out.write(chunk)
                if fh.hexdigest() != v.sha256:
                    raise InvalidPackage("hash-mismatch", f"the file {name!r} does not match its SHA-256 in the "
                                                          f"message (expected {v.sha256}, got {fh.hexdigest()})")
                paths[name] = path
            # 2. objects, then 3. rows in one transaction; undo the objects if anything fails
            new_keys: list[str] = []
            try:
                types = {v.member: d.content_type for d in akte.documents for v in d.versions}
                for name, v in referenced.items():
                    key = object_key(v.sha256)
                    if key in new_keys:
                        continue
                    existed = store.exists(key)
                    # put_file also refreshes an old (possibly orphaned) object, so the orphan sweep's grace
                    # period spares it until the rows below exist
                    ref = store.put_file(paths[name], types[name])
                    if ref.sha256 != v.sha256:  # the temp file changed under us
                        raise IntegrityViolation(f"the file {name!r} changed while it was stored")
                    if not existed:
                        new_keys.append(key)
                source = f"{msg.sender} (xdomea {msg.message_type}, ProzessID {msg.prozess_id})"[:200]
                with sessions() as s, s.begin():
                    _conflicts(s, akte)
                    _create_rows(s, store.bucket, akte, source=source, package_sha=package_sha)
                    s.flush()
                    for doc in s.scalars(select(Dokument).where(Dokument.akte_id == akte.id)):
                        search.index_document(s, doc)  # findable by title and metadata (no OCR text travels)
                    records.audit(
                        s, actor=imported_by, role=role, action="akte.imported", target_type="akte", target_id=akte.id,
                        case_id=akte.vorgaenge[0].id if akte.vorgaenge else None, reason=reason,
                        details={"aktenzeichen": akte.aktenzeichen, "source": source, "prozess_id": msg.prozess_id,
                                 "package_sha256": package_sha, "documents": len(akte.documents),
                                 "versions": len(referenced), "objects_stored": len(new_keys)})
            except IntegrityError as exc:
                _discard(sessions, store, new_keys)
                raise ImportConflict("conflict", f"the Akte conflicts with records created meanwhile: "
                                                 f"{str(exc.orig)[:200]}") from exc
            except BaseException:
                _discard(sessions, store, new_keys)
                raise
    log.info("xdomea.imported", akte_id=akte.id, aktenzeichen=akte.aktenzeichen, source=source,
             versions=len(referenced), objects_stored=len(new_keys))
    return ImportSummary(
        akte_id=akte.id, aktenzeichen=akte.aktenzeichen, prozess_id=msg.prozess_id, source=source,
        vorgaenge=len(akte.vorgaenge), documents=len(akte.documents), versions=len(referenced),
        bytes_total=sum(v.size for v in referenced.values()), objects_stored=len(new_keys),
        package_sha256=package_sha)


def _create_rows(s: Session, bucket: str, akte: _PAkte, *, source: str, package_sha: str) -> None:
    s.add(Akte(
        id=akte.id, aktenzeichen=akte.aktenzeichen, file_plan=akte.file_plan, year=akte.year, seq=akte.seq,
        title=akte.title, department=akte.department, status=akte.status, confidential=akte.confidential,
        confidential_roles=akte.confidential_roles, retention_years=akte.retention_years,
        retention_until=akte.retention_until, imported_from=source, created_at=akte.created_at,
        closed_at=akte.closed_at))
    s.flush()
    _advance_counter(s, akte.file_plan, akte.year, akte.seq)
    for v in akte.vorgaenge:
        s.add(Vorgang(id=v.id, akte_id=akte.id, aktenzeichen=v.aktenzeichen, integrator=IMPORT_INTEGRATOR,
                      applicant_id=v.applicant_id, applicant=v.applicant, form={}, fingerprint=package_sha,
                      **v.values))
    s.flush()
    for v in akte.vorgaenge:
        for i, e in enumerate(v.events):
            s.add(TimelineEvent(key=f"xdomea:{v.id}:{i}", vorgang_id=v.id, at=e.at, step=e.step, status=e.status,
                                public=e.public, message=e.message))
    for d in akte.documents:
        s.add(Dokument(
            id=d.id, idempotency_key=f"xdomea:{d.id}", akte_id=akte.id, vorgang_id=d.vorgang_id, kind=d.kind,
            title=d.title, filename=d.filename, content_type=d.content_type, channel=d.channel, sender=d.sender,
            public=d.public, verification_code=d.verification_code, received_at=d.received_at,
            created_by=d.created_by, created_at=d.created_at))
    s.flush()
    for d in akte.documents:
        for v in d.versions:
            s.add(Version(id=v.id, dokument_id=d.id, number=v.number, sha256=v.sha256, size=v.size, bucket=bucket,
                          object_key=object_key(v.sha256), role=v.role, created_by=v.created_by, reason=v.reason,
                          created_at=v.created_at))
    s.flush()


def _advance_counter(s: Session, file_plan: str, year: int, seq: int) -> None:
    """Local allocation must never hand out the imported Aktenzeichen again: move the counter past it."""
    current = s.scalar(select(AktenzeichenCounter).where(AktenzeichenCounter.file_plan == file_plan,
                                                         AktenzeichenCounter.year == year).with_for_update())
    if current is None:
        s.add(AktenzeichenCounter(file_plan=file_plan, year=year, last_seq=seq))
    elif current.last_seq < seq:
        current.last_seq = seq
    s.flush()


def _discard(sessions: sessionmaker[Session], store: BlobStore, keys: list[str]) -> None:
    """Remove objects this import added, unless a record references them meanwhile (best effort:
    what cannot be removed is left for the orphan sweep and logged)."""
    for key in keys:
        try:
            with sessions() as s:
                used = s.scalar(select(func.count(Version.id)).where(Version.object_key == key))
            if not used:
                store.remove(key)
        except (AktenlaufError, OSError) as exc:  # pragma: no cover - store unreachable
            log.warning("xdomea.cleanup_failed", key=key, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - never mask the original failure
            log.warning("xdomea.cleanup_failed", key=key, error=str(exc))
