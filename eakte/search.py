"""Full-text search over documents: indexing and querying, the same behaviour on PostgreSQL
and SQLite. Framework-free.

Index (one ``dokument_search`` row per document, written in the caller's transaction):

* fields: A = title, kind, Aktenzeichen; B = sender, service, department, Akte title;
  C = the document text (OCR or extracted), capped at ``MAX_TEXT_CHARS``; D = the parts of
  German compounds in all of these (eakte/compounds.py): "Baugenehmigung" adds "bau" and
  "genehmigung", so a search for "Genehmigung" finds it.
* PostgreSQL: ``tsv`` tsvector built with the stock ``german`` configuration, GIN index,
  stored inline (``STORAGE MAIN``: compressed, not TOASTed out of line, so ranking does not
  fetch TOAST chunks). SQLite: FTS5 table ``dokument_fts`` with the same Snowball stems,
  computed in Python (eakte/stemmer.py, checked against PostgreSQL's output).

Query: plain words are ANDed, "quoted phrases" must be adjacent; words are analysed by the
database's own parser/stemmer (PostgreSQL: ``phraseto_tsquery`` with bound parameters) or by
the same stemmer in Python (SQLite: a MATCH string built only from ``\\w`` stems, each
quoted), so no input can reach the query syntax. Stop words are dropped; a query without
searchable words is refused (``InvalidInput``, 422).

Ranking: when at most ``RANK_LIMIT`` documents match, they are ranked by relevance
(``ts_rank`` with weights / ``bm25``). More matches than that are ordered by date, newest
first, without ranking: ranking every row of a very common term reads and decompresses every
matching tsvector, which is what makes PostgreSQL full-text search slow (bench/search.py).

Access: the index row keeps copies of what the access rule and the filters need (case,
department, service, kind, integrator, public/own, confidentiality, closed, letter), so a
query never joins the wide document, case and Akte rows for each candidate — that join was
what made a medium term the caller may not see slow (5 000 candidates, 0 visible).
``index_document`` writes them, ``refresh_akte`` updates them when an Akte's confidentiality
or closed state changes, ``reindex_case`` when a case's department or service changes.

Highlights are computed in Python from the stored text on both backends, so a compound is
marked when one of its parts was searched (``<mark>Baugenehmigung</mark>`` for
"Genehmigung"). Snippets are HTML-escaped; only ``<mark>`` tags are added.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass, field

from sqlalchemy import (ColumnElement, Float, and_, cast, column, delete, func, literal, literal_column, or_, select,
                        table, text, update)
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR
from sqlalchemy.orm import Session, selectinload

from aktenlauf.errors import InvalidInput
from eakte import compounds
from eakte.access import CaseColumns, Principal, content_needs_reason, visible_cases
from eakte.models import Akte, Dokument, DokumentSearch, Vorgang, utcnow
from eakte.stemmer import STOP_WORDS, stem

MAX_TEXT_CHARS = 200_000   # indexed and highlighted text per document
MAX_QUERY_CHARS = 500
MAX_TERMS = 12
RANK_LIMIT = 500           # more matches than this: newest first instead of ranked
MAX_PAGE = 100
SNIPPET_TOKENS = 24
MAX_SNIPPETS = 3
PG_WEIGHTS = "{0.05, 0.2, 0.4, 1.0}"  # D (compound parts), C (text), B (metadata), A (title)
SQLITE_WEIGHTS = (10.0, 1.0, 0.25)     # bm25 column weights: meta, body, parts

#: The document vector (PostgreSQL); the placeholders are SQL expressions of the four fields.
PG_TSVECTOR_SQL = ("setweight(to_tsvector('german', {a}), 'A') || setweight(to_tsvector('german', {b}), 'B') || "
                   "setweight(to_tsvector('german', {body}), 'C') || setweight(to_tsvector('german', {parts}), 'D')")

_TOKEN = re.compile(r"[^\W_]+")
_TSV = literal_column("dokument_search.tsv", TSVECTOR)
_GERMAN = cast(literal("german"), REGCONFIG)
_FTS = table("dokument_fts", column("rowid"))


def tokens(s: str) -> list[str]:
    return [m.group(0).lower() for m in _TOKEN.finditer(s)]


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --------------------------------------------------------------------------- indexing


@dataclass(frozen=True)
class _Fields:
    a: str
    b: str
    body: str

    def parts(self) -> str:
        seen: dict[str, None] = {}
        for t in tokens(f"{self.a} {self.b} {self.body}"):
            for p in compounds.parts(t):
                seen.setdefault(p, None)
        return " ".join(seen)


def _fields(session: Session, doc: Dokument) -> tuple[_Fields, dict[str, object]]:
    """The text fields to index, and the access/filter attributes kept on the index row."""
    a = [doc.title, doc.kind]
    b = [doc.sender or ""]
    attrs: dict[str, object] = {
        "vorgang_id": doc.vorgang_id, "department": None, "service_key": None, "kind": doc.kind,
        "integrator": None, "public": bool(doc.public), "created_by": doc.created_by or "",
        "confidential": False, "confidential_roles": [], "akte_closed": False,
        "is_letter": doc.vorgang_id is None and doc.akte_id is None,
    }
    if doc.vorgang_id is not None:
        v = session.get(Vorgang, doc.vorgang_id)
        if v is not None:
            a.append(v.aktenzeichen)
            b += [v.service_name or "", v.department or "", v.akte.title if v.akte else ""]
            attrs.update(department=v.department, service_key=v.service_key, integrator=v.integrator)
            if v.akte is not None:
                attrs.update(confidential=bool(v.akte.confidential),
                             confidential_roles=list(v.akte.confidential_roles or []),
                             akte_closed=v.akte.status == "closed")
    return _Fields(" ".join(a), " ".join(x for x in b if x), (doc.text or "")[:MAX_TEXT_CHARS]), attrs


def _stems(s: str) -> list[str]:
    return [stem(t) for t in tokens(s) if t not in STOP_WORDS]


def index_document(session: Session, doc: Dokument) -> None:
    """Build or rebuild the index entry of ``doc`` in the caller's transaction (idempotent).
    Call it whenever a document's text or metadata, or its case's metadata, changes."""
    f, attrs = _fields(session, doc)
    doc_date = doc.received_at or doc.created_at or utcnow()
    row = session.scalar(select(DokumentSearch).where(DokumentSearch.dokument_id == doc.id))
    if row is None:
        row = DokumentSearch(dokument_id=doc.id, doc_date=doc_date)
        session.add(row)
    row.doc_date = doc_date
    for name, value in attrs.items():
        setattr(row, name, value)
    session.flush()
    if _is_pg(session):
        session.execute(text(
            "UPDATE dokument_search SET tsv = "
            + PG_TSVECTOR_SQL.format(a="CAST(:a AS text)", b="CAST(:b AS text)", body="CAST(:body AS text)",
                                     parts="CAST(:parts AS text)")
            + " WHERE id = :id"),
            {"id": row.id, "a": f.a, "b": f.b, "body": f.body, "parts": f.parts()})
        return
    session.execute(text("DELETE FROM dokument_fts WHERE rowid = :id"), {"id": row.id})
    session.execute(text("INSERT INTO dokument_fts (rowid, meta, body, parts) VALUES (:id, :meta, :body, :parts)"),
                    {"id": row.id, "meta": " ".join(_stems(f"{f.a} {f.b}")), "body": " ".join(_stems(f.body)),
                     "parts": " ".join(_stems(f.parts()))})


def refresh_akte(session: Session, akte: Akte) -> None:
    """Copy an Akte's confidentiality and closed state onto its documents' index rows (cheap:
    no text is re-analysed). Call it when either changes."""
    session.flush()
    session.execute(
        update(DokumentSearch)
        .where(DokumentSearch.dokument_id.in_(select(Dokument.id).where(Dokument.akte_id == akte.id)))
        .values(confidential=bool(akte.confidential), confidential_roles=list(akte.confidential_roles or []),
                akte_closed=akte.status == "closed"))


def reindex_case(session: Session, case_id: str) -> int:
    """Re-index every document of a case (its Aktenzeichen, service or department changed)."""
    docs = session.scalars(select(Dokument).where(Dokument.vorgang_id == case_id)).all()
    for d in docs:
        index_document(session, d)
    return len(docs)


def remove_document(session: Session, dokument_id: str) -> None:
    """Drop a document from the index (e.g. when it is destroyed in Aussonderung)."""
    if not _is_pg(session):
        row_id = session.scalar(select(DokumentSearch.id).where(DokumentSearch.dokument_id == dokument_id))
        if row_id is not None:
            session.execute(text("DELETE FROM dokument_fts WHERE rowid = :id"), {"id": row_id})
    session.execute(delete(DokumentSearch).where(DokumentSearch.dokument_id == dokument_id))


def backfill(session: Session, batch: int = 500) -> int:
    """Index every document that has no entry yet (migration 0003 and repair)."""
    n = 0
    while True:
        ids = session.scalars(
            select(Dokument.id).where(~Dokument.id.in_(select(DokumentSearch.dokument_id))).limit(batch)).all()
        if not ids:
            return n
        for d in session.scalars(select(Dokument).where(Dokument.id.in_(ids))):
            index_document(session, d)
            n += 1
        session.flush()


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Term:
    """One search term: a word, or a quoted phrase (several tokens, adjacent). ``raw`` goes to
    PostgreSQL's parser as a bound parameter (it splits "63.10-2026-000001" its own way)."""

    raw: str
    tokens: tuple[str, ...]


