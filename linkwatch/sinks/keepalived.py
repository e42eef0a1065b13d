"""keepalived's track file: ``0`` while at least one uplink works, ``1`` while none does.

A router pair shares the LAN's gateway address through keepalived (VRRP). keepalived watches a
``track_file`` with inotify and reads the number in it; linkwatch keeps that number current, so
the gateway address moves to the router that still has a working uplink, without keepalived
forking a check script every interval (see docs/keepalived.md for keepalived's side).

A sink like every other: it reacts to the events that can change the answer (an uplink's state
change; the engine starting or reloading) and reads the answer from the engine's current status
(the ``status`` callable of :func:`linkwatch.sinks.build_sinks`), never from the event itself, so
a dropped or late event cannot leave a wrong value behind. It runs behind the runner's queue and
timeout: a slow or unwritable directory never delays a failover; a failed write is logged by the
runner (WARNING, naming the file and the reason) and retried by the sink itself after 1, 2, then
every 5 s until it goes through (the next event may be hours away).

"Works" is the core's notion (:func:`linkwatch.core.uplink.working`): the uplink's IPv4 state is
one that carries traffic (UP, FALLING, DEGRADED). An engine that has just started knows no
uplink yet (all INIT), so it writes ``1`` until its first uplink is UP: a restarted engine takes
the gateway back only once it has proven an uplink again.

The file is replaced atomically (a temporary file in the same directory, then rename), so
keepalived never reads a half-written or empty file; it is rewritten only when the value changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

from linkwatch.core.events import EngineEvent, Event, UplinkStateChanged
from linkwatch.core.states import usable

log = logging.getLogger(__name__)

WORKING, NONE_WORKING = 0, 1
FILE_MODE = 0o644  # keepalived may run as another user; the value is no secret


class TrackFileError(OSError):
    """The track file could not be written (the message names the file and why)."""


def track_value(status: Any) -> int:
    """``0`` when at least one uplink of ``status`` works (its IPv4 state carries traffic), else
    ``1``. Pure."""
    return WORKING if any(usable(u.state) for u in status.uplinks) else NONE_WORKING


def read_value(path: str) -> int | None:
    """The number in the track file now; None when it is missing or holds no number."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_atomically(path: str, value: int) -> None:
    """Replace ``path`` with ``"<value>\\n"``: a temporary file in the same directory, renamed over
    it (readers see the old file or the new one, never a partial one). TrackFileError on failure."""
    directory = os.path.dirname(path) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(f"{value}\n")
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        reason = e.strerror or str(e)
        raise TrackFileError(e.errno, f"cannot write keepalived track file {path} "
                                      f"(temporary file in {directory}): {reason}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class KeepalivedTrackSink:
    """Keeps ``path`` at :func:`track_value` of the engine's current status."""

    name = "keepalived"
    timeout = 2.0
    kinds = frozenset({UplinkStateChanged.kind, EngineEvent.kind})
    RETRY_AFTER = (1.0, 2.0, 5.0)  # seconds between retries of a failed write; the last repeats

    def __init__(self, path: str, status: Callable[[], Any]):
        self.path = path
        self.status = status
        self.written: int | None = None  # the value this sink last wrote (None: not yet)
        self.writes = 0
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task | None = None

    async def handle(self, event: Event) -> None:
        if isinstance(event, EngineEvent) and event.what == "stopped":
            return  # the last value stays: the routes stay too (fail-static); track_process sees the exit
        try:
            await self._sync()
        except TrackFileError:
            # the next event may be hours away (the last uplink just died): keep trying on our own
            if self._retry is None or self._retry.done():
                self._retry = asyncio.create_task(self._retry_until_written(), name="keepalived-track-retry")
            raise  # the runner logs and counts it

    async def _sync(self) -> None:
        """Make the file hold the current value; every file access in a thread (a dying SD card or
        a hung NFS server delays this sink, never the engine's loop)."""
        async with self._lock:
            value = track_value(self.status())
            if await asyncio.to_thread(self._settle, value):
                self.writes += 1
            self.written = value

    def _settle(self, value: int) -> bool:
        """True when it had to write (in a worker thread)."""
        if value == self.written and os.path.exists(self.path):
            return False
        if self.written is None and read_value(self.path) == value:
            return False  # already right (a reload, a restart): no write, no inotify event
        write_atomically(self.path, value)
        return True

    async def _retry_until_written(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(self.RETRY_AFTER[min(attempt, len(self.RETRY_AFTER) - 1)])
            try:
                await self._sync()
            except TrackFileError as e:
                log.debug("keepalived track file still not written: %s", e)
                continue
            log.info("keepalived track file %s written again (%d) after %d retries", self.path, self.written,
                     attempt + 1)
            return

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(BaseException):
                await self._retry

    def stats(self) -> dict[str, Any]:
        return {"path": self.path, "value": self.written, "writes": self.writes}
