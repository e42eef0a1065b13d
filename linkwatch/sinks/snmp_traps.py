"""SNMP notifications: a sink that sends LINKWATCH-MIB traps and informs to every configured receiver.

Every ``uplink_state``, ``active_changed``, ``dampened`` (lwUplinkDampenedChange) and ``quota``
(lwUplinkQuotaReached) event that :func:`linkwatch.snmp.mib.notification_for` turns into a
notification goes to every ``[[snmp.traps]]`` receiver at once, each with
``sysUpTime.0`` (time since this sink started, TimeTicks), ``snmpTrapOID.0`` and the notification's
objects. v2c uses the receiver's community; v3 uses the USM user of ``[snmp.users]`` at the
receiver's security level, with this engine's ID (:func:`linkwatch.snmp.engine_id`) for traps (the
receiver must be configured with it) and the receiver's discovered engine ID for informs. An
uplink notification's lwActiveUplinks is the active set after the change (see :meth:`TrapSink.handle`).

Nothing here waits for the network: :meth:`TrapSink.handle` decides and hands every send to a task
of its own with its own deadline (a trap: handed to the socket; an inform: ``timeout`` x
(``retries`` + 1) plus a margin). A receiver has at most :data:`IN_FLIGHT_LIMIT` sends pending; more
are dropped and counted, so a dead inform receiver costs the engine nothing and never delays the
other receivers or the next events.

The storm rule (:class:`StormGate`), per uplink (every notification about it: state, dampening,
quota) and once more for traffic moves: a window starts at
the first notification after the previous window ended and lasts ``trap_window`` seconds; the
first ``trap_burst`` notifications of a window are sent, later ones are held back and counted
(:meth:`TrapSink.suppressed`). When a window that held some back ends (a timer, not the next
event, notices), ONE summary follows: for an uplink ``lwUplinkFlapping`` with its current state
and its counters lwUplinkTransitions and lwUplinkSuppressedTraps (state changes seen and
notifications held back since the start, as the agent shows them: this window's share is the
increase); for traffic moves ``lwActiveChanged`` with the current active set. So a receiver gets
at most ``trap_burst + 1`` notifications per key and window.

Communities and keys never appear in :meth:`TrapSink.stats` or in a log line (error texts are
scrubbed of them too). ``stats()["handover_ms"]`` is how long notifications waited in the engine:
from the event's ``at`` to the start of their sends (over the last :data:`HANDOVER_KEPT`). pysnmp is
imported (off the event loop) only when the first notification is sent.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from linkwatch.config import SnmpConfig, TrapReceiverConfig
from linkwatch.core.events import ActiveChanged, Event, QuotaReached, UplinkDampened, UplinkStateChanged
from linkwatch.core.states import State
from linkwatch.snmp.mib import Layout, Notification, flapping, notification_for
from linkwatch.snmp.sender import (  # noqa: F401 (the sink's API: tests and the benchmark import them here)
    SNMP_TRAP_OID,
    SYS_UPTIME,
    PysnmpSender,
    Sender,
    TrapError,
    describe,
    notification_varbinds,
)

log = logging.getLogger(__name__)

ACTIVE_KEY = ("active",)  # the storm budget of traffic moves (a tuple: never equal to an uplink name)
IN_FLIGHT_LIMIT = 16  # sends pending per receiver; more are dropped (counted)
TRAP_DEADLINE = 5.0  # seconds for a trap to be handed to the socket (includes the one-time set-up)
INFORM_MARGIN = 2.0  # seconds added to an inform's timeout x tries (timer resolution, set-up)
CLOSE_GRACE = 0.5  # seconds close() lets pending sends finish before cancelling them
HANDOVER_KEPT = 100  # the last sends whose delay after their event stats() summarizes


# --- the storm rule (pure: the caller passes the time) ---------------------------------------------


@dataclass(frozen=True)
class Held:
    """A storm window that ended with ``held`` notifications held back for ``key``."""

    key: Hashable
    held: int
    start: float
    end: float


@dataclass
class _Window:
    start: float
    sent: int = 0
    held: int = 0


class StormGate:
    """At most ``burst`` notifications per key in a window of ``window`` seconds.

    A key's window starts at its first notification after the previous window ended. ``offer``
    says whether to send now (True) or hold back (False, counted); ``expire`` returns the windows
    that have ended by ``now`` with something held back, each exactly once (the caller sends one
    summary for each); ``next_end`` is when the next open window ends (arm a timer for it)."""

    def __init__(self, burst: int, window: float):
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise TrapError(f"trap_burst must be an integer >= 1, got {burst!r}")
        if not isinstance(window, (int, float)) or not window > 0:
            raise TrapError(f"trap_window must be > 0 seconds, got {window!r}")
        self.burst = burst
        self.window = float(window)
        self._open: dict[Hashable, _Window] = {}
        self._due: list[Held] = []  # ended windows noticed by offer() before expire() ran
        self._suppressed: dict[Hashable, int] = {}

    def offer(self, key: Hashable, now: float) -> bool:
        """True: send it now. False: held back (counted in :meth:`suppressed`)."""
        w = self._open.get(key)
        if w is not None and now >= w.start + self.window:
            self._close(key, w)
            w = None
        if w is None:
            w = self._open[key] = _Window(start=now)
        if w.sent < self.burst:
            w.sent += 1
            return True
        w.held += 1
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False

    def expire(self, now: float) -> list[Held]:
        """Windows ended by ``now`` that held something back, oldest first (each returned once)."""
        for key, w in list(self._open.items()):
            if now >= w.start + self.window:
                self._close(key, w)
        due, self._due = sorted(self._due, key=lambda h: h.end), []
        return due

    def _close(self, key: Hashable, w: _Window) -> None:
        del self._open[key]
        if w.held:
            self._due.append(Held(key, w.held, w.start, w.start + self.window))

    def next_end(self) -> float | None:
        """When the earliest open window ends (None: no window is open and nothing is due)."""
        if self._due:
            return min(h.end for h in self._due)
        return min((w.start + self.window for w in self._open.values()), default=None)

    def holding(self, key: Hashable) -> int:
        """Notifications held back so far in ``key``'s open window."""
        w = self._open.get(key)
        return w.held if w is not None else 0

    def suppressed(self) -> dict[Hashable, int]:
        """Notifications held back since the start, per key."""
        return dict(self._suppressed)


