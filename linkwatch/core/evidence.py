"""Evidence from the traffic itself: an uplink's interface counters, read every few tens of ms.
Pure: counters and ``now`` in, new :class:`Traffic` and verdicts out.

* Packets coming in are proof of life: a probe round that timed out while the interface kept
  receiving is *slow*, not failed (a saturated link with a deep modem queue answers late).
* Packets going out while nothing comes back is suspicion: the engine confirms it at once with a
  burst of probes and fails over when the burst gets no answer either.
* While the LAN's own traffic keeps coming in, the active uplink needs fewer probes.
* The same counters give each uplink's traffic this month, for a metered link's quota.
"""

from __future__ import annotations

import bisect
import datetime
import functools
from dataclasses import dataclass, replace
from operator import attrgetter

from linkwatch.core.inputs import LinkCounters

KEEP = 3.0  # seconds of counter deltas kept (covers every window below)
PROOF_MIN_RX = 8  # unicast packets received while a round ran (and the LAN sent) that prove the uplink alive
SUSPECT_EXTRA_TX = 2  # packets sent beyond what the probes themselves send, to call silence suspicious
PROVEN_WINDOW = 2.0  # seconds over which the LAN's traffic proves the active uplink works ...
PROVEN_MIN_RX = 20  # ... when this many packets came in (10 per second) ...
PROVEN_MIN_TX = 12  # ... and this many went out: enough for a silence to show (see silent())
MAX_SUSPECT_WINDOW = 1.0  # sparse traffic widens the window that makes silence suspicious, up to this
SENDING_TX = 20  # packets out in the last second: the LAN is sending (the counters are read fast)
IDLE_READ = 0.25  # seconds between reads of an active uplink's counters while the LAN is idle


@dataclass(frozen=True)
class Delta:
    """What the counters moved between two reads ``(start, end]``."""

    start: float
    end: float
    rx_packets: int  # unicast: multicast/broadcast noise (IPTV, a cable segment's ARP) proves nothing
    tx_packets: int
    # Running totals through this read (since the counters were first seen): what a stretch of
    # reads carried is a subtraction, not a sum (the active uplink is read 17 times a second).
    rx_total: int = 0
    tx_total: int = 0


_END = attrgetter("end")
_START = attrgetter("start")


@dataclass(frozen=True)
class Traffic:
    """The counters of one uplink's interface as the core has seen them."""

    last: LinkCounters | None = None
    last_at: float | None = None
    deltas: tuple[Delta, ...] = ()  # the last KEEP seconds
    month: str = ""  # "YYYY-MM" (local time) that month_bytes counts
    month_bytes: int = 0  # received + sent this month (the part the engine saw)
    period_rx_bytes: int = 0  # since the last history period
    period_tx_bytes: int = 0


def _grown(new: int, old: int) -> int:
    """How much a counter grew; a counter that went down was reset (the interface came back)."""
    return new - old if new >= old else new


def observe(tr: Traffic, c: LinkCounters, mono: float, month: str) -> Traffic:
    """``tr`` after reading ``c`` at ``mono`` (wall-clock month ``month``)."""
    if tr.month != month:
        tr = replace(tr, month=month, month_bytes=0)
    if tr.last is None or tr.last_at is None:
        return replace(tr, last=c, last_at=mono)
    rx_bytes = _grown(c.rx_bytes, tr.last.rx_bytes)
    tx_bytes = _grown(c.tx_bytes, tr.last.tx_bytes)
    rx = max(_grown(c.rx_packets, tr.last.rx_packets) - _grown(c.rx_multicast, tr.last.rx_multicast), 0)
    tx = _grown(c.tx_packets, tr.last.tx_packets)
    prev = tr.deltas[-1] if tr.deltas else None
    delta = Delta(tr.last_at, mono, rx, tx, rx + (prev.rx_total if prev else 0), tx + (prev.tx_total if prev else 0))
    deltas = tr.deltas[bisect.bisect_right(tr.deltas, mono - KEEP, key=_END):] + (delta,)
    return replace(tr, last=c, last_at=mono, deltas=deltas, month_bytes=tr.month_bytes + rx_bytes + tx_bytes,
                   period_rx_bytes=tr.period_rx_bytes + rx_bytes, period_tx_bytes=tr.period_tx_bytes + tx_bytes)


