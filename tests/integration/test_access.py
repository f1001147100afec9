"""Department isolation and role checks: nobody sees or decides what is not theirs."""

from __future__ import annotations

import pytest

from tests.integration.helpers import GEBURT, MELDE, application, wait_for_case


@pytest.fixture(scope="module")
async def waiting_case(stack) -> str:
    portal = stack.token("portal-acl", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        assert r.status_code == 201, r.text
        await wait_for_case(http, r.json()["case_id"], portal, status="awaiting_decision")
        return r.json()["case_id"]


async def test_clerk_of_another_department_neither_sees_nor_decides_the_case(stack, waiting_case) -> None:
    other = stack.token("clerk-sta", "clerk", "standesamt")
    async with stack.client() as http:
        assert (await http.get(f"/v1/cases/{waiting_case}", headers=other)).status_code == 404
        r = await http.post(f"/v1/cases/{waiting_case}/decision", json={"decision": "approve"}, headers=other)
        assert r.status_code == 404
        tasks = (await http.get("/v1/tasks", headers=other)).json()
        assert waiting_case not in [t["case_id"] for t in tasks]


async def test_clerk_of_the_department_sees_the_case_in_the_inbox(stack, waiting_case) -> None:
    own = stack.token("clerk-bb2", "clerk", "buergerbuero")
    async with stack.client() as http:
        assert (await http.get(f"/v1/cases/{waiting_case}", headers=own)).status_code == 200
        tasks = (await http.get("/v1/tasks", params={"service_key": MELDE}, headers=own)).json()
        assert waiting_case in [t["case_id"] for t in tasks]
        assert all(t["department"] == "buergerbuero" for t in tasks)


async def test_integrator_never_decides_and_never_sees_other_integrators_cases(stack, waiting_case) -> None:
    async with stack.client() as http:
        owner = stack.token("portal-acl", "integrator")
        r = await http.post(f"/v1/cases/{waiting_case}/decision", json={"decision": "approve"}, headers=owner)
        assert r.status_code == 403
        stranger = stack.token("portal-other", "integrator")
        assert (await http.get(f"/v1/cases/{waiting_case}", headers=stranger)).status_code == 404
        docs = (await http.get(f"/v1/cases/{waiting_case}", headers=owner)).json()["documents"]
        assert (await http.get(docs[0]["download_url"], headers=stranger)).status_code == 404


async def test_a_clerk_cannot_start_cases_and_the_mailroom_cannot_list_tasks(stack) -> None:
    async with stack.client() as http:
        clerk = stack.token("clerk-bb", "clerk", "buergerbuero")
        assert (await http.post("/v1/cases", json=application(GEBURT), headers=clerk)).status_code == 403
        assert (await http.get("/v1/tasks", headers=stack.token("post-1", "mailroom"))).status_code == 403
        assert (await http.get("/v1/admin/cases", headers=clerk)).status_code == 403


@pytest.mark.parametrize("header", [
    None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz",
    # alg=none token with integrator role
    "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4Iiwicm9sZXMiOlsiaW50ZWdyYXRvciJdfQ.",
])
async def test_missing_or_forged_tokens_are_refused_with_401(stack, header) -> None:
    async with stack.client() as http:
        r = await http.get("/v1/tasks", headers={"Authorization": header} if header else {})
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_expired_and_wrongly_signed_tokens_are_refused(stack) -> None:
    import jwt

    from api.auth import mint_token

    expired = mint_token(stack.settings, "x", ["admin"], ttl_seconds=-10)
    forged = jwt.encode({"sub": "x", "roles": ["admin"], "iss": "aktenlauf", "aud": "aktenlauf-api",
                         "iat": 1, "exp": 4_000_000_000}, "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256")
    async with stack.client() as http:
        for token in (expired, forged):
            r = await http.get("/v1/admin/cases", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401


async def test_admin_lists_cases_by_search_attributes_and_reads_the_history(stack, waiting_case) -> None:
    import asyncio

    admin = stack.token("admin-1", "admin")
    async with stack.client() as http:
        rows: list[dict] = []
        for _ in range(50):  # visibility is eventually consistent
            rows = (await http.get("/v1/admin/cases", params={"status": "awaiting_decision",
                                                               "department": "buergerbuero"}, headers=admin)).json()
            if waiting_case in [r["case_id"] for r in rows]:
                break
            await asyncio.sleep(0.2)
        assert waiting_case in [r["case_id"] for r in rows]
        assert all(r["status"] == "awaiting_decision" for r in rows)
        detail = (await http.get(f"/v1/admin/cases/{waiting_case}", headers=admin)).json()
        types = [e["type"] for e in detail["history"]]
        assert types[0] == "WORKFLOW_EXECUTION_STARTED"
        assert "ACTIVITY_TASK_COMPLETED" in types
        assert detail["workflow"]["status"] == "RUNNING"
        bad = await http.get("/v1/admin/cases", params={"status": "x' OR 1=1"}, headers=admin)
        assert bad.status_code == 422
