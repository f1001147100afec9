"""What the benchmarks share: a scratch database, the API as its own uvicorn process, the
settings passed to child processes."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aktenlauf import devstack  # noqa: E402
from aktenlauf.settings import Settings  # noqa: E402


@contextmanager
def scratch_database(url: str | None, tmp: Path, prefix: str) -> Iterator[str]:
    """A database of the benchmark's own: a new SQLite file in ``tmp``, or for a PostgreSQL
    server URL a new database on it, dropped afterwards (never the database the URL names)."""
    if not (url and url.startswith("postgresql")):
        yield url or f"sqlite:///{tmp / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    u = make_url(url)
    admin = psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                            dbname=u.database or "postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield str(u.set(database=name).render_as_string(hide_password=False))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (API, worker) read ``settings``."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    env["LOG_LEVEL"] = "WARNING"
    env["LOG_FORMAT"] = "json"
    return env


def start_api(settings: Settings, port: int, log_file: Path, *, workers: int = 1,
              command: list[str] | None = None) -> devstack.ManagedProcess:
    """The API as the production command runs it (uvicorn, factory), ready when this returns."""
    cmd = command or [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
                      "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    api = devstack.ManagedProcess(cmd, log_file=log_file, env=child_env(settings), cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            api.stop()
            raise SystemExit(f"the API did not become ready; see {log_file}")
        time.sleep(0.3)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


S3_KEY, S3_SECRET = "bench", "bench-secret-bench"


def start_servers(tmp: Path, procs: list[devstack.ManagedProcess]) -> tuple[devstack.TemporalDev, devstack.SeaweedS3]:
    """A Temporal dev server (with the search attributes) and SeaweedFS of the benchmark's own;
    their processes are appended to ``procs`` for the caller to stop."""
    from workflows.search import ALL as SEARCH_ATTRIBUTES

    temporal = devstack.start_temporal_dev(tmp / "temporal", port=devstack.free_port(), ui_port=None, headless=True,
                                           search_attributes=SEARCH_ATTRIBUTES, log_file=tmp / "temporal.log")
    procs.append(temporal.process)
    s3 = devstack.start_seaweedfs(tmp / "s3", s3_port=devstack.free_port(), access_key=S3_KEY, secret_key=S3_SECRET,
                                  log_file=tmp / "s3.log")
    procs.append(s3.process)
    return temporal, s3


def bench_settings(url: str, temporal: devstack.TemporalDev, s3: devstack.SeaweedS3, port: int, name: str,
                   **overrides: object) -> Settings:
    """Settings for a benchmark's stack: its own task queues and a paused disposal schedule."""
    values: dict[str, object] = dict(
        environment="test", database_url=url, temporal_address=temporal.address, s3_endpoint=s3.endpoint,
        s3_access_key=S3_KEY, s3_secret_key=S3_SECRET, public_base_url=f"http://127.0.0.1:{port}",
        task_queue=f"{name}-cases", ocr_task_queue=f"{name}-ocr", disposal_schedule_enabled=False,
        disposal_schedule_id=f"{name}-disposal", log_level="WARNING")
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
