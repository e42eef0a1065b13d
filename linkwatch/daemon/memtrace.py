"""Finding what grows in a long run: ``LINKWATCH_TRACEMALLOC=<directory>`` in the environment of
the engine or the web UI starts :mod:`tracemalloc` (``LINKWATCH_TRACEMALLOC_FRAMES`` frames,
default 1) and writes a snapshot to ``<directory>/linkwatch-<pid>-<n>.snapshot`` on every SIGUSR2.
Compare two with ``python -m linkwatch.daemon.memtrace OLD NEW``. Off unless asked for: tracing
costs CPU. Each snapshot's log line gives the process's RSS and what tracemalloc holds, both read
before the snapshot is taken: RSS that grows while the traced memory stays flat is the C
allocator's (or a C library's), not Python objects kept."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import tracemalloc
from collections.abc import Mapping

from linkwatch.daemon.memory import rss_kb

log = logging.getLogger("linkwatch")
ENV, FRAMES_ENV = "LINKWATCH_TRACEMALLOC", "LINKWATCH_TRACEMALLOC_FRAMES"


def install(env: Mapping[str, str] = os.environ) -> str | None:
    """Start tracing and the SIGUSR2 handler when ``env`` asks for it; returns the directory."""
    directory = env.get(ENV)
    if not directory:
        return None
    try:
        frames = max(1, int(env.get(FRAMES_ENV, "1")))
    except ValueError:
        log.warning("%s=%r is not a number of frames: 1", FRAMES_ENV, env.get(FRAMES_ENV))
        frames = 1
    tracemalloc.start(frames)
    taken = [0]

    def dump(signum, frame) -> None:
        taken[0] += 1
        path = os.path.join(directory, f"linkwatch-{os.getpid()}-{taken[0]}.snapshot")
        rss, traced = rss_kb(), tracemalloc.get_traced_memory()[0] // 1024  # before the snapshot's own
        try:
            gc.collect()  # what is still referenced, not garbage a full collection has not reached yet
            tracemalloc.take_snapshot().dump(path)
            log.warning("memory snapshot written to %s (%s): RSS %s kB, traced %d kB", path, ENV, rss, traced)
        except OSError as e:
            log.warning("cannot write the memory snapshot %s: %s", path, e)

    signal.signal(signal.SIGUSR2, dump)
    log.warning("tracing memory allocations (%s=%s): SIGUSR2 writes a snapshot; this costs CPU", ENV, directory)
    return directory


def compare(old: str, new: str, top: int = 25, key: str = "traceback") -> list[str]:
    """The ``top`` allocation sites that grew most from snapshot ``old`` to ``new``."""
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    a = tracemalloc.Snapshot.load(old).filter_traces(filters)
    b = tracemalloc.Snapshot.load(new).filter_traces(filters)
    stats = b.compare_to(a, key)
    lines = [f"total {sum(s.size_diff for s in stats) / 1024:+.1f} KiB"]
    for s in stats[:top]:
        lines.append(f"{s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d} blocks  " + " <- ".join(
            f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in s.traceback))
    return lines


if __name__ == "__main__":  # python -m linkwatch.daemon.memtrace OLD NEW
    print("\n".join(compare(sys.argv[1], sys.argv[2])))
