"""Shared fixtures. Real servers only: Temporal dev server, SeaweedFS, SQLite/PostgreSQL
(tests/servers.py starts them). The API is served by uvicorn on a loopback port and the
worker runs in a background thread, so HTTP callbacks (payment provider → webhook) are real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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

    def token_for(self, sub: str, roles: list[str], departments: list[str] | None = None) -> dict[str, str]:
        """A token with several roles (system roles and named roles for confidential Akten)."""
        from api.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(self.settings, sub, roles, departments or [])}"}

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
        payment_poll_seconds=3,  # a lost payment callback is found by the status poll within seconds
        disposal_schedule_id=f"aktenlauf-disposal-{tag}",  # stacks share one Temporal server
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def fresh_database(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new, empty database on the backend of ``database_url`` (a PostgreSQL one is dropped afterwards)."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'aktenlauf.db'}"
        return
    from tests.servers import _postgresql_url

    created = _postgresql_url()
    try:
        yield next(created)
    finally:
        created.close()  # drops the database


@contextmanager
def running_stack(database_url: str, temporal_server, s3_server, **overrides) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """A migrated database, the API on a loopback port and a worker thread, on the shared
    Temporal and S3 servers (own bucket, task queues and schedule id)."""
    from api.app import create_app
    from eakte.db import migrate

    migrate(database_url)
    port = devstack.free_port()
    settings = stack_settings(database_url, temporal_server, s3_server, port, **overrides)
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


@pytest.fixture(scope="session")
def stack(database_url: str, temporal_server, s3_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with running_stack(database_url, temporal_server, s3_server) as st:
        yield st
