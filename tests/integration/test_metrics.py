"""GET /metrics: Prometheus text format without authentication, aggregate figures only."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from aktenlauf.metrics import Metrics
from tests.integration.helpers import HUND, MELDE, PDF, application, wait_for_case, wait_for_mail


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for s in samples.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def _cases(stack) -> tuple[str, str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    portal = stack.token("portal-metrics", "integrator")
    mailroom = stack.token("post-metrics", "mailroom")
    async with stack.client() as http:
        done = (await http.post("/v1/cases", json=application(HUND), headers=portal)).json()["case_id"]
        waiting = (await http.post("/v1/cases", json=application(MELDE, name="Max Metrik"), headers=portal)).json()
        await wait_for_case(http, done, portal, status="completed")
        await wait_for_case(http, waiting["case_id"], portal, status="awaiting_decision")
        r = await http.post("/v1/mailroom/scans", headers=mailroom,
                            files=[("files", ("metrik.pdf", PDF + uuid.uuid4().hex.encode(), "application/pdf"))])
        assert r.status_code == 202, r.text
        await wait_for_mail(http, r.json()["items"][0]["id"], mailroom)
    return done, waiting["case_id"], waiting


async def test_metrics_are_prometheus_text_without_auth_and_without_personal_data(stack) -> None:
    done, waiting, created = await _cases(stack)
    async with stack.client() as http:
        deadline = time.monotonic() + 30
        while True:  # the answer is cached for a few seconds
            r = await http.get("/metrics")
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain")
            m = _samples(r.text)
            if (_value(m, "aktenlauf_cases_finished_total", service=HUND, status="completed") or 0) >= 1 \
                    and (_value(m, "aktenlauf_ocr_pages_total", channel="api") or 0) >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    assert (_value(m, "aktenlauf_cases_started_total", service=HUND) or 0) >= 1
    assert (_value(m, "aktenlauf_cases_started_total", service=MELDE) or 0) >= 1
    assert (_value(m, "aktenlauf_cases_finished_total", service=HUND, status="completed") or 0) >= 1
    assert (_value(m, "aktenlauf_cases_open", service=MELDE, status="awaiting_decision") or 0) >= 1
    assert (_value(m, "aktenlauf_ocr_pages_total", channel="api") or 0) >= 1
    assert _value(m, "aktenlauf_temporal_up") == 1
    for kind in ("workflow", "activity"):
        assert _value(m, "aktenlauf_task_queue_backlog", queue=stack.settings.task_queue, kind=kind) is not None
        assert _value(m, "aktenlauf_task_queue_backlog", queue=stack.settings.ocr_task_queue, kind=kind) is not None
    assert (_value(m, "aktenlauf_activity_scan_cases") or 0) >= 1  # the waiting case was described
    assert _value(m, "aktenlauf_activity_scan_truncated") == 0
    # aggregate figures only: no case id, Aktenzeichen or name
    for secret in (done, waiting, created["aktenzeichen"], "Max Metrik", "Mustermann"):
        assert secret not in r.text


async def test_step_durations_are_counted_once_per_transition(stack) -> None:
    await _cases(stack)
    metrics = Metrics(stack.sessions(), stack.settings.task_queue, stack.settings.ocr_task_queue, ttl_s=0, settle_s=0)
    client = await stack.temporal()
    first = _samples((await metrics.render(client)).decode())
    count = _value(first, "aktenlauf_case_step_duration_seconds_count", step="intake")
    assert count is not None and count >= 2  # both cases moved on from intake
    inf = _value(first, "aktenlauf_case_step_duration_seconds_bucket", step="intake", le="+Inf")
    assert inf == count
    # buckets are cumulative
    buckets = [s.value for s in first["aktenlauf_case_step_duration_seconds_bucket"] if s.labels["step"] == "intake"]
    assert buckets == sorted(buckets)
    # a second scrape reads only what is new: nothing is counted twice
    second = _samples((await metrics.render(client)).decode())
    assert _value(second, "aktenlauf_case_step_duration_seconds_count", step="intake") == count
