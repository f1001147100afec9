"""Full-text search over the eAkte's documents (text and metadata), limited to what the caller
may see, with highlighted snippets. Same behaviour on PostgreSQL and SQLite (eakte/search.py)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.auth import CurrentPrincipal
from api.context import Ctx
from eakte import records, search

router = APIRouter(prefix="/v1/search", tags=["search"])

Kind = Literal["Antrag", "Nachweis", "Scan", "Bescheid", "Urkunde", "Vermerk", "Schreiben"]


class SearchHitOut(BaseModel):
    document_id: str
    title: str
    kind: str
    date: dt.datetime = Field(description="when the document was received (else filed)")
    case_id: str | None = Field(description="null for a letter still in the mailroom")
    aktenzeichen: str | None
    service_key: str | None
    service_name: str | None
    department: str | None
    sender: str | None
    score: float | None = Field(description="relevance; null when ordered by date")
    title_highlight: str = Field(description="the title, HTML-escaped, matches in <mark>")
    highlights: list[str] = Field(description="passages of the text, HTML-escaped, matches in <mark>")
    content_withheld: bool = Field(description="admins/archivists: snippets only with a stated `reason`")
    document_url: str


class SearchResultsOut(BaseModel):
    query: str
    terms: list[str] = Field(description="the searched words and phrases after analysis (stop words dropped)")
    total: int
    total_is_lower_bound: bool = Field(description=f"more than {search.RANK_LIMIT} matches: `total` is a lower "
                                                   "bound and hits are ordered by date")
    order: Literal["relevance", "date"]
    limit: int
    offset: int
    hits: list[SearchHitOut]


@router.get("", response_model=SearchResultsOut,
            responses={422: {"description": "empty or malformed query, unknown filter value"}})
async def search_documents(
    ctx: Ctx, p: CurrentPrincipal,
    q: Annotated[str, Query(min_length=1, max_length=search.MAX_QUERY_CHARS,
                            description='words (all must occur) and "quoted phrases"; a compound part finds the '
                                        'compound ("Genehmigung" finds "Baugenehmigung")')],
    department: Annotated[str | None, Query(max_length=64)] = None,
    service: Annotated[str | None, Query(max_length=32, description="service key")] = None,
    kind: Kind | None = None,
    date_from: Annotated[dt.date | None, Query(alias="from", description="received on or after (YYYY-MM-DD)")] = None,
    date_to: Annotated[dt.date | None, Query(alias="to", description="received on or before (YYYY-MM-DD)")] = None,
    sort: Literal["relevance", "date"] = "relevance",
    limit: Annotated[int, Query(ge=1, le=search.MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    reason: Annotated[str | None, Query(min_length=10, max_length=500,
                                        description="admins and archivists: why you read content (audited); "
                                                    "without it, snippets are withheld")] = None,
) -> SearchResultsOut:
    """Search documents the caller may see. Every search is audited (who searched what)."""
    filters = search.SearchFilters(department=department, service_key=service, kind=kind,
                                   date_from=date_from, date_to=date_to)

    def run(s: Session) -> search.Results:
        res = search.search(s, p, q, filters, limit=limit, offset=offset, sort=sort,
                            content_reason=bool(reason and reason.strip()))
        records.audit(s, actor=p.sub, role=p.primary_role, action="document.search", target_type="search",
                      target_id="documents", reason=reason,
                      details={"q": q, "department": department, "service": service, "kind": kind,
                               "from": str(date_from) if date_from else None, "to": str(date_to) if date_to else None,
                               "documents": [h.dokument_id for h in res.hits if not h.content_withheld]})
        return res

    res = await ctx.db(run)
    return SearchResultsOut(
        query=q, terms=res.terms, total=res.total, total_is_lower_bound=res.total_is_lower_bound, order=res.order,
        limit=limit, offset=offset,
        hits=[SearchHitOut(document_id=h.dokument_id, title=h.title, kind=h.kind, date=h.date, case_id=h.case_id,
                           aktenzeichen=h.aktenzeichen, service_key=h.service_key, service_name=h.service_name,
                           department=h.department, sender=h.sender, score=h.score,
                           title_highlight=h.title_highlight, highlights=h.highlights,
                           content_withheld=h.content_withheld, document_url=f"/v1/documents/{h.dokument_id}")
              for h in res.hits])
