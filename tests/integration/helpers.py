"""Small helpers the integration tests share."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

MELDE = "99115005012000"        # Meldebescheinigung: decision, fee 10,00 EUR, certificate
GEBURT = "99006003001000"       # Geburtsurkunde (Standesamt)
HUND = "99021005001000"         # Hundeanmeldung: no decision, no fee, certificate
MAENGEL = "99107010001000"      # Mängelmeldung: no fee, no certificate


def _small_pdf() -> bytes:
    """A small valid one-page PDF with a text layer (uploads are opened and checked)."""
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    c.drawString(72, 720, "Nachweis der Hundehaftpflichtversicherung")
    c.showPage()
    c.save()
    return buf.getvalue()


PDF = _small_pdf()


def application(service_key: str | None = MELDE, name: str = "Erika Mustermann", **form: str) -> dict[str, Any]:
    return {
        "service_key": service_key,
        "applicant": {"name": name, "address_lines": ["Hauptstraße 5", "12345 Musterstadt"],
                      "email": "erika@example.org", "id": "bund-id-" + uuid.uuid4().hex[:8]},
        "form": form or {"Zweck": "Vorlage beim Arbeitgeber"},
    }


async def _poll(client: httpx.AsyncClient, url: str, headers: dict[str, str], wanted: tuple[str, ...],
                timeout: float, interval: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(url, headers=headers)
        if r.status_code == 200:
            last = r.json()
            if last["status"] in wanted:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} did not reach {wanted}; last: {last}")


async def wait_for_case(client: httpx.AsyncClient, case_id: str, headers: dict[str, str], *,
                        status: str | tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, str) else status
    return await _poll(client, f"/v1/cases/{case_id}", headers, wanted, timeout, 0.2, f"case {case_id}")


async def wait_for_mail(client: httpx.AsyncClient, item_id: str, headers: dict[str, str], *,
                        status: tuple[str, ...] = ("filed", "triage", "failed"), timeout: float = 240) -> dict[str, Any]:
    return await _poll(client, f"/v1/mailroom/items/{item_id}", headers, status, timeout, 0.5, f"mail item {item_id}")


async def pay(client: httpx.AsyncClient, payment_url: str, action: str = "pay") -> None:
    page = await client.get(payment_url)
    assert page.status_code == 200, page.text
    r = await client.post(payment_url, data={"action": action})
    assert r.status_code == 200, r.text


async def approve_and_pay(client: httpx.AsyncClient, case_id: str, clerk: dict[str, str],
                          portal: dict[str, str]) -> dict[str, Any]:
    """The clerk approves a case as soon as it waits for the decision, the citizen pays the fee:
    the case as the portal sees it once completed."""
    await wait_for_case(client, case_id, portal, status="awaiting_decision")
    d = await client.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
    assert d.status_code == 200, d.text
    await pay(client, d.json()["payment_url"])
    return await wait_for_case(client, case_id, portal, status="completed")
