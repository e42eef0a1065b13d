"""Deliver every event to every sink without ever delaying the engine.

Each sink gets its own bounded queue and worker task. :meth:`SinkRunner.publish` only appends to
those queues: it never blocks and never raises, so a dead trap receiver or a slow SD card cannot
delay a failover. A full queue drops its oldest event (counted, logged once per burst). Each
event gets ``sink.timeout`` seconds; a sink that raises or times out is logged and counted, and
the next event is delivered as usual.

Sinks must be asyncio-friendly: ``handle`` must not block the loop (run blocking I/O such as
SQLite through ``asyncio.to_thread``). ``publish`` must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from linkwatch.core.events import Event

log = logging.getLogger(__name__)


class SinkError(ValueError):
    """Invalid sink set-up (duplicate sink names, a bad timeout or queue size)."""


class Sink(Protocol):
    """What the runner needs from a sink."""

    name: str
    timeout: float  # seconds allowed per event
    # optional attribute ``kinds``: the event kinds it wants (a frozenset); absent = every kind

    async def handle(self, event: Event) -> None: ...

    async def close(self) -> None: ...


# --- the runner ----------------------------------------------------------------------------


@dataclass
class _Lane:
    """One sink, its queue and its counters."""

    sink: Sink
    queue: collections.deque[Event]
    kinds: frozenset[str] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    handled: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0
    last_error: str | None = None
    burst_drops: int = 0  # drops since the queue last ran empty (> 0: inside a burst)
    failing: int = 0  # consecutive failures (> 0: inside a failure streak)


class SinkRunner:
    """Fans events out to sinks, each behind its own queue, worker and per-event timeout."""

    def __init__(self, sinks: Sequence[Sink], queue_size: int = 1000):
        if queue_size < 1:
            raise SinkError(f"queue_size must be >= 1, got {queue_size!r}")
        names = [s.name for s in sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SinkError(f"duplicate sink name(s): {dupes}")
        for s in sinks:
            if not s.timeout > 0:
                raise SinkError(f"sink {s.name!r}: timeout must be > 0, got {s.timeout!r}")
        self._lanes = [_Lane(s, collections.deque(maxlen=queue_size), getattr(s, "kinds", None)) for s in sinks]
        self._queue_size = queue_size
        self._started = False
        self._stopping = False
        self._closed = False

    async def start(self, after: SinkRunner | None = None, wait: float = 30.0) -> None:
        """Start one worker per sink (events published before this are kept, up to the limit).

        ``after``: the runner this one replaces (a reload). Each sink here first waits (at most
        ``wait`` seconds) until the sink of the same name there has delivered what it held, so
        one sink never sees events out of order across the swap (a hook told "UP" after "DOWN")."""
        if self._started or self._closed:
            return
        self._started = True
        before = {lane.sink.name: lane.task for lane in (after._lanes if after else ()) if lane.task is not None}
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._worker(lane, before.get(lane.sink.name), wait),
                                            name=f"sink-{lane.sink.name}")

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every sink. Never blocks, never raises."""
        for lane in self._lanes:
            if lane.kinds is not None and event.kind not in lane.kinds:
                continue
            try:
                self._enqueue(lane, event)
            except Exception:  # pragma: no cover - defensive: publish must never raise
                log.exception("sink %s: could not queue event", lane.sink.name)

    def _enqueue(self, lane: _Lane, event: Event) -> None:
        if self._stopping:
            lane.dropped += 1
            return
        if len(lane.queue) >= self._queue_size:
            lane.dropped += 1
            lane.burst_drops += 1
            if lane.burst_drops == 1:
                log.warning(
                    "sink %s: queue full (%d events), dropping the oldest until it catches up",
                    lane.sink.name, self._queue_size,
                )
        lane.queue.append(event)  # a full deque drops its oldest entry itself
        lane.wake.set()

    async def _worker(self, lane: _Lane, predecessor: asyncio.Task | None = None, wait: float = 0.0) -> None:
        if predecessor is not None:
            with contextlib.suppress(BaseException):  # its own failures are its own
                await asyncio.wait_for(asyncio.shield(predecessor), wait)
        while True:
            if not lane.queue:
                if lane.burst_drops:
                    log.info(
                        "sink %s: caught up; %d event(s) dropped in this burst",
                        lane.sink.name, lane.burst_drops,
                    )
                    lane.burst_drops = 0
                if self._stopping:
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            await self._deliver(lane, lane.queue.popleft())

    async def _deliver(self, lane: _Lane, event: Event) -> None:
        sink = lane.sink
        error: str | None = None
        try:
            async with asyncio.timeout(sink.timeout) as deadline:
                await sink.handle(event)
        except asyncio.CancelledError:
            lane.dropped += 1  # stop() gave up on this event
            raise
        except TimeoutError as exc:
            if deadline.expired():
                lane.timed_out += 1
                error = f"timed out after {sink.timeout:g}s on {event.kind} event"
            else:
                lane.failed += 1
                error = f"TimeoutError: {exc}"
        except Exception as exc:
            lane.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.debug("sink %s failed", sink.name, exc_info=True)
        if error is None:
            lane.handled += 1
            if lane.failing:
                log.info("sink %s: recovered after %d failed event(s)", sink.name, lane.failing)
                lane.failing = 0
            return
        lane.last_error = error
        lane.failing += 1
        level = logging.WARNING if lane.failing == 1 else logging.DEBUG
        log.log(level, "sink %s: %s", sink.name, error)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop taking events, deliver what is queued within ``drain_timeout``, cancel the rest,
        then close every sink (each within its timeout)."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for lane in self._lanes:
            lane.wake.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(drain_timeout, 0.0))
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes:
            if lane.queue:
                log.warning(
                    "sink %s: stopped with %d undelivered event(s)", lane.sink.name, len(lane.queue)
                )
                lane.dropped += len(lane.queue)
                lane.queue.clear()
            await self._close(lane.sink)

    @staticmethod
    async def _close(sink: Sink) -> None:
        try:
            async with asyncio.timeout(sink.timeout):
                await sink.close()
        except Exception as exc:
            log.warning("sink %s: close failed: %s: %s", sink.name, type(exc).__name__, exc)

    def sink(self, name: str) -> Sink | None:
        """The sink called ``name`` (None: no such sink)."""
        return next((lane.sink for lane in self._lanes if lane.sink.name == name), None)

    def stats(self) -> dict[str, dict]:
        """Per sink: handled, failed, timed_out, dropped, last_error, queued, plus what the sink's
        own ``stats()`` reports (if it has one) under ``detail``."""
        out: dict[str, dict] = {}
        for lane in self._lanes:
            out[lane.sink.name] = {
                "handled": lane.handled,
                "failed": lane.failed,
                "timed_out": lane.timed_out,
                "dropped": lane.dropped,
                "last_error": lane.last_error,
                "queued": len(lane.queue),
            }
            own = getattr(lane.sink, "stats", None)
            if callable(own):
                try:
                    out[lane.sink.name]["detail"] = own()
                except Exception as exc:  # status must answer even if a sink's stats break
                    out[lane.sink.name]["detail"] = {"error": f"{type(exc).__name__}: {exc}"}
        return out
