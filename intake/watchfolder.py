"""The watched folder: the scanner's output directory as a mailroom channel.

Polling, not inotify: it works the same on local disks and network shares (SMB/NFS send no
events for writes by other hosts) and needs nothing installed. Each round lists the regular files
directly in the folder and takes a file once

* its size and mtime have not changed for ``stable_for_s`` seconds (scanners write slowly, and
  in bursts), and
* no process on this host has it open for writing (read from /proc; a writer on another host
  cannot be seen, which is what the stability window is for);

names starting with ``.`` or ``~`` and ending in ``.tmp``, ``.part``, ``.partial`` ... are never
taken: the common "write as .tmp, then rename" pattern shows only the finished name.

A taken file is submitted (:func:`intake.channels.submit_letter`) and then moved to ``done/``
(also when it was a duplicate); a refused one (unsupported type, too large, empty, a broken
e-mail) goes to ``failed/`` with ``<name>.reason.txt`` next to it. Both keep the name and add
``-1``, ``-2`` ... on a collision. A failure of a backing service (S3, database, Temporal) leaves
the file where it is for the next round. A crash between the submit and the move needs no
bookkeeping: the next run submits the file again, which is recognised as a duplicate (same
SHA-256, same channel) and only recorded, then the file is moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from aktenlauf.errors import AktenlaufError
from intake.channels import FOLDER, Submitted

log = structlog.get_logger(__name__)

DONE, FAILED = "done", "failed"
IGNORED_PREFIXES = (".", "~")
IGNORED_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".download", ".swp",
                    ".lock", ".reason.txt")

SubmitFile = Callable[[Path], Awaitable[Submitted]]


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # clock time the (size, mtime) pair was first seen


@dataclass(frozen=True)
class Handled:
    name: str
    outcome: str  # submitted | duplicate | refused
    moved_to: Path
    item_id: str | None = None
    reason: str | None = None


def ignored(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(IGNORED_PREFIXES) or lowered.endswith(IGNORED_SUFFIXES)


def open_for_writing(proc: Path = Path("/proc")) -> set[str]:
    """Paths some process on this host holds open for writing (what /proc lets us see)."""
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if not target.startswith("/"):
                continue  # pipe:, socket:, anon_inode:
            try:
                info = (proc / pid / "fdinfo" / fd).read_text()
            except OSError:
                continue
            flags = next((line.split()[1] for line in info.splitlines() if line.startswith("flags:")), "0")
            if int(flags, 8) & (os.O_WRONLY | os.O_RDWR):
                found.add(target)
    return found


def move_unique(src: Path, dest_dir: Path) -> Path:
    """Move ``src`` into ``dest_dir`` under its name, or ``stem-N.suffix`` if that is taken.
    ``link`` + ``unlink`` never overwrites (a plain rename would); rename where links fail."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split(src.name)
    for n in range(10_000):
        dst = dest_dir / (src.name if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.link(src, dst)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links (some shares)
            if dst.exists():
                continue
            os.rename(src, dst)
            return dst
        os.unlink(src)
        return dst
    raise RuntimeError(f"no free name for {src.name} in {dest_dir}")


def _split(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


class WatchFolder:
    def __init__(self, root: Path, submit: SubmitFile, *, stable_for_s: float,
                 clock: Callable[[], float] = time.monotonic, writers: Callable[[], set[str]] = open_for_writing) -> None:
        self.root = root
        self.submit = submit
        self.stable_for_s = stable_for_s
        self.clock = clock
        self.writers = writers
        self._seen: dict[str, _Seen] = {}

    @property
    def done_dir(self) -> Path:
        return self.root / DONE

    @property
    def failed_dir(self) -> Path:
        return self.root / FAILED

    def prepare(self) -> None:
        for d in (self.root, self.done_dir, self.failed_dir):
            d.mkdir(parents=True, exist_ok=True)

    def ready(self) -> list[Path]:
        """Files complete enough to take now, oldest first."""
        now = self.clock()
        present: dict[str, os.stat_result] = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                if ignored(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    present[entry.name] = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
        for gone in set(self._seen) - set(present):
            del self._seen[gone]
        stable: list[tuple[int, Path]] = []
        for name, st in present.items():
            seen = self._seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, now)
                if self.stable_for_s > 0:
                    continue
            elif now - seen.since < self.stable_for_s:
                continue
            stable.append((st.st_mtime_ns, self.root / name))
        if not stable:
            return []
        writing = self.writers()
        return [p for _, p in sorted(stable) if os.path.realpath(p) not in writing]

    async def poll_once(self) -> list[Handled]:
        handled: list[Handled] = []
        for path in await asyncio.to_thread(self.ready):
            result = await self._take(path)
            if result is not None:
                handled.append(result)
        return handled

    async def _take(self, path: Path) -> Handled | None:
        bound = log.bind(file=path.name)
        try:
            sub = await self.submit(path)
        except FileNotFoundError:
            self._seen.pop(path.name, None)  # taken by someone else meanwhile
            return None
        except AktenlaufError as exc:
            if not 400 <= exc.status < 500:
                bound.warning("watch.submit_failed", error=str(exc), retry=True)
                return None
            return await asyncio.to_thread(self._refuse, path, exc.detail)
        except Exception as exc:  # noqa: BLE001 - S3/database/Temporal trouble: try again next round
            bound.warning("watch.submit_failed", error=f"{type(exc).__name__}: {exc}", retry=True)
            return None
        self._seen.pop(path.name, None)
        try:
            moved = await asyncio.to_thread(move_unique, path, self.done_dir)
        except FileNotFoundError:
            return None  # another watcher moved it; the item is registered either way
        outcome = "duplicate" if sub.duplicate else "submitted"
        bound.info("watch.taken", outcome=outcome, item_id=sub.item_id, duplicate_of=sub.duplicate_of,
                   moved_to=str(moved.relative_to(self.root)))
        return Handled(path.name, outcome, moved, item_id=sub.item_id)

    def _refuse(self, path: Path, reason: str) -> Handled | None:
        self._seen.pop(path.name, None)
        try:
            moved = move_unique(path, self.failed_dir)
        except FileNotFoundError:
            return None
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        moved.with_name(moved.name + ".reason.txt").write_text(
            f"{stamp}: nicht übernommen / refused\n{reason}\n", encoding="utf-8")
        log.warning("watch.refused", file=path.name, reason=reason, moved_to=str(moved.relative_to(self.root)))
        return Handled(path.name, "refused", moved, reason=reason)

    async def run(self, poll_interval_s: float, stop: asyncio.Event) -> None:
        self.prepare()
        log.info("watch.started", folder=str(self.root), stable_for_s=self.stable_for_s,
                 poll_interval_s=poll_interval_s)
        while not stop.is_set():
            try:
                await self.poll_once()
            except OSError as exc:  # the share went away: keep trying
                log.warning("watch.poll_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_interval_s)


async def run_watcher(settings, stop: asyncio.Event | None = None) -> None:  # type: ignore[no-untyped-def]
    """The `aktenlauf watch` process: watch ``settings.watch_folder`` until SIGINT/SIGTERM."""
    import signal

    from aktenlauf.logging import register_secrets, secret_values
    from intake.channels import connect_services, submit_letter

    register_secrets(secret_values(settings))
    if settings.watch_folder is None:
        raise SystemExit("WATCH_FOLDER is not set")
    root = Path(settings.watch_folder).resolve()
    services = await connect_services(settings)

    async def submit(path: Path) -> Submitted:
        st = path.stat()
        origin = {"path": path.name, "mtime": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat()}
        with path.open("rb") as fh:
            return await submit_letter(services, fh, filename=path.name, channel=FOLDER, submitted_by="watchfolder",
                                       accept="any", origin=origin)

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await WatchFolder(root, submit, stable_for_s=settings.watch_stable_seconds).run(
        settings.watch_poll_interval_s, stop)
