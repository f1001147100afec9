"""Faults of the backing services: the API answers 503 with Retry-After instead of 500, and
a case caught by an S3 outage carries on when the object store is back — with exactly one
Akte, one certificate and one dispatch.

These tests run on a stack of their own (own database, own SeaweedFS that they stop and
start again), so no other test sees the outage.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from aktenlauf import devstack
from aktenlauf.embedded import ApiServer
from eakte.models import Akte, Dispatch, Dokument, Vorgang
from tests.conftest import Stack, fresh_database, running_stack, stack_settings
from tests.integration.helpers import HUND, MELDE, PDF, application, wait_for_case
from tests.servers import RestartableS3



@pytest.fixture(scope="module")
def s3_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableS3]:
    o = RestartableS3(tmp_path_factory.mktemp("weed-outage"), devstack.free_port())
    o.start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture(scope="module")
def fault_stack(database_url: str, temporal_server, s3_outage: RestartableS3,  # type: ignore[no-untyped-def]
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (fresh_database(database_url, tmp_path_factory) as url,
          running_stack(url, temporal_server, s3_outage, register_timeout_s=3.0) as st):
        yield st


async def submit(http: httpx.AsyncClient, body: dict, headers: dict[str, str], attempts: int = 30) -> httpx.Response:
    """POST /v1/cases as a well-behaved integrator: repeat with the same Idempotency-Key on 503."""
    r = await http.post("/v1/cases", json=body, headers=headers)
    for _ in range(attempts):
        if r.status_code != 503:
            break
        await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 5)
        r = await http.post("/v1/cases", json=body, headers=headers)
    return r


async def test_an_s3_outage_gives_503_and_the_case_finishes_once_s3_is_back(fault_stack, s3_outage) -> None:
    portal = fault_stack.token("portal-fault", "integrator")
    async with fault_stack.client() as http:
        r = await submit(http, application(MELDE), {**portal, "Idempotency-Key": f"fault-s3-0-{uuid.uuid4().hex}"})
        assert r.status_code == 201, r.text
        waiting = r.json()["case_id"]
        await wait_for_case(http, waiting, portal, status="awaiting_decision")
        s3_outage.stop()
        try:
            # an upload cannot be stored: 503, retry later, and nothing half-stored
            r = await http.post(f"/v1/cases/{waiting}/documents", headers=portal,
                                files={"file": ("nachweis.pdf", io.BytesIO(PDF), "application/pdf")})
            assert r.status_code == 503 and r.headers["retry-after"]
            assert r.headers["content-type"].startswith("application/problem+json")
            # a new case is accepted but cannot be registered while its application cannot be stored
            body, key = application(HUND, name="Olga Ausfall"), {"Idempotency-Key": f"fault-s3-1-{uuid.uuid4().hex}"}
            r = await http.post("/v1/cases", json=body, headers={**portal, **key})
            assert r.status_code == 503 and r.headers["retry-after"]
            assert "Idempotency-Key" in r.json()["detail"]
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["s3"].startswith("unavailable")
        finally:
            s3_outage.start()
        # the same request again: the same case, which has carried on by itself meanwhile
        r = await submit(http, body, {**portal, **key})
        assert r.status_code == 201, r.text
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed", timeout=90)
    with fault_stack.sessions()() as s:  # (keys are unique per run: the backends share one Temporal server)
        case_id = case["case_id"]
        assert s.scalar(select(func.count()).select_from(Vorgang).where(Vorgang.integrator == "portal-fault",
                                                                      Vorgang.service_key == HUND)) == 1
        assert s.scalar(select(func.count()).select_from(Akte).join(Vorgang, Vorgang.akte_id == Akte.id)
                        .where(Vorgang.id == case_id)) == 1
        assert s.scalar(select(func.count()).select_from(Dokument).where(Dokument.vorgang_id == case_id,
                                                                        Dokument.kind == "Urkunde")) == 1
        assert s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)) == 1
        assert s.scalar(select(func.count()).select_from(Dokument).where(Dokument.vorgang_id == waiting,
                                                                        Dokument.kind == "Nachweis")) == 0


async def test_without_a_database_or_temporal_the_api_answers_503_not_500(temporal_server, s3_server) -> None:
    from api.app import create_app

    port = devstack.free_port()
    closed = devstack.free_port()  # nothing listens here
    settings = stack_settings(f"postgresql+psycopg://postgres@127.0.0.1:{closed}/none", temporal_server, s3_server,
                              port, temporal_address=f"127.0.0.1:{devstack.free_port()}")
    api = ApiServer(create_app(settings), port)
    api.start()
    try:
        from api.auth import mint_token

        clerk = {"Authorization": f"Bearer {mint_token(settings, 'c', ['clerk'], ['buergerbuero'])}"}
        portal = {"Authorization": f"Bearer {mint_token(settings, 'p', ['integrator'])}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for method, url, headers, kw in (
                ("GET", "/v1/tasks", clerk, {}),
                ("GET", "/v1/cases/case-0123", clerk, {}),
                ("GET", "/v1/search?q=Antrag", clerk, {}),
                ("POST", "/v1/cases", portal, {"json": application(HUND)}),
            ):
                r = await http.request(method, url, headers=headers, **kw)
                assert r.status_code == 503, (url, r.status_code, r.text)
                assert r.headers["retry-after"] and r.headers["content-type"].startswith("application/problem+json")
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
            assert ready.json()["checks"]["temporal"].startswith("unavailable")
    finally:
        api.stop()


@dataclass
class RestartableTemporal:
    """A Temporal dev server of our own, restartable on the same port and database file."""

    data_dir: Path
    port: int
    namespace: str = "default"
    server: devstack.TemporalDev | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.servers import SEARCH_ATTRIBUTES

        self.server = devstack.start_temporal_dev(self.data_dir, port=self.port, headless=True,
                                                  namespace=self.namespace, search_attributes=SEARCH_ATTRIBUTES,
                                                  log_file=self.data_dir / "temporal.log")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


async def test_a_temporal_restart_mid_case_loses_nothing(database_url, s3_server,  # type: ignore[no-untyped-def]
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.integration.helpers import pay

    temporal = RestartableTemporal(tmp_path_factory.mktemp("temporal-restart"), devstack.free_port())
    temporal.start()
    try:
        with (fresh_database(database_url, tmp_path_factory) as url,
              running_stack(url, temporal, s3_server, register_timeout_s=5.0) as st):
            portal = st.token("portal-restart", "integrator")
            clerk = st.token("clerk-restart", "clerk", "buergerbuero")
            async with st.client() as http:
                r = await submit(http, application(MELDE), {**portal, "Idempotency-Key": uuid.uuid4().hex})
                assert r.status_code == 201, r.text
                case_id = r.json()["case_id"]
                await wait_for_case(http, case_id, portal, status="awaiting_decision")
                temporal.stop()
                try:
                    # reads come from the eAkte and keep working; changes need the workflow: 503
                    assert (await http.get(f"/v1/cases/{case_id}", headers=clerk)).status_code == 200
                    r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
                    assert r.status_code == 503 and r.headers["retry-after"], r.text
                finally:
                    temporal.start()
                for _ in range(40):  # the clients reconnect by themselves
                    r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"},
                                        headers=clerk)
                    if r.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                assert r.status_code == 200, r.text
                await pay(http, r.json()["payment_url"])
                await wait_for_case(http, case_id, portal, status="completed", timeout=90)
            with st.sessions()() as s:
                assert s.scalar(select(func.count()).select_from(Dokument).where(
                    Dokument.vorgang_id == case_id, Dokument.kind == "Urkunde")) == 1
                assert s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)) == 1
    finally:
        temporal.stop()
