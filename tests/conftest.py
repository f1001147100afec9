"""Shared fixtures. Real servers only: Temporal dev server, SeaweedFS, SQLite/PostgreSQL
(tests/servers.py starts them). The API is served by uvicorn on a loopback port and the
worker runs in a background thread, so HTTP callbacks (payment provider → webhook) are real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aktenlauf.settings import Settings
from aktenlauf import devstack
from aktenlauf.embedded import ApiServer, WorkerThread
from aktenlauf.wiring import blob_store, session_factory
from tests.servers import *  # noqa: F403 - fixtures: temporal_server, s3_server, database_url

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "scans"


@dataclass
class Stack:
    settings: Settings
    base_url: str
    backend: str

    def token(self, sub: str, role: str, *departments: str) -> dict[str, str]:
        from api.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(self.settings, sub, [role], list(departments))}"}

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=60)

    def sessions(self):  # type: ignore[no-untyped-def]
        return session_factory(self.settings)

    def store(self):  # type: ignore[no-untyped-def]
        return blob_store(self.settings)

    async def temporal(self):  # type: ignore[no-untyped-def]
        from aktenlauf.temporal import connect

        return await connect(self.settings)


def stack_settings(database_url: str, temporal_server, s3_server, port: int, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    values = dict(
        environment="test", database_url=database_url, temporal_address=temporal_server.address,
        temporal_namespace=temporal_server.namespace, s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key, s3_secret_key=s3_server.secret_key, s3_bucket=f"eakte-{tag}",
        public_base_url=f"http://127.0.0.1:{port}", task_queue=f"cases-{tag}", ocr_task_queue=f"ocr-{tag}",
        log_format="console", max_upload_bytes=30 * 1024 * 1024,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def stack(database_url: str, temporal_server, s3_server, request) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    from api.app import create_app
    from eakte.db import migrate

    migrate(database_url)
    port = devstack.free_port()
    settings = stack_settings(database_url, temporal_server, s3_server, port)
    api = ApiServer(create_app(settings), port)
    api.start()
    worker = WorkerThread(settings)
    worker.start()
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    try:
        yield Stack(settings=settings, base_url=f"http://127.0.0.1:{port}", backend=backend)
    finally:
        worker.stop()
        api.stop()