# --- small pure helpers ----------------------------------------------------------------------------


def uptime_ticks(seconds: float) -> int:
    """sysUpTime of ``seconds``: hundredths of a second, wrapping like TimeTicks."""
    return max(0, int(seconds * 100)) & 0xFFFFFFFF


def secrets_of(cfg: SnmpConfig) -> list[str]:
    """Every community and key in ``cfg`` (to scrub them from error texts)."""
    found = [r.community for r in cfg.traps] + [cfg.agent.community]
    for u in cfg.users:
        found += [u.auth_key, u.priv_key]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for s in secrets:
        text = text.replace(s, "***")
    return text


def send_deadline(r: TrapReceiverConfig) -> float:
    """How long one send to ``r`` may take before it counts as failed."""
    if r.kind == "inform":
        return r.timeout * (r.retries + 1) + INFORM_MARGIN
    return TRAP_DEADLINE


# --- the sink ------------------------------------------------------------------------------------


@dataclass
class _Receiver:
    """One receiver's counters."""

    cfg: TrapReceiverConfig
    sent: int = 0  # notifications handed to the sender
    acknowledged: int = 0  # informs answered
    failed: int = 0
    dropped: int = 0  # not sent: too many sends pending
    in_flight: int = 0
    last_error: str | None = None
    failing: int = 0  # consecutive failures (> 0: inside a failure streak)
    dropping: int = 0  # consecutive drops

    def stats(self) -> dict:
        r = self.cfg
        return {"host": r.host, "port": r.port, "version": r.version, "kind": r.kind,
                "level": r.level if r.version == "3" else None, "sent": self.sent,
                "acknowledged": self.acknowledged, "failed": self.failed, "dropped": self.dropped,
                "in_flight": self.in_flight, "last_error": self.last_error}


@dataclass
class _Uplink:
    index: int  # row index in LINKWATCH-MIB (1 = first in the config)
    state: str = State.INIT.value
    transitions: int = 0  # state changes seen (the engine's lwUplinkTransitions counts the same)
    reported: str | None = None  # the state the last notification about this uplink carried


