"""The API (uvicorn) and the worker embedded in one process, each in its own thread with
its own event loop: used by the integration tests and the benchmarks."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from aktenlauf.settings import Settings


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
        if self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=60)
        if self.error is not None:  # the worker died while the stack ran: say why
            raise RuntimeError(f"the embedded worker failed: {self.error!r}") from self.error
