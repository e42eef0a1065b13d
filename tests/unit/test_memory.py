"""daemon/memory.py: the allocator's free pages go back to the kernel every minute (issue 14)."""

from __future__ import annotations

import threading

from linkwatch.daemon import memory


def test_the_period_comes_from_the_environment_and_bad_values_keep_the_default(caplog):
    assert memory.trim_interval({}) == memory.TRIM_EVERY
    assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": "0"}) == 0
    assert memory.trim_interval({"LINKWATCH_MALLOC_TRIM": "2.5"}) == 2.5
    for bad in ("soon", "-1", "inf", "nan", ""):
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