@dataclass
class _Totals:
    notifications: int = 0  # notifications sent (each to every receiver)
    summaries: int = 0  # of which storm summaries
    last_summary: dict = field(default_factory=dict)


class TrapSink:
    """The ``snmp-traps`` sink (see the module docstring)."""

    def __init__(self, cfg: SnmpConfig, uplinks: Sequence[str], sender: Sender | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = "snmp-traps"
        self.kinds = frozenset({"uplink_state", "active_changed", "dampened", "quota"})
        self.timeout = 1.0  # handle() decides and starts tasks; it never waits for the network
        self.cfg = cfg
        self.layout = Layout.from_text(cfg.base_oid)
        self._clock = clock
        self._started = clock()
        self._gate = StormGate(cfg.trap_burst, cfg.trap_window)
        self._uplinks = {name: _Uplink(i) for i, name in enumerate(uplinks, start=1)}
        self._active: tuple[str, ...] = ()
        self._reported_active: tuple[str, ...] = ()  # the active set the last lwActiveChanged carried
        self._receivers = [_Receiver(r) for r in cfg.traps]
        self._sender: Sender = sender if sender is not None else PysnmpSender(cfg)
        self._secrets = secrets_of(cfg)
        self._tasks: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._totals = _Totals()
        self._handover: deque[float] = deque(maxlen=HANDOVER_KEPT)  # ms from an event to its sends
        self._closed = False

    # -- events -------------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        """Decide, count and start the sends; returns at once."""
        if self._closed:
            return
        now = self._clock()
        self._send_summaries(now)
        u = None
        if isinstance(event, ActiveChanged):
            self._active = tuple(event.new)
            key, index = ACTIVE_KEY, 0
        elif isinstance(event, (UplinkStateChanged, UplinkDampened, QuotaReached)):
            u = self._uplinks.get(event.uplink)
            if u is None:
                log.debug("snmp traps: event for unknown uplink %r ignored", event.uplink)
                return
            if isinstance(event, UplinkStateChanged):
                u.state = event.new
                u.transitions += 1
            key, index = event.uplink, u.index
        else:
            return
        reported = u.reported if u is not None else None
        state = u.state if u is not None else None  # lwUplinkDampenedChange carries the state as it is now
        if notification_for(self.layout, event, index, self._active, reported, state) is None:
            return
        if self._gate.offer(key, now):
            if key == ACTIVE_KEY:
                self._reported_active = self._active
            elif isinstance(event, UplinkStateChanged):
                u.reported = event.new
            # Built and sent one loop step later: the engine publishes the ActiveChanged that an
            # uplink's failure causes in the same step as the UplinkStateChanged, and this worker
            # handles both before the loop turns, so lwActiveUplinks in lwUplinkDown is the active
            # set after the change (as LINKWATCH-MIB says). call_soon keeps the events' order.
            asyncio.get_running_loop().call_soon(self._emit, event, index, reported, state)
        elif self._gate.holding(key) == 1:
            log.info("snmp traps: storm limit for %s (%d in %gs) reached; holding back until the window ends",
                     _key_name(key), self._gate.burst, self._gate.window)
        self._arm_timer()

    def _emit(self, event: Event, index: int, reported: str | None, state: str | None) -> None:
        if self._closed:
            return
        notification = notification_for(self.layout, event, index, self._active, reported, state)
        if notification is not None:
            self._dispatch(notification, event.at)

    def _send_summaries(self, now: float) -> None:
        for held in self._gate.expire(now):
            if held.key == ACTIVE_KEY:
                ev = ActiveChanged(time.time(), now, self._reported_active, self._active,
                                   f"storm summary: {held.held} traffic move(s) held back")
                notification = notification_for(self.layout, ev, 0, self._active)
                self._reported_active = self._active
            else:
                u = self._uplinks[held.key]  # the counters "since the engine started", as the agent shows them
                notification = flapping(self.layout, held.key, u.index, u.state, u.transitions,
                                        self._gate.suppressed().get(held.key, 0))
            if notification is None:  # pragma: no cover - an ActiveChanged always has one
                continue
            log.info("snmp traps: %s: %d notification(s) held back in %gs; sending %s", _key_name(held.key),
                     held.held, self._gate.window, notification.name)
            self._totals.summaries += 1
            self._totals.last_summary = {"key": _key_name(held.key), "held": held.held,
                                         "notification": notification.name}
            self._dispatch(notification)

    def _arm_timer(self) -> None:
        """Wake up when the next storm window ends, so a summary never waits for the next event."""
        end = self._gate.next_end()
        if end == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, end
        if end is not None and not self._closed:
            delay = max(0.0, end - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        if self._closed:
            return
        try:
            self._send_summaries(self._clock())
        except Exception:  # a timer callback has nobody to raise to
            log.exception("snmp traps: storm summary failed")
        self._arm_timer()

    # -- sending ------------------------------------------------------------------------------

    def _dispatch(self, notification: Notification, event_at: float | None = None) -> None:
        self._totals.notifications += 1
        ticks = uptime_ticks(self._clock() - self._started)
        for i, rx in enumerate(self._receivers):
            if rx.in_flight >= IN_FLIGHT_LIMIT:
                rx.dropped += 1
                rx.dropping += 1
                if rx.dropping == 1:
                    log.warning("snmp receiver %s: %d sends pending, dropping notifications until one finishes",
                                describe(rx.cfg), rx.in_flight)
                continue
            rx.dropping = 0
            rx.sent += 1
            rx.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(i, rx, notification, ticks, event_at),
                                                          name=f"snmp-{notification.name}-{i}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, i: int, rx: _Receiver, notification: Notification, ticks: int,
                    event_at: float | None) -> None:
        deadline = send_deadline(rx.cfg)
        error: str | None = None
        if event_at is not None:
            self._handover.append((time.time() - event_at) * 1000)
        try:
            async with asyncio.timeout(deadline):
                await self._sender.send(i, notification, ticks)
        except TimeoutError:
            error = f"{notification.name}: no answer within {deadline:g}s"
        except asyncio.CancelledError:
            error = f"{notification.name}: cancelled (sink closed)"
            raise
        except TrapError as e:
            error = f"{notification.name}: {e}"
        except Exception as e:
            error = f"{notification.name}: {type(e).__name__}: {e}"
        finally:
            rx.in_flight -= 1
            self._account(rx, scrub(error, self._secrets) if error else None)

    def _account(self, rx: _Receiver, error: str | None) -> None:
        if error is None:
            if rx.cfg.kind == "inform":
                rx.acknowledged += 1
            if rx.failing:
                log.info("snmp receiver %s: recovered after %d failed notification(s)", describe(rx.cfg), rx.failing)
                rx.failing = 0
            return
        rx.failed += 1
        rx.failing += 1
        rx.last_error = error
        log.log(logging.WARNING if rx.failing == 1 else logging.DEBUG, "snmp receiver %s: %s",
                describe(rx.cfg), error)

    # -- the rest of the sink protocol ----------------------------------------------------------

    async def close(self) -> None:
        """Stop the timer, give pending sends :data:`CLOSE_GRACE` seconds, cancel the rest."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        pending = list(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=CLOSE_GRACE)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._sender.close()

    def suppressed(self) -> dict[str, int]:
        """Notifications held back by the storm limit, per uplink (every configured uplink)."""
        held = self._gate.suppressed()
        return {name: held.get(name, 0) for name in self._uplinks}

    def stats(self) -> dict:
        """Counters per receiver and in total (never a community or a key)."""
        rxs = [r.stats() for r in self._receivers]
        return {
            "receivers": rxs,
            "notifications": self._totals.notifications,
            "summaries": self._totals.summaries,
            "last_summary": dict(self._totals.last_summary) or None,
            **{k: sum(r[k] for r in rxs) for k in ("sent", "acknowledged", "failed", "dropped", "in_flight")},
            "suppressed": self.suppressed(),
            "suppressed_active": self._gate.suppressed().get(ACTIVE_KEY, 0),
            "trap_burst": self._gate.burst,
            "trap_window": self._gate.window,
            "handover_ms": handover_summary(self._handover),
        }


def handover_summary(delays_ms: Iterable[float]) -> dict | None:
    """Median and maximum of the delays between events and the start of their sends (wall clock)."""
    values = list(delays_ms)
    if not values:
        return None
    return {"n": len(values), "last": round(values[-1], 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def _key_name(key: Hashable) -> str:
    return "traffic moves" if key == ACTIVE_KEY else f"uplink {key}"
