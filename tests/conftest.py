"""Shared fixtures. Real servers only: Temporal dev server, SeaweedFS, SQLite/PostgreSQL
(tests/servers.py starts them). The API is served by uvicorn on a loopback port and the
worker runs in a background thread, so HTTP callbacks (payment provider → webhook) are real.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from aktenlauf.settings import Settings
from tests.servers import *  # noqa: F403 - fixtures: temporal_server, s3_server, database_url

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "scans"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    def __init__(self, app, port: int) -> None:  # type: ignore[no-untyped-def]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("API server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class WorkerThread:
    """The real worker (worker.run_worker) in a thread with its own event loop."""

    def __init__(self, settings: Settings, queues: tuple[str, ...] = ("cases", "ocr")) -> None:
        self.settings = settings
        self.queues = queues
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self.ready = threading.Event()

    def _run(self) -> None:
        import worker

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            self.ready.set()
            await worker.run_worker(self.settings, self.queues, stop=self.stop_event)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self.ready.set()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(30)

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=60)


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
        from eakte.db import make_engine, make_session_factory

        return make_session_factory(make_engine(self.settings.database_url))

    def store(self):  # type: ignore[no-untyped-def]
        from eakte.blobstore import BlobStore

        s = self.settings
        return BlobStore(s.s3_endpoint, s.s3_access_key, s.s3_secret_key, s.s3_bucket)

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
    port = free_port()
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