def parse_query(q: str) -> list[Term]:
    """Words and "quoted phrases". A lone quote is ignored; stop words are dropped; a query
    with nothing searchable left is refused."""
    q = (q or "").strip()
    if not q:
        raise InvalidInput("the query `q` is empty")
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS} characters")
    pieces: list[str] = []
    for i, chunk in enumerate(q.split('"')):
        inside = i % 2 == 1 and i < q.count('"')  # an unpaired last quote opens nothing
        if inside:
            pieces.append(chunk)
        else:
            pieces.extend(chunk.split())
    terms: list[Term] = []
    for piece in pieces:
        toks = tuple(tokens(piece))
        if not toks or all(t in STOP_WORDS for t in toks):
            continue
        terms.append(Term(raw=" ".join(piece.split()), tokens=toks))
    if not terms:
        raise InvalidInput("the query has no searchable words (only stop words or punctuation)")
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"the query has more than {MAX_TERMS} terms")
    return terms


def _pg_query(terms: list[Term]) -> ColumnElement[object]:
    q: ColumnElement[object] | None = None
    for t in terms:
        part = func.phraseto_tsquery(_GERMAN, literal(t.raw))
        q = part if q is None else q.op("&&")(part)
    assert q is not None
    return q


def _fts5_query(terms: list[Term]) -> str:
    """An FTS5 MATCH expression of quoted phrases of stems; stems are ``[^\\W_]+`` only, so
    they can never contain a quote or an operator."""
    phrases = []
    for t in terms:
        stems = [stem(x) for x in t.tokens if x not in STOP_WORDS]
        phrases.append('"' + " ".join(stems) + '"')
    return " AND ".join(phrases)


