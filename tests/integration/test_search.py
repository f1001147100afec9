"""Full-text search (GET /v1/search): documents filed through eakte.records are found by word,
compound part, phrase and metadata, filtered, highlighted, and only by those allowed to see
them. Runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import io
import random
import string
from dataclasses import dataclass

import pytest
from reportlab.pdfgen import canvas

from eakte import records
from eakte.blobstore import BlobRef
from eakte.db import transaction
from eakte.models import Akte, MailItem
from tests.integration.helpers import MELDE, application, wait_for_case

def _tag() -> str:
    """A random marker made of letters only: a hex tag like "7e0e5a" is read by PostgreSQL's
    parser as the number 7e0 followed by "e5a", which would make the searches flaky."""
    return "".join(random.choice(string.ascii_lowercase) for _ in range(8))


REF = BlobRef("unused", "sha256/none", "0" * 64, 1)  # search reads rows only; no object needed


@dataclass
class Filed:
    tag: str
    bau_case: str
    bau_doc: str
    standes_case: str
    secret_case: str
    letter_doc: str


def _open(s, *, tag: str, name: str, service_key: str, department: str, integrator: str) -> str:  # type: ignore[no-untyped-def]
    case_id = f"search-{tag}-{name}"
    v = records.open_case(s, case_id=case_id, file_plan="63.10", year=2026, title=name, service_key=service_key,
                          service_name=name, integrator=integrator, applicant={"id": f"{tag}-{name}"}, form={},
                          fingerprint=case_id, fee_cents=0, retention_years=10, status="awaiting_decision")
    records.record_event(s, case_id=case_id, key=f"{case_id}:routed", step="decision", status="awaiting_decision",
                         message="routed", fields={"department": department})
    return v.id


def _file(s, case_id: str | None, *, key: str, kind: str, title: str, text: str, by: str = "clerk",  # type: ignore[no-untyped-def]
          received: dt.datetime | None = None, public: bool = False) -> str:
    akte_id = records.get_case(s, case_id).akte_id if case_id else None
    doc = records.file_document(s, key=key, ref=REF, kind=kind, title=title, filename=f"{key}.pdf",
                                content_type="application/pdf", created_by=by, channel="api", akte_id=akte_id,
                                vorgang_id=case_id, text=text, public=public)
    if received is not None:
        doc.received_at = received
        from eakte import search

        search.index_document(s, doc)
    return doc.id


@pytest.fixture(scope="module")
def filed(stack) -> Filed:  # type: ignore[no-untyped-def]
    tag = _tag()
    with transaction(stack.sessions()) as s:
        bau = _open(s, tag=tag, name="Baugenehmigung", service_key="99108008001000", department="bauamt",
                    integrator=f"portal-{tag}")
        bau_doc = _file(s, bau, key=f"{tag}-bau-1", kind="Bescheid", title="Bescheid über die Baugenehmigung",
                        text=f"Sehr geehrte Frau Öztürk-{tag}, die Baugenehmigung für das Grundstück Lindenallee 7 "
                             "wird erteilt. Die Gebühr beträgt 350 Euro.",
                        received=dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC), public=True)
        _file(s, bau, key=f"{tag}-bau-2", kind="Nachweis", title="Lageplan",
              text=f"Lageplan Flurstück 12/4, Kampfmittelräumdienst-{tag} beteiligt.",
              received=dt.datetime(2025, 6, 2, 11, 0, tzinfo=dt.UTC))
        standes = _open(s, tag=tag, name="Geburtsurkunde", service_key="99006003001000", department="standesamt",
                        integrator=f"portal-{tag}")
        _file(s, standes, key=f"{tag}-geb-1", kind="Urkunde", title="Geburtsurkunde",
              text=f"Geburtsurkunde für Max Öztürk-{tag}, geboren in Musterstadt. Genehmigung der Namensführung.",
              received=dt.datetime(2025, 4, 1, 8, 0, tzinfo=dt.UTC))
        secret = _open(s, tag=tag, name="Adoption", service_key="99006003001000", department="standesamt",
                       integrator=f"portal-other-{tag}")
        s.get(Akte, records.get_case(s, secret).akte_id).confidential = True
        s.get(Akte, records.get_case(s, secret).akte_id).confidential_roles = ["adoptionsstelle"]
        _file(s, secret, key=f"{tag}-adopt-1", kind="Vermerk", title="Vermerk Adoption",
              text=f"Vertraulich: Adoptionsvermittlung Öztürk-{tag}.")
        letter = _file(s, None, key=f"{tag}-letter", kind="Scan", title="Posteingang brief.pdf",
                       text=f"Widerspruch gegen den Gebührenbescheid, Öztürk-{tag}")
        s.add(MailItem(id=f"mail-{tag}", channel="post", filename="brief.pdf", content_type="application/pdf",
                       sha256="0" * 64, size=1, dokument_id=letter, status="triage", submitted_by="post"))
    return Filed(tag, bau, bau_doc, standes, secret, letter)


async def _search(stack, headers: dict[str, str], **params) -> dict:  # type: ignore[no-untyped-def]
    async with stack.client() as http:
        r = await http.get("/v1/search", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(body: dict) -> set[str]:  # type: ignore[type-arg]
    return {h["document_id"] for h in body["hits"]}


async def test_a_filed_document_is_found_by_a_word_of_its_text(stack, filed) -> None:
    clerk = stack.token("clerk-bau", "clerk", "bauamt")
    body = await _search(stack, clerk, q=f"Lindenallee Öztürk-{filed.tag}")
    assert _ids(body) == {filed.bau_doc}
    hit = body["hits"][0]
    assert hit["aktenzeichen"].startswith("63.10-2026-") and hit["department"] == "bauamt"
    assert hit["case_id"] == filed.bau_case and hit["kind"] == "Bescheid"


async def test_a_compound_part_finds_the_compound_and_is_highlighted_in_it(stack, filed) -> None:
    clerk = stack.token("clerk-bau", "clerk", "bauamt")
    body = await _search(stack, clerk, q=f"Genehmigung {filed.tag}")
    assert filed.bau_doc in _ids(body)
    hit = next(h for h in body["hits"] if h["document_id"] == filed.bau_doc)
    assert "<mark>Baugenehmigung</mark>" in hit["title_highlight"]
    assert any("<mark>Baugenehmigung</mark>" in x for x in hit["highlights"])


async def test_inflected_forms_match_and_phrases_must_be_adjacent(stack, filed) -> None:
    clerk = stack.token("clerk-bau", "clerk", "bauamt")
    assert filed.bau_doc in _ids(await _search(stack, clerk, q=f'Gebühren "{filed.tag}"'))
    assert filed.bau_doc in _ids(await _search(stack, clerk, q=f'"Gebühr beträgt" {filed.tag}'))
    assert filed.bau_doc not in _ids(await _search(stack, clerk, q=f'"beträgt Gebühr" {filed.tag}'))


async def test_metadata_is_searchable_aktenzeichen_and_department(stack, filed) -> None:
    clerk = stack.token("clerk-bau", "clerk", "bauamt")
    az = (await _search(stack, clerk, q=f"Lindenallee {filed.tag}"))["hits"][0]["aktenzeichen"]
    assert filed.bau_doc in _ids(await _search(stack, clerk, q=az))


async def test_filters_by_department_kind_service_and_date(stack, filed) -> None:
    admin = stack.token("admin-search", "admin")
    q = f"Öztürk-{filed.tag}"
    every = await _search(stack, admin, q=q)
    assert len(every["hits"]) == 4  # both cases' texts, the confidential note, the letter
    assert {h["department"] for h in (await _search(stack, admin, q=q, department="standesamt"))["hits"]} \
        == {"standesamt"}
    assert _ids(await _search(stack, admin, q=q, kind="Bescheid")) == {filed.bau_doc}
    by_service = await _search(stack, admin, q=q, service="99108008001000")
    assert {h["service_key"] for h in by_service["hits"]} == {"99108008001000"}
    assert len(by_service["hits"]) == 1  # the Lageplan says Kampfmittelräumdienst-tag, not Öztürk
    dated = await _search(stack, admin, q=q, **{"from": "2025-03-14", "to": "2025-03-31"})
    assert _ids(dated) == {filed.bau_doc}
    assert (await _search(stack, admin, q=q, **{"from": "2025-03-15", "to": "2025-03-31"}))["hits"] == []


async def test_a_clerk_of_another_department_finds_nothing_of_it(stack, filed) -> None:
    other = stack.token("clerk-sozial", "clerk", "sozialamt")
    assert (await _search(stack, other, q=f"Öztürk-{filed.tag}"))["hits"] == []


async def test_an_integrator_finds_only_public_documents_of_its_own_cases(stack, filed) -> None:
    own = stack.token(f"portal-{filed.tag}", "integrator")
    assert _ids(await _search(stack, own, q=f"Öztürk-{filed.tag}")) == {filed.bau_doc}
    stranger = stack.token("portal-stranger", "integrator")
    assert (await _search(stack, stranger, q=f"Öztürk-{filed.tag}"))["hits"] == []


async def test_a_confidential_akte_is_hidden_from_an_uncleared_clerk(stack, filed) -> None:
    q = f"Adoptionsvermittlung {filed.tag}"
    uncleared = stack.token("clerk-sta", "clerk", "standesamt")
    assert (await _search(stack, uncleared, q=q))["hits"] == []
    async with stack.client() as http:
        from api.auth import mint_token

        token = mint_token(stack.settings, "clerk-sta-adopt", ["clerk", "adoptionsstelle"], ["standesamt"])
        r = await http.get("/v1/search", params={"q": q}, headers={"Authorization": f"Bearer {token}"})
    assert [h["case_id"] for h in r.json()["hits"]] == [filed.secret_case]


async def test_letters_in_the_mailroom_are_found_only_by_mailroom_and_admin(stack, filed) -> None:
    q = f"Gebührenbescheid {filed.tag}"
    assert _ids(await _search(stack, stack.token("post-1", "mailroom"), q=q)) == {filed.letter_doc}
    assert (await _search(stack, stack.token("clerk-bau", "clerk", "bauamt"), q=q))["hits"] == []


async def test_admins_see_hits_but_snippets_only_with_a_reason(stack, filed) -> None:
    admin = stack.token("admin-search", "admin")
    hit = (await _search(stack, admin, q=f"Lindenallee {filed.tag}"))["hits"][0]
    assert hit["content_withheld"] is True and hit["highlights"] == []
    hit = (await _search(stack, admin, q=f"Lindenallee {filed.tag}", reason="Prüfung einer Beschwerde 42"))["hits"][0]
    assert hit["content_withheld"] is False and hit["highlights"]


@pytest.mark.parametrize("q", ['"', "die und der", "(*)&|!", "<->", "-:"])
async def test_queries_without_searchable_words_are_422(stack, q: str) -> None:
    async with stack.client() as http:
        r = await http.get("/v1/search", params={"q": q}, headers=stack.token("clerk-bau", "clerk", "bauamt"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("q", ['Bau* OR NOT "x', "a'b; DROP TABLE dokument; --", "NEAR(a b)", "x:y AND (z",
                               "bau & !amt | <2>", "\\\\'\""])
async def test_query_syntax_is_treated_as_literal_words(stack, q: str) -> None:
    async with stack.client() as http:
        r = await http.get("/v1/search", params={"q": q}, headers=stack.token("clerk-bau", "clerk", "bauamt"))
    assert r.status_code in (200, 422), r.text


async def test_an_empty_or_missing_query_is_422(stack) -> None:
    clerk = stack.token("clerk-bau", "clerk", "bauamt")
    async with stack.client() as http:
        assert (await http.get("/v1/search", params={"q": ""}, headers=clerk)).status_code == 422
        assert (await http.get("/v1/search", headers=clerk)).status_code == 422
        bad = await http.get("/v1/search", params={"q": "x", "from": "2025-02-30"}, headers=clerk)
        assert bad.status_code == 422
        assert (await http.get("/v1/search", params={"q": "x"})).status_code == 401


def _pdf(text: str) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, text)
    c.showPage()
    c.save()
    return buf.getvalue()


async def test_a_pdf_uploaded_to_a_case_is_found_by_its_text(stack) -> None:
    portal = stack.token("portal-search", "integrator")
    word = f"Kleingartenanlage{_tag()}"
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal, data={"kind": "Nachweis"},
                             files={"file": ("lageplan.pdf", _pdf(f"Lageplan der Parzelle in der {word}"),
                                             "application/pdf")})
        assert up.status_code == 201, up.text
    clerk = stack.token("clerk-bb", "clerk", "buergerbuero")
    body = await _search(stack, clerk, q=word)
    assert _ids(body) == {up.json()["document_id"]}
    assert body["hits"][0]["case_id"] == case_id
    assert any(f"<mark>{word}</mark>" in x for x in body["hits"][0]["highlights"])
