"""daemon/memtrace.py: the soak's way to find what grows in the engine (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from linkwatch.daemon import memtrace

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, signal, sys
from linkwatch.daemon import memtrace
assert memtrace.install({}) is None  # off unless asked for
assert memtrace.install({"LINKWATCH_TRACEMALLOC": sys.argv[1]}) == sys.argv[1]
os.kill(os.getpid(), signal.SIGUSR2)
kept = [bytearray(1000) for _ in range(2000)]  # about 2 MB that stays
os.kill(os.getpid(), signal.SIGUSR2)
"""


def test_sigusr2_writes_snapshots_that_show_what_grew(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    snaps = sorted(tmp_path.glob("linkwatch-*-*.snapshot"), key=lambda p: p.name[-10:])
    assert [p.name.rsplit("-", 1)[1] for p in snaps] == ["1.snapshot", "2.snapshot"], snaps
    lines = memtrace.compare(str(snaps[0]), str(snaps[1]), top=3)
    total = float(lines[0].split()[1])
    assert 1900 < total < 2600, lines  # KiB: the 2,000 kB kept, little else
    assert "<string>:7" in lines[1], lines  # the line that kept it comes first


def test_the_lab_web_ui_inherits_the_memory_settings_and_nothing_else(monkeypatch):
    """The lab runs the web UI as nobody with a clean environment: the soak's --trace-memory must
    reach it (else its SIGUSR2 would kill the web UI), and so must --malloc-trim; nothing else of
    root's environment may."""
    from linkwatch.lab.web import _unprivileged_env
    monkeypatch.setenv("LINKWATCH_TRACEMALLOC", "/tmp/somewhere")
    monkeypatch.setenv("LINKWATCH_TRACEMALLOC_FRAMES", "3")
    monkeypatch.setenv("SECRET_OF_ROOT", "x")
    monkeypatch.setenv("LINKWATCH_MALLOC_TRIM", "0")
    env = _unprivileged_env()
    assert env["LINKWATCH_TRACEMALLOC"] == "/tmp/somewhere" and env["LINKWATCH_TRACEMALLOC_FRAMES"] == "3"
    assert env["LINKWATCH_MALLOC_TRIM"] == "0"
    assert "SECRET_OF_ROOT" not in env
    monkeypatch.delenv("LINKWATCH_TRACEMALLOC")
    monkeypatch.delenv("LINKWATCH_TRACEMALLOC_FRAMES")
    monkeypatch.delenv("LINKWATCH_MALLOC_TRIM")
    assert not any(k.startswith("LINKWATCH_") for k in _unprivileged_env())


TRIM_CHILD = """
from linkwatch.daemon import memory
blocks = [bytes(4000) for _ in range(10000)]  # 40 MB from malloc's heap (over pymalloc's 512 bytes)
keep = blocks[-1]
del blocks  # all free, but below a live block: the heap cannot shrink by itself
before = memory.rss_kb()
assert memory.malloc_trim()
print(before, memory.rss_kb())
"""


def test_malloc_trim_gives_back_what_the_allocator_kept():
    """The snapshot's RSS after malloc_trim(0): free heap pages below a live block go back."""
    done = subprocess.run([sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before - after > 30_000, (before, after)  # kB of the 40 MB freed


SNAP_CHILD = """
import gc, logging, os, signal, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from linkwatch.daemon import memory, memtrace
memtrace.install({"LINKWATCH_TRACEMALLOC": sys.argv[1]})
keep = [str(i) * 3 for i in range(300000)]  # a daemon's live blocks: a snapshot of them is tens of MB
gc.collect(); memory.malloc_trim()
print("RSS_BEFORE", memory.rss_kb())
os.kill(os.getpid(), signal.SIGUSR2)
"""


def test_the_snapshot_log_line_gives_the_rss_before_the_snapshot(tmp_path):
    """Found in review: RSS was read after take_snapshot(), so the snapshot's own garbage was in it."""
    done = subprocess.run([sys.executable, "-c", SNAP_CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    before = int(next(line for line in lines if line.startswith("RSS_BEFORE")).split()[1])
    logged = next(line for line in lines if "memory snapshot written" in line)
    assert abs(int(logged.split("RSS ")[1].split()[0]) - before) < 5_000, (before, logged)  # kB


def test_a_bad_frame_count_is_one_frame_not_a_crash(tmp_path):
    import signal
    import tracemalloc
    handler = signal.getsignal(signal.SIGUSR2)
    try:
        assert memtrace.install({"LINKWATCH_TRACEMALLOC": str(tmp_path), "LINKWATCH_TRACEMALLOC_FRAMES": "x"}) \
            == str(tmp_path)
        assert tracemalloc.get_traceback_limit() == 1
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, handler)