@dataclass(frozen=True)
class SearchFilters:
    department: str | None = None
    service_key: str | None = None
    kind: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None  # inclusive


@dataclass
class Hit:
    dokument_id: str
    title: str
    kind: str
    date: dt.datetime
    case_id: str | None
    aktenzeichen: str | None
    service_key: str | None
    service_name: str | None
    department: str | None
    sender: str | None
    score: float | None
    title_highlight: str
    highlights: list[str] = field(default_factory=list)
    content_withheld: bool = False  # admins/archivists: snippets only with a stated reason


@dataclass
class Results:
    total: int
    total_is_lower_bound: bool
    order: str  # relevance | date
    hits: list[Hit]
    terms: list[str]


_INDEX_COLUMNS = CaseColumns(integrator=DokumentSearch.integrator, department=DokumentSearch.department,
                             confidential=DokumentSearch.confidential,
                             confidential_roles=DokumentSearch.confidential_roles,
                             closed=DokumentSearch.akte_closed.is_(True))


def _access(p: Principal) -> ColumnElement[bool]:
    """Which documents ``p`` may find: the cases ``visible_cases`` allows (integrators only
    their public documents and own uploads, as in the documents API), and letters still in
    the mailroom for mailroom clerks and admins. Evaluated on the index row's own copies of
    the access attributes, so no candidate needs a join."""
    ds = DokumentSearch
    in_case = and_(ds.vorgang_id.is_not(None), visible_cases(p, _INDEX_COLUMNS))
    if p.has("integrator") and not (p.has("clerk") or p.has("admin")):
        in_case = and_(in_case, or_(ds.public.is_(True), ds.created_by == p.sub))
    if p.has("mailroom") or p.has("admin"):
        return or_(in_case, ds.is_letter.is_(True))
    return in_case


