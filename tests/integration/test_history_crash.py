"""The history database against real failures (root): a full disk and a read-only file system on a
tiny tmpfs, kill -9 of a writing process, and the web UI's case of reading as another user.

A history sink must never delay the engine's loop, must catch up when the disk comes back, must
not lose an event it reported as written, and its file must be readable by an unprivileged user
(the web UI) whether the engine is running, stopped cleanly or was killed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from linkwatch.config import HistoryConfig
from linkwatch.core.events import EngineEvent, UplinkSamples
from linkwatch.history import HistoryStore
from linkwatch.sinks.history import HistorySink

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs and switching users need root"),
    pytest.mark.root,
]


# ---------------------------------------------------------------------------------------------
# helpers


def engine_event(detail: str) -> EngineEvent:
    return EngineEvent(at=time.time(), mono=time.monotonic(), what="reloaded", detail=detail)


def sample(uplink: str, seq: int) -> UplinkSamples:
    now = time.time()
    return UplinkSamples(at=now, mono=time.monotonic(), uplink=uplink, start=now - 60, sent=seq, lost=0,
                         loss_pct=0.0, rtt_avg_ms=12.5, rtt_min_ms=10.0, rtt_max_ms=20.0, jitter_ms=1.5)


async def wait_for(cond, limit: float = 5.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit, "condition not reached in time"
        await asyncio.sleep(0.01)


class LoopLag:
    """Worst lateness of a 10 ms ticker on the event loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.perf_counter() - t - 0.01)
            self.ticks += 1

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


def integrity(path: Path) -> str:
    with sqlite3.connect(str(path)) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0]


def rows(path: Path, sql: str) -> list:
    with sqlite3.connect(str(path)) as c:
        return c.execute(sql).fetchall()


