"""Giving the C allocator's free pages back to the kernel, now and then.

Python hands memory it frees back to glibc's malloc, which keeps it for reuse: one heap per thread
(an "arena"), grown to the busiest moment's size and given back only from its top. A burst (the
web UI's worker threads answering a flood, the engine's netlink dumps during a storm of faults)
leaves each arena at its high-water mark, the free pages below the blocks still in use resident.
``malloc_trim(0)`` returns those pages (madvise) without moving anything; :func:`trim_every` calls
it periodically from a thread of its own. Where the C library has no ``malloc_trim`` (musl) nothing
happens. ``LINKWATCH_MALLOC_TRIM=<seconds>`` in the environment changes the period (1 s to a day),
``0`` turns it off (bench/soak.py compares both).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Mapping

log = logging.getLogger("linkwatch")
TRIM_EVERY = 60.0  # seconds
TRIM_RANGE = (1.0, 86400.0)  # what LINKWATCH_MALLOC_TRIM may ask for, besides 0
M_ARENA_MAX = -8  # <malloc.h>
ENV = "LINKWATCH_MALLOC_TRIM"


def rss_kb(pid: int | str = "self") -> int | None:
    """A process's resident set size in kB (/proc/<pid>/status; this one's by default), None if
    unreadable (gone, or no such field)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
    except (OSError, ValueError, IndexError):
        return None


def _libc_function(name: str, argtypes: list, restype):
    """``name`` from the C library this process runs on (no ldconfig lookup), typed; None if absent."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, restype
    return function


_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
_MALLOPT = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: free pages in every malloc arena go back to the kernel. False
    where the C library has none."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def limit_arenas(count: int, env: Mapping[str, str] = os.environ) -> bool:
    """Let at most ``count`` malloc arenas serve this process's threads (``mallopt(M_ARENA_MAX)``),
    unless ``MALLOC_ARENA_MAX`` in ``env`` already says (an operator's setting wins); call it before
    starting threads. With one, the web UI's worker threads share the main heap, whose free top
    ``malloc_trim`` gives back; a thread's own arena keeps its top chunk resident (glibc trims only
    the main arena's top). False where nothing was changed."""
    if _MALLOPT is None or "MALLOC_ARENA_MAX" in env:
        return False
    return _MALLOPT(M_ARENA_MAX, count) == 1


def trim_interval(env: Mapping[str, str]) -> float:
    """The period from ``LINKWATCH_MALLOC_TRIM`` (seconds in :data:`TRIM_RANGE`, 0 = off), else
    :data:`TRIM_EVERY`; any other value is ignored with a warning."""
    raw = env.get(ENV)
    if raw is None:
        return TRIM_EVERY
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds == 0 or TRIM_RANGE[0] <= seconds <= TRIM_RANGE[1]:
        return seconds
    log.warning("%s=%r: expected 0 (off) or %g to %g seconds; trimming every %g s", ENV, raw, *TRIM_RANGE, TRIM_EVERY)
    return TRIM_EVERY


def trim_every(env: Mapping[str, str] = os.environ, stop: threading.Event | None = None) -> threading.Thread | None:
    """Start a daemon thread that calls :func:`malloc_trim` every :func:`trim_interval` seconds;
    None (nothing started) when that is 0 or there is no ``malloc_trim``. Neither the engine's event
    loop nor a web request runs it; while it trims an arena (a few ms) a thread of the process that
    allocates from that arena waits for its lock. It ends when ``stop`` is set; the processes let it
    die with them."""
    seconds = trim_interval(env)
    if seconds == 0:
        return None
    if _TRIM is None:
        log.debug("no malloc_trim in this C library: the allocator keeps what it keeps")
        return None
    stop = threading.Event() if stop is None else stop

    def loop() -> None:
        while not stop.wait(seconds):
            started = time.monotonic()
            malloc_trim()
            log.debug("malloc_trim(0) took %.1f ms, RSS now %s kB", (time.monotonic() - started) * 1000, rss_kb())

    thread = threading.Thread(target=loop, name="malloc-trim", daemon=True)
    thread.start()
    return thread