def _start(dd: dt.date) -> dt.datetime:
    return dt.datetime(dd.year, dd.month, dd.day, tzinfo=dt.UTC)


def search(session: Session, principal: Principal, q: str, filters: SearchFilters | None = None, *,
           limit: int = 20, offset: int = 0, sort: str = "relevance", content_reason: bool = False) -> Results:
    """Documents matching ``q`` that ``principal`` may see, with highlights."""
    filters = filters or SearchFilters()
    terms = parse_query(q)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise InvalidInput("offset must not be negative")
    if sort not in ("relevance", "date"):
        raise InvalidInput("sort must be `relevance` or `date`")
    if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
        raise InvalidInput("`from` is after `to`")
    pg = _is_pg(session)

    conds: list[ColumnElement[bool]] = [_access(principal)]
    if filters.department:
        conds.append(DokumentSearch.department == filters.department)
    if filters.service_key:
        conds.append(DokumentSearch.service_key == filters.service_key)
    if filters.kind:
        conds.append(DokumentSearch.kind == filters.kind)
    if filters.date_from:
        conds.append(DokumentSearch.doc_date >= _start(filters.date_from))
    if filters.date_to:
        conds.append(DokumentSearch.doc_date < _start(filters.date_to + dt.timedelta(days=1)))

    if pg:
        tsq = _pg_query(terms)
        match: ColumnElement[bool] = _TSV.bool_op("@@")(tsq)
        score: ColumnElement[float] = func.ts_rank(literal_column(f"'{PG_WEIGHTS}'::float4[]"), _TSV, tsq,
                                                   type_=Float)
        source = select(DokumentSearch.dokument_id, DokumentSearch.doc_date).select_from(DokumentSearch)
    else:
        fts = literal_column("dokument_fts")
        match = fts.op("MATCH")(_fts5_query(terms))
        score = -func.bm25(fts, *SQLITE_WEIGHTS, type_=Float)
        source = (select(DokumentSearch.dokument_id, DokumentSearch.doc_date).select_from(_FTS)
                  .join(DokumentSearch, DokumentSearch.id == _FTS.c.rowid))
    base = source.where(match, *conds)

    capped = session.scalar(select(func.count()).select_from(base.limit(RANK_LIMIT + 1).subquery())) or 0
    lower_bound = capped > RANK_LIMIT
    order = "date" if sort == "date" or lower_bound else "relevance"
    if order == "relevance":
        page = base.add_columns(score.label("score")).order_by(literal_column("score").desc(),
                                                              DokumentSearch.doc_date.desc(), DokumentSearch.dokument_id)
    else:
        page = base.add_columns(cast(None, Float).label("score")).order_by(DokumentSearch.doc_date.desc(),
                                                                              DokumentSearch.dokument_id)
    rows = session.execute(page.limit(limit).offset(offset)).all()
    hits = _hits(session, principal, terms, rows, content_reason)
    return Results(total=capped, total_is_lower_bound=lower_bound, order=order, hits=hits, terms=[t.raw for t in terms])