def forget(tr: Traffic) -> Traffic:
    """The interface went away or was renumbered: the next read starts afresh (month kept)."""
    return replace(tr, last=None, last_at=None, deltas=())


def _from(deltas: tuple[Delta, ...], i: int) -> tuple[int, int]:
    """(rx, tx) packets of ``deltas[i:]``."""
    if i >= len(deltas):
        return 0, 0
    first, last = deltas[i], deltas[-1]
    return (last.rx_total - first.rx_total + first.rx_packets, last.tx_total - first.tx_total + first.tx_packets)


def since(tr: Traffic, t: float) -> tuple[int, int]:
    """(rx, tx) packets in reads that ended after ``t`` (some may have come a little before ``t``)."""
    return _from(tr.deltas, bisect.bisect_right(tr.deltas, t, key=_END))


def after(tr: Traffic, t: float) -> tuple[int, int]:
    """(rx, tx) packets surely moved after ``t``: only reads that began at ``t`` or later count."""
    return _from(tr.deltas, bisect.bisect_left(tr.deltas, t, key=_START))


def rx_since(tr: Traffic, t: float) -> int:
    """Packets received in reads that ended after ``t``."""
    return since(tr, t)[0]


def tx_since(tr: Traffic, t: float) -> int:
    """Packets sent in reads that ended after ``t``."""
    return since(tr, t)[1]


def rx_after(tr: Traffic, t: float) -> int:
    """Packets surely received after ``t``."""
    return after(tr, t)[0]


def tx_after(tr: Traffic, t: float) -> int:
    """Packets surely sent after ``t``."""
    return after(tr, t)[1]


def last_rx(tr: Traffic) -> float | None:
    """The end of the last read in which a packet came in (None: none in the last KEEP seconds)."""
    return next((d.end for d in reversed(tr.deltas) if d.rx_packets), None)


def silent(tr: Traffic, mono: float, window: float, probe_packets: int) -> bool:
    """Packets kept leaving for the last ``window`` seconds (more than ``probe_packets``, what the
    probes themselves may send in it) and not one came back: suspicion. Sparse traffic widens the
    window until it should hold enough packets (at most MAX_SUSPECT_WINDOW)."""
    rate = tx_since(tr, mono - PROVEN_WINDOW) / PROVEN_WINDOW
    if rate <= 0:
        return False
    window = min(max(window, (probe_packets + SUSPECT_EXTRA_TX) / rate), MAX_SUSPECT_WINDOW)
    i = bisect.bisect_right(tr.deltas, mono - window, key=_END)
    if i >= len(tr.deltas) or tr.deltas[i].start > mono - window:
        return False  # the reads do not cover the whole window yet
    rx, tx = _from(tr.deltas, i)
    return rx == 0 and tx >= probe_packets + SUSPECT_EXTRA_TX


def proven(tr: Traffic, mono: float, probe_tx: int = 0, probe_rx: int = 0) -> bool:
    """The LAN's own traffic keeps coming in (and going out, so that a silence would show at
    once): the uplink works without asking. ``probe_tx`` / ``probe_rx``: what the probes
    themselves sent and got back in the last PROVEN_WINDOW; they prove nothing."""
    start = mono - PROVEN_WINDOW
    rx, tx = since(tr, start)
    return rx - probe_rx >= PROVEN_MIN_RX and tx - probe_tx >= PROVEN_MIN_TX and tr.deltas[0].start <= start


def sending(tr: Traffic, mono: float, probe_tx: int = 0) -> bool:
    """The LAN sends through the uplink now: read the counters fast. ``probe_tx``: what the probes
    themselves sent in the last second; they are not the LAN."""
    return tx_since(tr, mono - 1.0) - probe_tx >= SENDING_TX


def take_period(tr: Traffic) -> tuple[Traffic, int, int]:
    """(traffic with the period's byte counts reset, rx bytes, tx bytes of the period)."""
    return replace(tr, period_rx_bytes=0, period_tx_bytes=0), tr.period_rx_bytes, tr.period_tx_bytes


def month_of(wall: float) -> str:
    """The calendar month (local time) a wall-clock time falls in: "2026-12" (to the minute)."""
    return _month_of_minute(int(wall // 60))


@functools.lru_cache(maxsize=8)
def _month_of_minute(minute: int) -> str:
    return datetime.datetime.fromtimestamp(minute * 60).strftime("%Y-%m")
