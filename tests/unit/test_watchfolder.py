"""The watched folder's rules: only complete files are taken, each once, then moved to done/ or,
refused, to failed/ with the reason; trouble with a backing service leaves the file for later.

The submit step is a recording function here (the real one, against the real stack, is in
tests/integration/test_mail_channels.py); the clock is ours, /proc and the file system are real."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aktenlauf.errors import Unavailable, UnsupportedMediaType
from intake.channels import Submitted
from intake.watchfolder import WatchFolder, ignored, move_unique, open_for_writing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}

    async def __call__(self, path: Path) -> Submitted:
        self.calls.append(path.name)
        if path.name in self.fail:
            raise self.fail[path.name]
        data = path.read_bytes()
        return Submitted(item_id=f"mail-{len(self.calls)}", status="received", channel="folder", filename=path.name,
                         content_type="application/pdf", sha256="0" * 64, size=len(data),
                         received_at=dt.datetime.now(dt.UTC))


@pytest.fixture
def folder(tmp_path: Path) -> tuple[WatchFolder, Recorder, Clock]:
    rec, clock = Recorder(), Clock()
    wf = WatchFolder(tmp_path / "eingang", rec, stable_for_s=5, clock=clock)
    wf.prepare()
    return wf, rec, clock


async def test_a_file_is_taken_only_after_it_stopped_changing(folder) -> None:  # type: ignore[no-untyped-def]
    wf, rec, clock = folder
    f = wf.root / "scan.pdf"
    f.write_bytes(b"%PDF-1.4 part one")
    assert await wf.poll_once() == []
    clock.now += 4
    with f.open("ab") as fh:
        fh.write(b" part two")  # still being written: the window starts again
    assert await wf.poll_once() == []
    clock.now += 4.9
    assert await wf.poll_once() == [] and rec.calls == []
    clock.now += 0.2
    handled = await wf.poll_once()
    assert [h.outcome for h in handled] == ["submitted"] and rec.calls == ["scan.pdf"]
    assert not f.exists() and (wf.done_dir / "scan.pdf").read_bytes() == b"%PDF-1.4 part one part two"
    clock.now += 10
    assert await wf.poll_once() == [] and rec.calls == ["scan.pdf"]  # taken once


async def test_temporary_and_hidden_names_are_never_taken(folder) -> None:  # type: ignore[no-untyped-def]
    wf, rec, clock = folder
    for name in (".scan.pdf", "scan.pdf.tmp", "scan.PART", "~lock.pdf", "x.crdownload"):
        (wf.root / name).write_bytes(b"%PDF-1.4")
    (wf.root / "unterordner").mkdir()
    await wf.poll_once()
    clock.now += 60
    assert await wf.poll_once() == [] and rec.calls == []
    os.rename(wf.root / "scan.pdf.tmp", wf.root / "scan.pdf")  # write-then-rename: the final name appears
    await wf.poll_once()
    clock.now += 6
    assert [h.name for h in await wf.poll_once()] == ["scan.pdf"]


async def test_a_file_open_for_writing_waits_even_when_it_looks_stable(folder) -> None:  # type: ignore[no-untyped-def]
    wf, rec, clock = folder
    f = wf.root / "langsam.pdf"
    with f.open("wb") as writer:
        writer.write(b"%PDF-1.4")
        writer.flush()
        await wf.poll_once()
        clock.now += 60
        assert await wf.poll_once() == [] and rec.calls == []
    assert [h.name for h in await wf.poll_once()] == ["langsam.pdf"]


async def test_names_collide_into_numbered_copies_in_done(folder) -> None:  # type: ignore[no-untyped-def]
    wf, _, clock = folder
    for round_ in range(3):
        (wf.root / "scan.pdf").write_bytes(b"%PDF-1.4 " + bytes([round_]))
        await wf.poll_once()
        clock.now += 6
        await wf.poll_once()
    assert sorted(p.name for p in wf.done_dir.iterdir()) == ["scan-1.pdf", "scan-2.pdf", "scan.pdf"]
    assert (wf.done_dir / "scan-2.pdf").read_bytes() == b"%PDF-1.4 \x02"


async def test_a_refused_file_goes_to_failed_with_its_reason(folder) -> None:  # type: ignore[no-untyped-def]
    wf, rec, clock = folder
    (wf.root / "notiz.txt").write_text("kein Scan")
    rec.fail["notiz.txt"] = UnsupportedMediaType("only PDF, PNG, TIFF and JPEG files are accepted")
    await wf.poll_once()
    clock.now += 6
    [handled] = await wf.poll_once()
    assert handled.outcome == "refused"
    assert (wf.failed_dir / "notiz.txt").read_text() == "kein Scan"
    assert "only PDF, PNG, TIFF and JPEG" in (wf.failed_dir / "notiz.txt.reason.txt").read_text()
    assert list(wf.root.glob("*.txt")) == []


async def test_a_backing_service_failure_leaves_the_file_for_the_next_round(folder) -> None:  # type: ignore[no-untyped-def]
    wf, rec, clock = folder
    f = wf.root / "scan.pdf"
    f.write_bytes(b"%PDF-1.4")
    rec.fail["scan.pdf"] = Unavailable("object store unreachable")
    await wf.poll_once()
    clock.now += 6
    assert await wf.poll_once() == [] and f.exists()
    rec.fail["scan.pdf"] = ConnectionError("temporal gone")
    assert await wf.poll_once() == [] and f.exists()
    del rec.fail["scan.pdf"]
    assert [h.outcome for h in await wf.poll_once()] == ["submitted"]
    assert rec.calls == ["scan.pdf"] * 3 and not f.exists()


def test_open_for_writing_sees_another_process_writing(tmp_path: Path) -> None:
    target = tmp_path / "wird-geschrieben.pdf"
    script = (f"import time; f=open({str(target)!r}, 'ab'); "
              "f.write(b'x'); f.flush(); print('ok', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ok"
        assert str(target) in open_for_writing()
        reader = target.open("rb")  # a reader does not count
        try:
            child.kill()
            child.wait()
            assert str(target) not in open_for_writing()
        finally:
            reader.close()
    finally:
        child.kill()
        child.wait()


def test_move_unique_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.pdf").write_text("old")
    (tmp_path / "a.pdf").write_text("new")
    moved = move_unique(tmp_path / "a.pdf", tmp_path / "d")
    assert moved.name == "a-1.pdf" and moved.read_text() == "new" and (tmp_path / "d" / "a.pdf").read_text() == "old"


@pytest.mark.parametrize(("name", "skip"), [("scan.pdf", False), ("Scan 2026-11-22.PDF", False), (".hidden", True),
                                            ("a.pdf.part", True), ("a.TMP", True), ("~$brief.pdf", True)])
def test_ignored_names(name: str, skip: bool) -> None:
    assert ignored(name) is skip