def _hits(session: Session, p: Principal, terms: list[Term], rows: list, content_reason: bool) -> list[Hit]:  # type: ignore[type-arg]
    if not rows:
        return []
    ids = [r[0] for r in rows]
    docs = {d.id: d for d in session.scalars(select(Dokument).where(Dokument.id.in_(ids)))}
    case_ids = {d.vorgang_id for d in docs.values() if d.vorgang_id}
    cases = {v.id: v for v in session.scalars(select(Vorgang).where(Vorgang.id.in_(case_ids))
                                              .options(selectinload(Vorgang.akte)))} if case_ids else {}
    wanted = {stem(t) for term in terms for t in term.tokens if t not in STOP_WORDS}
    out: list[Hit] = []
    for did, doc_date, score in rows:
        d = docs[did]
        v = cases.get(d.vorgang_id) if d.vorgang_id else None
        withheld = content_needs_reason(p, v) and not content_reason
        out.append(Hit(
            dokument_id=d.id, title=d.title, kind=d.kind, date=doc_date, case_id=d.vorgang_id,
            aktenzeichen=v.aktenzeichen if v else None, service_key=v.service_key if v else None,
            service_name=v.service_name if v else None, department=v.department if v else None, sender=d.sender,
            score=float(score) if score is not None else None, title_highlight=highlight_all(d.title, wanted),
            highlights=[] if withheld else snippets(d.text or "", wanted), content_withheld=withheld))
    return out


# --------------------------------------------------------------------------- highlights


def _matches(token: str, wanted: set[str]) -> bool:
    t = token.lower()
    if t in STOP_WORDS:
        return False
    if stem(t) in wanted:
        return True
    return any(stem(p) in wanted for p in compounds.parts(t))


def _marked(s: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in spans:
        out.append(html.escape(s[pos:a]))
        out.append(f"<mark>{html.escape(s[a:b])}</mark>")
        pos = b
    out.append(html.escape(s[pos:]))
    return "".join(out)


def highlight_all(s: str, wanted: set[str]) -> str:
    """``s`` HTML-escaped, every matching word wrapped in ``<mark>``."""
    return _marked(s, [(m.start(), m.end()) for m in _TOKEN.finditer(s) if _matches(m.group(0), wanted)])


def snippets(s: str, wanted: set[str], *, size: int = SNIPPET_TOKENS, most: int = MAX_SNIPPETS) -> list[str]:
    """Up to ``most`` short passages of ``s`` around matches, matches marked, best first."""
    s = s[:MAX_TEXT_CHARS]
    toks = list(_TOKEN.finditer(s))
    hit_idx = [i for i, m in enumerate(toks) if _matches(m.group(0), wanted)]
    if not hit_idx:
        return []
    windows: list[tuple[int, int, int]] = []  # (-distinct terms, start token, end token)
    used_until = -1
    for i in hit_idx:
        if i <= used_until:
            continue
        start = max(0, i - size // 3)
        end = min(len(toks), start + size)
        inside = [j for j in hit_idx if start <= j < end]
        distinct = len({stem(toks[j].group(0).lower()) for j in inside})
        windows.append((-distinct, start, end))
        used_until = end - 1
    windows.sort()
    out = []
    for _, start, end in windows[:most]:
        a = toks[start].start()
        b = toks[end - 1].end()
        spans = [(toks[j].start() - a, toks[j].end() - a) for j in hit_idx if start <= j < end]
        piece = _marked(s[a:b], spans)
        prefix = "… " if start > 0 else ""
        suffix = " …" if end < len(toks) else ""
        out.append(" ".join(f"{prefix}{piece}{suffix}".split()))
    return out
