"""Open data statistics: public, per service and month, small counts suppressed.

A stack of its own (own database), so the counts are exactly what this module creates:
six Meldebescheinigungen waiting for a decision (one of them got a paper letter, so one case
was not handled fully online), five Hundeanmeldungen completed, two Mängelmeldungen.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from reportlab.pdfgen.canvas import Canvas

from api.routers import opendata
from tests.conftest import Stack, fresh_database, running_stack
from tests.integration.helpers import HUND, MAENGEL, MELDE, application, wait_for_case, wait_for_mail


@pytest.fixture(scope="module")
def od_stack(database_url: str, temporal_server, s3_server,  # type: ignore[no-untyped-def]
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (fresh_database(database_url, tmp_path_factory) as url,
          running_stack(url, temporal_server, s3_server) as st):
        yield st


def _letter(aktenzeichen: str) -> bytes:
    buf = io.BytesIO()
    c = Canvas(buf)
    for i, line in enumerate(["An die Stadt Musterstadt", f"Ihr Zeichen: {aktenzeichen}",
                              "anbei die angeforderte Kopie meines Ausweises."]):
        c.drawString(72, 720 - i * 20, line)
    c.save()
    return buf.getvalue()


@pytest.fixture(scope="module")
async def cases(od_stack: Stack) -> dict[str, list[str]]:
    st = od_stack
    portal = st.token("portal-od", "integrator")
    made: dict[str, list[str]] = {MELDE: [], HUND: [], MAENGEL: []}
    async with st.client() as http:
        for service, n in ((MELDE, 6), (HUND, 5), (MAENGEL, 2)):
            for _ in range(n):
                r = await http.post("/v1/cases", json=application(service), headers=portal)
                assert r.status_code == 201, r.text
                made[service].append(r.json()["case_id"])
        for case_id in made[HUND]:
            await wait_for_case(http, case_id, portal, status="completed")
        waiting = [await wait_for_case(http, c, portal, status="awaiting_decision") for c in made[MELDE]]
        # a paper letter for the first Meldebescheinigung: that case is not handled fully online
        mailroom = st.token("post-od", "mailroom")
        r = await http.post("/v1/mailroom/scans", headers=mailroom,
                            files=[("files", ("brief.pdf", _letter(waiting[0]["aktenzeichen"]), "application/pdf"))])
        assert r.status_code == 202, r.text
        item = await wait_for_mail(http, r.json()["items"][0]["id"], mailroom)
        assert item["status"] == "filed" and item["case_id"] == made[MELDE][0], item
    opendata.CACHE.clear()
    return made


def _month() -> str:
    return dt.datetime.now(ZoneInfo("Europe/Berlin")).strftime("%Y-%m")


def _rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["service_key"]: r for r in body["rows"] if r["month"] == _month()}


async def test_statistics_are_public_per_service_and_month(od_stack: Stack, cases: dict[str, list[str]]) -> None:
    async with od_stack.client() as http:
        r = await http.get("/v1/opendata/statistics")
        assert r.status_code == 200, r.text
        body = r.json()
    rows = _rows(body)
    hund = rows[HUND]
    assert hund["received"] == 5 and hund["closed"] == 5
    assert hund["median_processing_days"] is not None and 0 <= hund["median_processing_days"] < 1
    assert hund["online_share_percent"] == 100.0 and hund["suppressed"] == []
    assert hund["service_name"] == "Hundeanmeldung"
    assert body["min_count"] == 5 and "suppressed" in body["notes"][0]


async def test_small_counts_and_what_derives_from_them_are_suppressed(od_stack: Stack,
                                                                     cases: dict[str, list[str]]) -> None:
    async with od_stack.client() as http:
        rows = _rows((await http.get("/v1/opendata/statistics", params={"format": "json"})).json())
    maengel = rows[MAENGEL]  # two cases: nothing about them is shown
    assert maengel["received"] is None and maengel["online_share_percent"] is None
    assert "received" in maengel["suppressed"] and "online_share_percent" in maengel["suppressed"]
    melde = rows[MELDE]  # six received, but only one of them by paper: the share would point at that one
    assert melde["received"] == 6 and melde["closed"] == 0 and melde["median_processing_days"] is None
    assert melde["online_share_percent"] is None and melde["suppressed"] == ["online_share_percent"]


async def test_csv_has_a_header_empty_suppressed_cells_and_is_a_download(od_stack: Stack,
                                                                        cases: dict[str, list[str]]) -> None:
    async with od_stack.client() as http:
        r = await http.get("/v1/opendata/statistics", params={"format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment;") and ".csv" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == ["service_key", "service_name", "month", "received", "closed", "median_processing_days",
                              "online_share_percent", "note"]
    by = {row["service_key"]: row for row in table if row["month"] == _month()}
    assert by[MAENGEL]["received"] == "" and "suppressed" in by[MAENGEL]["note"]
    assert by[HUND]["received"] == "5" and by[HUND]["online_share_percent"] == "100.0" and by[HUND]["note"] == ""


async def test_the_figures_are_cached(od_stack: Stack, cases: dict[str, list[str]]) -> None:
    async with od_stack.client() as http:
        before = _rows((await http.get("/v1/opendata/statistics")).json())[HUND]["received"]
        portal = od_stack.token("portal-od", "integrator")
        r = await http.post("/v1/cases", json=application(HUND), headers=portal)
        await wait_for_case(http, r.json()["case_id"], portal, status="completed")
        assert _rows((await http.get("/v1/opendata/statistics")).json())[HUND]["received"] == before
        opendata.CACHE.clear()
        assert _rows((await http.get("/v1/opendata/statistics")).json())[HUND]["received"] == before + 1
        bad = await http.get("/v1/opendata/statistics", params={"format": "xml"})
        assert bad.status_code == 422