@pytest.fixture
def tmpfs():
    """A 256 KiB tmpfs on a fresh directory; unmounted and removed afterwards, whatever happened."""
    where = tempfile.mkdtemp(prefix="lw-history-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "lw-history-test", where], check=True)
    try:
        yield Path(where)
    finally:
        if subprocess.run(["umount", where], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", where], capture_output=True)
        os.rmdir(where)


def fill_up(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


# ---------------------------------------------------------------------------------------------
# a failing disk


def test_a_full_disk_is_contained_and_the_sink_catches_up_when_space_returns(tmpfs):
    path = tmpfs / "history.db"
    N = 150

    async def main():
        sink = HistorySink(HistoryConfig(path=str(path), commit_interval=0.2, event_delay=0.1))
        await sink.handle(engine_event("before"))
        await wait_for(lambda: sink.stats()["events_written"] == 1)
        rows(path, "PRAGMA wal_checkpoint(TRUNCATE)")  # an empty -wal: every new commit needs new space
        filler = fill_up(tmpfs)
        with LoopLag() as lag:
            t = time.perf_counter()
            for i in range(N):  # about 60 kB of pages: more than the disk has, less than it will have
                await sink.handle(engine_event(f"e{i}"))
                await sink.handle(sample(f"wan{i % 4}", i))
            took = time.perf_counter() - t
            assert took < 0.050, f"{2 * N} handle() calls took {took * 1000:.1f} ms on a full disk"
            await wait_for(lambda: sink.stats()["failed_commits"] >= 2, limit=3.0)
            st = sink.stats()
            assert "full" in st["last_error"], st["last_error"]
            assert st["commits"] == 1 and (st["pending_events"], st["pending_samples"]) == (N, N)
            filler.unlink()
            await wait_for(lambda: sink.stats()["pending_events"] == 0, limit=5.0)
            assert lag.ticks > 20 and lag.worst < 0.050, f"loop lag {lag.worst * 1000:.1f} ms"
        st = sink.stats()
        assert (st["events_written"], st["samples_written"], st["last_error"]) == (N + 1, N, None)
        await sink.close()

    asyncio.run(main())
    assert integrity(path) == "ok"
    assert rows(path, "SELECT count(*) FROM events") == [(N + 1,)]
    assert rows(path, "SELECT count(*) FROM samples") == [(N,)]


def test_a_read_only_file_system_at_start_is_retried_and_caught_up(tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    path = tmpfs / "history.db"

    async def main():
        sink = HistorySink(HistoryConfig(path=str(path), commit_interval=0.2, event_delay=0.1))
        with LoopLag() as lag:
            for i in range(50):
                await sink.handle(engine_event(f"e{i}"))
                await sink.handle(sample("wan1", i))
            await wait_for(lambda: sink.stats()["failed_commits"] >= 2, limit=3.0)
            assert "Read-only file system" in sink.stats()["last_error"]
            subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
            await wait_for(lambda: sink.stats()["pending_events"] == 0, limit=5.0)
            assert lag.worst < 0.050
        assert sink.stats()["events_written"] == 50
        await sink.close()

    asyncio.run(main())
    assert rows(path, "SELECT count(*) FROM events") == [(50,)]
    assert (path.stat().st_mode & 0o777) == 0o640  # it holds the admins' addresses: the group reads it


# ---------------------------------------------------------------------------------------------
# kill -9

CHILD = r"""
import asyncio, random, sys, time
sys.path.insert(0, sys.argv[1])
from linkwatch.config import HistoryConfig
from linkwatch.core.events import EngineEvent, UplinkSamples
from linkwatch.sinks.history import HistorySink

async def main(path, seed):
    rng = random.Random(seed)
    sink = HistorySink(HistoryConfig(path=path, commit_interval=0.25, event_delay=0.1), group="nogroup")
    events = samples = 0
    last = None
    while True:
        now = time.time()
        if rng.random() < 0.15:
            for _ in range(rng.randint(1, 3)):
                await sink.handle(EngineEvent(at=now, mono=time.monotonic(), what="reloaded", detail=f"seq={events}"))
                events += 1
        for u in range(4):
            await sink.handle(UplinkSamples(at=now, mono=time.monotonic(), uplink=f"wan{u}", start=now - 60,
                                            sent=samples, lost=0, loss_pct=0.0, rtt_avg_ms=9.0, rtt_min_ms=8.0,
                                            rtt_max_ms=11.0, jitter_ms=0.4))
            samples += 1
        st = sink.stats()
        written = (st["events_written"], st["samples_written"])
        if written != last:
            print(f"{written[0]} {written[1]} {events} {samples}", flush=True)
            last = written
        await asyncio.sleep(0.005)

asyncio.run(main(sys.argv[2], int(sys.argv[3])))
"""


def run_and_kill(path: Path, rng: random.Random) -> tuple[int, int, int, int]:
    """Run the writer, kill -9 it at a random moment after some events were reported written.
    Returns the last report: events written, samples written, events and samples published."""
    script = path.parent / "writer.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(REPO), str(path), str(rng.randrange(1 << 30))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[int, ...]] = []
    reader = threading.Thread(target=lambda: lines.extend(tuple(map(int, ln.split())) for ln in proc.stdout),
                              daemon=True)
    reader.start()
    threshold = rng.randint(5, 40)
    try:
        deadline = time.monotonic() + 15
        while not (lines and lines[-1][0] >= threshold):
            assert proc.poll() is None, f"writer died: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "writer reported too little"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
    assert proc.returncode == -signal.SIGKILL
    return lines[-1]


def test_kill_9_loses_no_event_reported_written_and_only_uncommitted_samples(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(3):
        path = tmp_path / f"round{round_}" / "history.db"
        path.parent.mkdir()
        events_written, samples_written, published_e, published_s = run_and_kill(path, rng)
        assert Path(str(path) + "-wal").exists()  # killed: no clean close
        assert integrity(path) == "ok", f"seed {seed}"
        seqs = sorted(int(r[0].split("=")[1]) for r in rows(path, "SELECT json_extract(data, '$.detail') FROM events"))
        assert seqs == list(range(len(seqs))), f"seed {seed}: events are not a prefix"
        assert len(seqs) >= events_written, f"seed {seed}: {events_written} reported written, {len(seqs)} found"
        kept = sorted(r[0] for r in rows(path, "SELECT sent FROM samples"))
        assert kept == list(range(len(kept))), f"seed {seed}: samples are not a prefix"
        assert len(kept) >= samples_written, f"seed {seed}: {samples_written} reported written, {len(kept)} found"
        # the reopened database takes new writes after the crash
        HistoryStore(str(path)).close()


# ---------------------------------------------------------------------------------------------
# the web UI's user reads the root-owned database


@pytest.fixture(scope="module")
def readable_linkwatch():
    """A world-readable copy of linkwatch (the venv's python may live under /root, 0700)."""
    if not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        pytest.fail("setpriv and /usr/bin/python3 are needed to read as user nobody")
    root = tempfile.mkdtemp(prefix="lw-history-nobody-")
    os.chmod(root, 0o755)
    shutil.copytree(REPO / "linkwatch", Path(root) / "linkwatch", ignore=shutil.ignore_patterns("__pycache__"))
    for p in Path(root).rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield root
    shutil.rmtree(root)


READ = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from linkwatch.history import HistoryError, HistoryReader
try:
    with HistoryReader(sys.argv[2]) as r:
        points = r.samples(0, 4e9, step=86400)["uplinks"]
        print(json.dumps({"events": len(r.events(limit=None)), "uplinks": r.uplinks(),
                          "sent": sum(p["sent"] for pts in points.values() for p in pts)}))
except HistoryError as e:
    print(json.dumps({"error": str(e)}))
"""


def read_as_nobody(code_root: str, path: Path) -> dict:
    out = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON, "-c",
                          READ, code_root, str(path)], capture_output=True, text=True, timeout=30, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def shared_dir():
    where = tempfile.mkdtemp(prefix="lw-history-shared-")
    os.chmod(where, 0o755)  # readable, not writable, by nobody
    yield Path(where)
    shutil.rmtree(where)


def test_user_nobody_reads_while_the_engine_writes_after_a_clean_stop_and_after_a_kill(readable_linkwatch,
                                                                                       shared_dir):
    path = shared_dir / "history.db"
    old_umask = os.umask(0o077)  # a strict umask must not lock the web UI out

    async def main():
        # the web UI's group (here nobody's, nogroup) may read it: [control] group in a real config
        sink = HistorySink(HistoryConfig(path=str(path), commit_interval=0.2, event_delay=0.05), group="nogroup")
        for i in range(7):
            await sink.handle(engine_event(f"e{i}"))
        await sink.handle(sample("wan1", 5))
        await sink.handle(sample("wan2", 6))
        await wait_for(lambda: sink.stats()["samples_written"] == 2)
        assert Path(str(path) + "-shm").exists()
        running = await asyncio.to_thread(read_as_nobody, readable_linkwatch, path)
        await sink.close()
        return running

    try:
        running = asyncio.run(main())
    finally:
        os.umask(old_umask)
    assert running == {"events": 7, "uplinks": ["wan1", "wan2"], "sent": 11}
    assert not Path(str(path) + "-wal").exists()
    assert read_as_nobody(readable_linkwatch, path) == running  # stopped cleanly
    # killed: -wal and -shm stay behind, root's, mode 0640 and group nogroup like the database
    killed = shared_dir / "killed.db"
    run_and_kill(killed, random.Random(1))
    for suffix in ("", "-wal", "-shm"):
        assert os.stat(str(killed) + suffix).st_mode & 0o777 == 0o640
    got = read_as_nobody(readable_linkwatch, killed)
    assert got.get("events", 0) >= 5 and got["uplinks"] == ["wan0", "wan1", "wan2", "wan3"], got
    # a WAL database without -wal/-shm (its last writer could not leave WAL mode): read as immutable
    store = HistoryStore(str(path))
    store.close(rollback_mode=False)
    assert not Path(str(path) + "-shm").exists()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    for suffix in ("-wal", "-shm"):  # that query made them again as root: remove them
        Path(str(path) + suffix).unlink(missing_ok=True)
    assert read_as_nobody(readable_linkwatch, path) == running
    # and one the user may not read at all is a clear error, not a traceback
    path.chmod(0o600)
    assert "permission denied" in read_as_nobody(readable_linkwatch, path)["error"]
