"""The IMAP poller: a mailbox (e.g. poststelle@...) as a mailroom channel.

Stdlib ``imaplib``, UID based. Each round selects the mailbox, asks for the UIDs above the last
one handled, and for each message (oldest first) fetches it whole (``BODY.PEEK[]``: the
\\Seen flag is not set by reading), submits it (:func:`intake.channels.submit_letter`,
channel ``imap``), then moves it to the done mailbox (a refused one to the failed mailbox;
``UID MOVE`` where the server has it, else COPY + \\Deleted + expunge) and records its UID.

Submitted once, also across restarts, in three layers: the message leaves the inbox after a
successful submit; the (UIDVALIDITY, last UID) pair is kept in a state file, so even without a
move nothing handled is fetched again (a new UIDVALIDITY means the UIDs were renumbered: start
over); and a crash between submit and move/state write ends in a re-submit that the duplicate
detection (same bytes, same channel) records instead of processing again.

The password never reaches a log line: it is a ``SecretStr`` in the settings, registered with
the log scrubber by the process, and imaplib errors do not contain it.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import io
import json
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from aktenlauf.errors import AktenlaufError
from intake.channels import IMAP, Submitted

log = structlog.get_logger(__name__)

SubmitMessage = Callable[[bytes, dict[str, str]], Awaitable[Submitted]]
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    user: str
    password: str
    mailbox: str = "INBOX"
    tls: str = "ssl"  # ssl | starttls | none
    done_mailbox: str = "Verarbeitet"  # "" = leave the message in place, flag it \Seen
    failed_mailbox: str = "Abgelehnt"
    state_file: Path = Path("var/imap-state.json")
    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 60.0
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, s) -> ImapConfig:  # type: ignore[no-untyped-def]
        if not s.imap_host:
            raise ValueError("IMAP_HOST is not set")
        port = s.imap_port or (993 if s.imap_tls == "ssl" else 143)
        return cls(host=s.imap_host, port=port, user=s.imap_user, password=s.imap_password.get_secret_value(),
                   mailbox=s.imap_mailbox, tls=s.imap_tls, done_mailbox=s.imap_done_mailbox,
                   failed_mailbox=s.imap_failed_mailbox,
                   state_file=Path(s.imap_state_file or Path(s.var_dir) / "imap-state.json"),
                   max_bytes=s.max_upload_bytes)

    @property
    def state_key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.mailbox}"

    def __repr__(self) -> str:  # the password stays out of reprs and tracebacks
        return f"ImapConfig({self.state_key}, tls={self.tls})"


@dataclass
class PollResult:
    submitted: int = 0
    duplicates: int = 0
    refused: int = 0


class ImapError(Exception):
    """The server said NO/BAD or went away: the round ends, the next one retries."""


def quote(mailbox: str) -> str:
    """An IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _State:
    """(UIDVALIDITY, last UID) per mailbox, in a small JSON file written atomically."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key

    def load(self) -> tuple[int, int]:
        try:
            entry = json.loads(self.path.read_text()).get(self.key, {})
            return int(entry.get("uidvalidity", 0)), int(entry.get("last_uid", 0))
        except (OSError, ValueError, AttributeError):
            return 0, 0

    def save(self, uidvalidity: int, last_uid: int) -> None:
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[self.key] = {"uidvalidity": uidvalidity, "last_uid": last_uid}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)


class _Session:
    """One logged-in IMAP connection with the mailbox selected (blocking calls: run in a thread)."""

    def __init__(self, cfg: ImapConfig) -> None:
        self.cfg = cfg
        if cfg.tls == "ssl":
            self.conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=cfg.ssl_context,
                                                         timeout=cfg.timeout_s)
        else:
            self.conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout_s)
            if cfg.tls == "starttls":
                self.conn.starttls(ssl_context=cfg.ssl_context)
        try:
            self.conn.login(cfg.user, cfg.password)
            typ, caps = self.conn.capability()  # the list before login lacks MOVE/UIDPLUS on many servers
            if typ == "OK" and caps and isinstance(caps[-1], bytes):
                self.conn.capabilities = tuple(caps[-1].decode("ascii", "replace").upper().split())
            typ, data = self.conn.select(quote(cfg.mailbox))
            if typ != "OK":
                raise ImapError(f"cannot select mailbox {cfg.mailbox!r}: {data!r}")
            found = _UIDVALIDITY.search(b" ".join(x for x in self.conn.response("UIDVALIDITY")[1] if x) or b"")
            self.uidvalidity = int(found.group(1)) if found else 0
            if not self.uidvalidity:  # some servers only put it in an untagged OK
                self.uidvalidity = int(self._status_uidvalidity())
        except BaseException:
            self.close()
            raise

    def _status_uidvalidity(self) -> int:
        typ, data = self.conn.status(quote(self.cfg.mailbox), "(UIDVALIDITY)")
        found = _UIDVALIDITY.search(data[0] if data and isinstance(data[0], bytes) else b"")
        return int(found.group(1)) if typ == "OK" and found else 0

    def uids_after(self, last_uid: int) -> list[int]:
        typ, data = self.conn.uid("SEARCH", f"UID {last_uid + 1}:*")
        if typ != "OK":
            raise ImapError(f"UID SEARCH failed: {data!r}")
        uids = sorted({int(x) for x in (data[0] or b"").split()})
        return [u for u in uids if u > last_uid]  # "n:*" also matches the highest UID when it is below n

    def size(self, uid: int) -> int | None:
        typ, data = self.conn.uid("FETCH", str(uid), "(RFC822.SIZE)")
        if typ != "OK":
            raise ImapError(f"UID FETCH {uid} failed: {data!r}")
        for item in data:
            raw = item[0] if isinstance(item, tuple) else item
            if isinstance(raw, bytes) and (m := _SIZE.search(raw)):
                return int(m.group(1))
        return None  # expunged meanwhile

    def fetch(self, uid: int) -> bytes | None:
        typ, data = self.conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if typ != "OK":
            raise ImapError(f"UID FETCH {uid} failed: {data!r}")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    def ensure_mailbox(self, name: str) -> None:
        typ, _ = self.conn.create(quote(name))  # NO = exists already (or not allowed: the move will say)
        if typ == "OK":
            self.conn.subscribe(quote(name))

    def move(self, uid: int, target: str) -> None:
        if not target:
            self.conn.uid("STORE", str(uid), "+FLAGS", "(\\Seen)")
            return
        if "MOVE" in self.conn.capabilities:
            typ, data = self.conn.uid("MOVE", str(uid), quote(target))
            if typ == "OK":
                return
            raise ImapError(f"UID MOVE {uid} to {target!r} failed: {data!r}")
        typ, data = self.conn.uid("COPY", str(uid), quote(target))
        if typ != "OK":
            raise ImapError(f"UID COPY {uid} to {target!r} failed: {data!r}")
        self.conn.uid("STORE", str(uid), "+FLAGS", "(\\Deleted)")
        if "UIDPLUS" in self.conn.capabilities:
            self.conn.uid("EXPUNGE", str(uid))
        else:
            self.conn.expunge()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.logout()


class ImapPoller:
    def __init__(self, cfg: ImapConfig, submit: SubmitMessage) -> None:
        self.cfg = cfg
        self.submit = submit
        self.state = _State(cfg.state_file, cfg.state_key)

    async def poll_once(self) -> PollResult:
        result = PollResult()
        session = await asyncio.to_thread(_Session, self.cfg)
        try:
            for name in {self.cfg.done_mailbox, self.cfg.failed_mailbox} - {""}:
                await asyncio.to_thread(session.ensure_mailbox, name)
            validity, last = self.state.load()
            if validity != session.uidvalidity:
                if validity:
                    log.warning("imap.uidvalidity_changed", mailbox=self.cfg.mailbox, old=validity,
                                new=session.uidvalidity)
                last = 0
            for uid in await asyncio.to_thread(session.uids_after, last):
                await self._one(session, uid, result)
                self.state.save(session.uidvalidity, uid)
        finally:
            await asyncio.to_thread(session.close)
        if result.submitted or result.duplicates or result.refused:
            log.info("imap.polled", mailbox=self.cfg.mailbox, submitted=result.submitted,
                     duplicates=result.duplicates, refused=result.refused)
        return result

    async def _one(self, session: _Session, uid: int, result: PollResult) -> None:
        bound = log.bind(imap_uid=uid, mailbox=self.cfg.mailbox)
        size = await asyncio.to_thread(session.size, uid)
        if size is None:
            return
        if size > self.cfg.max_bytes:
            bound.warning("imap.refused", reason="too large", size=size)
            await asyncio.to_thread(session.move, uid, self.cfg.failed_mailbox)
            result.refused += 1
            return
        data = await asyncio.to_thread(session.fetch, uid)
        if data is None:
            return
        origin = {"mailbox": self.cfg.mailbox, "uidvalidity": str(session.uidvalidity), "uid": str(uid)}
        try:
            sub = await self.submit(data, origin)
        except AktenlaufError as exc:
            if not 400 <= exc.status < 500:
                raise  # a backing service is down: end the round, the message stays for the next one
            bound.warning("imap.refused", reason=exc.detail)
            await asyncio.to_thread(session.move, uid, self.cfg.failed_mailbox)
            result.refused += 1
            return
        await asyncio.to_thread(session.move, uid, self.cfg.done_mailbox)
        if sub.duplicate:
            result.duplicates += 1
        else:
            result.submitted += 1
        bound.info("imap.taken", item_id=sub.item_id, duplicate_of=sub.duplicate_of)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        log.info("imap.started", mailbox=self.cfg.state_key, tls=self.cfg.tls, interval_s=interval_s)
        delay = interval_s
        while not stop.is_set():
            try:
                await self.poll_once()
                delay = interval_s
            except Exception as exc:  # noqa: BLE001 - server away, login refused, S3 down: retry later
                delay = min(max(delay * 2, interval_s), 15 * 60)
                log.warning("imap.poll_failed", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


def submitter(services) -> SubmitMessage:  # type: ignore[no-untyped-def]
    from intake.channels import submit_letter

    async def submit(data: bytes, origin: dict[str, str]) -> Submitted:
        name = f"imap-{origin.get('uidvalidity', '0')}-{origin.get('uid', '0')}.eml"
        return await submit_letter(services, io.BytesIO(data), filename=name, channel=IMAP, submitted_by="imap",
                                   accept="email", origin=origin)

    return submit


async def run_imap_poller(settings, stop: asyncio.Event | None = None) -> None:  # type: ignore[no-untyped-def]
    """The `aktenlauf imap` process: poll until SIGINT/SIGTERM."""
    import signal

    from aktenlauf.logging import register_secrets, secret_values
    from intake.channels import connect_services

    cfg = ImapConfig.from_settings(settings)
    register_secrets([*secret_values(settings), cfg.password])
    services = await connect_services(settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await ImapPoller(cfg, submitter(services)).run(settings.imap_poll_interval_s, stop)
