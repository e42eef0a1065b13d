"""daemon/memory.py: the allocator's free pages go back to the kernel every minute (issue 14)."""

from __future__ import annotations

import threading

from linkwatch.daemon import memory


def test_the_period_comes_from_the_environment_and_bad_values_keep_the_default(caplog):
    assert memory.trim_interval({}) == memory.TRIM_EVERY
    assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": "0"}) == 0
    assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": "2.5"}) == 2.5
    assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": "86400"}) == 86400
    # past threading.TIMEOUT_MAX Event.wait raises in the thread; below 1 s it trims back to back
    for bad in ("soon", "-1", "inf", "nan", "", "1e10", "1e-9", "0.5"):
        caplog.clear()
        assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": bad}) == memory.TRIM_EVERY, bad
        assert "LINKWATCH_MALLOC_TRIM" in caplog.text, bad


def test_off_starts_nothing():
    before = threading.active_count()
    assert memory.trim_every({"LINKWATCH_MALLOC_TRIM": "0"}) is None
    assert threading.active_count() == before


def test_the_thread_trims_again_and_again(monkeypatch):
    calls = threading.Semaphore(0)
    monkeypatch.setattr(memory, "_TRIM", lambda pad: calls.release() or 1)
    stop = threading.Event()
    monkeypatch.setattr(memory, "TRIM_RANGE", (0.01, 1.0))  # fast, for the test
    thread = memory.trim_every({"LINKWATCH_MALLOC_TRIM": "0.01"}, stop)
    try:
        assert thread is not None and thread.daemon and thread.name == "malloc-trim"
        assert all(calls.acquire(timeout=5) for _ in range(3))  # not once: every period
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_without_malloc_trim_nothing_starts(monkeypatch):
    monkeypatch.setattr(memory, "_TRIM", None)
    assert memory.trim_every({}) is None
    assert memory.malloc_trim() is False


ARENAS_CHILD = """
import ctypes, ctypes.util, sys, threading
from linkwatch.daemon import memory
if sys.argv[1] == "limit":
    assert memory.limit_arenas(1, {})
    assert not memory.limit_arenas(1, {"MALLOC_ARENA_MAX": "4"})  # the operator's setting wins
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
go = threading.Barrier(4)
def work():
    go.wait()  # each thread's first malloc gets it an arena of its own, up to M_ARENA_MAX
    for _ in range(2000):
        libc.malloc(64)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
# a thread arena's heap: a 64 MiB-aligned anonymous mapping (HEAP_MAX_SIZE)
heaps = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    start = int(fields[0].split("-")[0], 16)
    if len(fields) == 5 and start % (64 << 20) == 0 and fields[1] == "rw-p":
        heaps += 1
print(heaps)
"""


def test_limit_arenas_keeps_the_worker_threads_on_the_main_heap():
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    counts = {}
    for mode in ("default", "limit"):
        done = subprocess.run([sys.executable, "-c", ARENAS_CHILD, mode], capture_output=True, text=True,
                              timeout=60, cwd=repo)
        assert done.returncode == 0, done.stderr
        counts[mode] = int(done.stdout)
    assert counts["default"] >= 1 and counts["limit"] == 0, counts


def test_rss_of_this_process_or_another_and_none_when_gone():
    import os
    import subprocess
    import sys
    assert abs(memory.rss_kb(os.getpid()) - memory.rss_kb()) < 2000  # kB, a moment apart
    child = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * 30_000_000; time.sleep(60)"])
    try:
        for _ in range(300):  # until the child has written its 30 MB (at most 30 s)
            if (memory.rss_kb(child.pid) or 0) > 30_000:
                break
            threading.Event().wait(0.1)
        assert memory.rss_kb(child.pid) > 30_000
    finally:
        child.kill()
        child.wait()
    assert memory.rss_kb(child.pid) is None
