"""Uplink health: window statistics and the state machine. Pure: no clock, no I/O.

Everything here takes data and ``now`` (monotonic seconds) and returns new data. The engine owns
the clock and the sockets; tests drive these functions with made-up time.

States (DESIGN.md): INIT, UP, FALLING, DOWN, RISING, DEGRADED, DISABLED.

* Reachability comes from rounds: one round sends to every target of the uplink; it is good when
  at least ``min_targets`` answered. ``down_after`` failed rounds in a row take an uplink DOWN
  (through FALLING), ``up_after`` good rounds in a row bring it back UP (through RISING).
* Carrier loss, a missing address or a missing gateway take it DOWN at once, with that reason.
* Quality comes from the statistics window (loss %, RTT): separate thresholds to degrade and to
  recover, each of which must hold for ``quality_hold`` before the state changes, so a link on the
  boundary does not flap. DEGRADED uplinks still work; policy prefers healthy ones.
* DISABLED is the admin's: only ``enable`` leaves it (to INIT).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from linkwatch.core.states import State


# The transition table, as data. Anything else is a bug and raises IllegalTransition.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.INIT: frozenset({State.UP, State.DEGRADED, State.DOWN, State.DISABLED}),
    State.UP: frozenset({State.FALLING, State.DOWN, State.DEGRADED, State.DISABLED}),
    State.FALLING: frozenset({State.UP, State.DEGRADED, State.DOWN, State.DISABLED}),
    State.DEGRADED: frozenset({State.UP, State.FALLING, State.DOWN, State.DISABLED}),
    State.DOWN: frozenset({State.RISING, State.UP, State.DEGRADED, State.DISABLED}),
    State.RISING: frozenset({State.UP, State.DEGRADED, State.DOWN, State.DISABLED}),
    State.DISABLED: frozenset({State.INIT}),
}

MIN_QUALITY_SAMPLES = 10  # fewer attempts than this in the window say nothing about quality


class IllegalTransition(ValueError):
    """A state change the transition table does not allow."""


@dataclass(frozen=True)
class HealthParams:
    down_after: int = 3
    up_after: int = 5
    min_targets: int = 1
    quality_window: float = 10.0
    loss_degraded: float = 40.0
    loss_recovered: float = 20.0
    rtt_degraded: float | None = None  # seconds
    rtt_recovered: float | None = None
    quality_hold: float = 2.0


@dataclass(frozen=True)
class Sample:
    """What one probe saw in one round."""

    at: float
    target: str
    sent: int  # attempts whose fate is known
    lost: int
    rtt: float | None  # seconds, when answered (or, in a round that timed out, of a late reply)
    late: int = 0  # replies to earlier rounds' lost attempts that came late: they were not lost


@dataclass(frozen=True)
class Stats:
    loss_pct: float | None
    rtt_ms: float | None
    jitter_ms: float | None
    attempts: int


EMPTY_STATS = Stats(None, None, None, 0)


def window_stats(samples: Iterable[Sample], now: float, window: float, since: float = -math.inf) -> Stats:
    """Loss %, mean RTT and jitter over the samples in ``[max(now - window, since), now]``.

    Jitter is the mean absolute difference between successive RTTs *of the same target*
    (targets differ in base RTT; mixing them would look like jitter).
    """
    start = max(now - window, since)
    sent = lost = 0
    rtts: list[float] = []
    last_by_target: dict[str, float] = {}
    diffs: list[float] = []
    for s in samples:
        if s.at < start or s.at > now:
            continue
        sent += s.sent
        lost += s.lost - s.late
        if s.rtt is not None:
            rtts.append(s.rtt)
            prev = last_by_target.get(s.target)
            if prev is not None:
                diffs.append(abs(s.rtt - prev))
            last_by_target[s.target] = s.rtt
    if sent == 0:
        return EMPTY_STATS
    return Stats(
        loss_pct=100.0 * max(lost, 0) / sent,
        rtt_ms=1000.0 * sum(rtts) / len(rtts) if rtts else None,
        jitter_ms=1000.0 * sum(diffs) / len(diffs) if diffs else None,
        attempts=sent,
    )


@dataclass(frozen=True)
class Summary:
    """Probe results of one period, for the history: counts and RTT in milliseconds."""

    sent: int
    lost: int
    loss_pct: float | None  # None: nothing was sent (link down, probes not open)
    rtt_avg_ms: float | None
    rtt_min_ms: float | None
    rtt_max_ms: float | None
    jitter_ms: float | None


@dataclass(frozen=True)
class Tally:
    """Running sums of one history period, one sample at a time: :meth:`summary` gives what
    :func:`window_stats` over all of the period's samples would, plus min/max RTT, without
    keeping the samples."""

    sent: int = 0
    lost: int = 0
    rtt_sum: float = 0.0
    rtt_count: int = 0
    rtt_min: float | None = None
    rtt_max: float | None = None
    jitter_sum: float = 0.0
    jitter_count: int = 0
    last_rtt: tuple[tuple[str, float], ...] = ()  # (target, rtt) of each target's last answer

    def add(self, s: Sample) -> Tally:
        if s.rtt is None:
            return replace(self, sent=self.sent + s.sent, lost=self.lost + s.lost - s.late)
        last = dict(self.last_rtt)
        prev = last.get(s.target)
        last[s.target] = s.rtt
        return Tally(
            sent=self.sent + s.sent, lost=self.lost + s.lost - s.late, rtt_sum=self.rtt_sum + s.rtt,
            rtt_count=self.rtt_count + 1,
            rtt_min=s.rtt if self.rtt_min is None else min(self.rtt_min, s.rtt),
            rtt_max=s.rtt if self.rtt_max is None else max(self.rtt_max, s.rtt),
            jitter_sum=self.jitter_sum + (abs(s.rtt - prev) if prev is not None else 0.0),
            jitter_count=self.jitter_count + (prev is not None), last_rtt=tuple(last.items()),
        )

    def summary(self) -> Summary:
        known = self.sent > 0  # as window_stats: nothing sent says nothing
        return Summary(
            sent=self.sent, lost=max(self.lost, 0), loss_pct=100.0 * max(self.lost, 0) / self.sent if known else None,
            rtt_avg_ms=1000.0 * self.rtt_sum / self.rtt_count if known and self.rtt_count else None,
            rtt_min_ms=None if self.rtt_min is None else 1000.0 * self.rtt_min,
            rtt_max_ms=None if self.rtt_max is None else 1000.0 * self.rtt_max,
            jitter_ms=1000.0 * self.jitter_sum / self.jitter_count if known and self.jitter_count else None,
        )


def period_summary(samples: Iterable[Sample]) -> Summary:
    """Sum up every sample given (one history period): the window statistics plus min/max RTT."""
    tally = Tally()
    for s in samples:
        tally = tally.add(s)
    return tally.summary()


def quality_verdict(stats: Stats, p: HealthParams) -> tuple[bool, bool, str]:
    """(bad, good, why) for the window: bad past the degrade thresholds, good under the recover ones.

    Between the two thresholds neither holds: the current quality stands (hysteresis).
    """
    if stats.attempts < MIN_QUALITY_SAMPLES or stats.loss_pct is None:
        return False, False, "too few samples"
    loss = stats.loss_pct
    rtt = None if stats.rtt_ms is None else stats.rtt_ms / 1000.0
    if loss >= p.loss_degraded:
        return True, False, f"loss {loss:.0f}% >= {p.loss_degraded:g}%"
    if p.rtt_degraded is not None and rtt is not None and rtt >= p.rtt_degraded:
        return True, False, f"rtt {rtt * 1000:.0f}ms >= {p.rtt_degraded * 1000:g}ms"
    good = loss <= p.loss_recovered and (p.rtt_recovered is None or rtt is None or rtt <= p.rtt_recovered)
    return False, good, f"loss {loss:.0f}%" + ("" if rtt is None else f" rtt {rtt * 1000:.0f}ms")


@dataclass(frozen=True)
class Health:
    """One uplink's health. Immutable: every function returns a new one."""

    state: State = State.INIT
    since: float = 0.0
    reason: str = "starting"
    good_rounds: int = 0  # in a row
    failed_rounds: int = 0  # in a row
    link_ok: bool = True  # carrier, address and gateway present
    quality_bad: bool = False
    bad_since: float | None = None  # the degrade condition has held since (pending quality_hold)
    good_since: float | None = None  # the recover condition has held since
    quality_since: float = -math.inf  # statistics only count samples after this (last time it came UP)


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str
    at: float


def _move(h: Health, new: State, reason: str, now: float, **changes) -> tuple[Health, list[Transition]]:
    if new == h.state:
        return replace(h, reason=reason, **changes), []
    if new not in TRANSITIONS[h.state]:
        raise IllegalTransition(f"{h.state} -> {new} is not allowed ({reason})")
    return replace(h, state=new, since=now, reason=reason, **changes), [Transition(h.state, new, reason, now)]


def _working_state(h: Health) -> State:
    return State.DEGRADED if h.quality_bad else State.UP


def on_round(h: Health, answered: int, targets: int, stats: Stats, p: HealthParams, now: float,
             slow: str | None = None, late_now: bool = False) -> tuple[Health, list[Transition]]:
    """Feed one finished round: ``answered`` of ``targets`` targets answered in time.

    ``stats`` are the window statistics including this round (see :func:`window_stats`,
    computed from ``h.quality_since``). ``slow`` says why a round that timed out is not a failure
    (late replies, traffic arriving: the uplink is alive, only slow): for a working uplink it counts
    neither way, and one FALLING on such a round is UP again; an uplink starting (INIT) or coming
    back (DOWN, RISING) counts it as a good round when the round itself got late replies
    (``late_now``), so a path longer than the timeout still settles, and a single late reply does
    not carry a dead uplink's silent rounds.
    """
    if h.state == State.DISABLED or not h.link_ok:
        return h, []
    need = min(p.min_targets, targets)
    good = targets > 0 and answered >= need
    detail = f"{answered}/{targets} targets answered"
    h = _track_quality(h, stats, p, now)
    if not good and slow is not None and h.state in (State.INIT, State.DOWN, State.RISING):
        if late_now:  # its own late replies are life: a long path settles
            good, detail = True, f"slow, not dead: {slow}"
        else:
            slow = None  # a dead uplink's silence is not excused by what came before
    if good:
        h = replace(h, good_rounds=h.good_rounds + 1, failed_rounds=0)
        if h.state in (State.INIT, State.UP, State.DEGRADED, State.FALLING):
            return _settle_quality(h, stats, p, now, "first good round" if h.state == State.INIT else detail)
        if h.state == State.DOWN:
            if p.up_after <= 1:
                return _came_up(h, p, now, "1 good round")
            return _move(h, State.RISING, f"1/{p.up_after} good rounds", now)
        if h.state == State.RISING:
            if h.good_rounds >= p.up_after:
                return _came_up(h, p, now, f"{h.good_rounds} good rounds")
            return _move(h, State.RISING, f"{h.good_rounds}/{p.up_after} good rounds", now)
        return h, []
    if slow is not None:
        h = replace(h, failed_rounds=0)
        if h.state == State.FALLING:
            return _settle_quality(h, stats, p, now, f"slow, not dead: {slow}")
        return h, []
    h = replace(h, failed_rounds=h.failed_rounds + 1, good_rounds=0)
    if h.failed_rounds >= p.down_after:
        if h.state == State.DOWN:
            return replace(h, reason=f"{h.failed_rounds} failed rounds"), []
        return _move(h, State.DOWN, f"{h.failed_rounds} failed rounds ({detail})", now)
    if h.state in (State.UP, State.DEGRADED, State.FALLING):
        return _move(h, State.FALLING, f"{h.failed_rounds}/{p.down_after} failed rounds ({detail})", now)
    if h.state == State.RISING:
        return _move(h, State.DOWN, f"failed round while rising ({detail})", now)
    return h, []  # INIT counting towards down_after, or DOWN staying down


def _came_up(h: Health, p: HealthParams, now: float, reason: str) -> tuple[Health, list[Transition]]:
    # Samples from before it came back say nothing about the link now: start a fresh window.
    return _move(h, State.UP, reason, now, quality_bad=False, bad_since=None, good_since=None, quality_since=now)


def _track_quality(h: Health, stats: Stats, p: HealthParams, now: float) -> Health:
    bad, good, _ = quality_verdict(stats, p)
    return replace(
        h,
        bad_since=(h.bad_since if h.bad_since is not None else now) if bad else None,
        good_since=(h.good_since if h.good_since is not None else now) if good else None,
    )


def _settle_quality(h: Health, stats: Stats, p: HealthParams, now: float, reason: str) -> tuple[Health, list[Transition]]:
    """Pick UP or DEGRADED for a working uplink, applying the quality hold."""
    _, _, why = quality_verdict(stats, p)
    if not h.quality_bad and h.bad_since is not None and now - h.bad_since >= p.quality_hold:
        return _move(h, State.DEGRADED, f"{why} for {now - h.bad_since:.1f}s", now, quality_bad=True)
    if h.quality_bad and h.good_since is not None and now - h.good_since >= p.quality_hold:
        return _move(h, State.UP, f"quality recovered: {why}", now, quality_bad=False)
    target = _working_state(h)
    if h.state == target:
        return h, []
    if h.state == State.INIT:
        return _move(h, target, reason, now, quality_since=now)
    return _move(h, target, reason, now)


def on_dead(h: Health, reason: str, p: HealthParams, now: float) -> tuple[Health, list[Transition]]:
    """Silence confirmed another way (the LAN's packets unanswered and a burst of probes too):
    DOWN at once, without waiting for ``down_after`` rounds."""
    if h.state in (State.DISABLED, State.DOWN) or not h.link_ok:
        return h, []
    return _move(h, State.DOWN, reason, now, failed_rounds=p.down_after, good_rounds=0)


def on_link(h: Health, ok: bool, reason: str, now: float) -> tuple[Health, list[Transition]]:
    """Carrier/address/gateway news from netlink. Loss is DOWN at once; return must be earned by rounds."""
    if h.state == State.DISABLED:
        return replace(h, link_ok=ok), []
    if not ok:
        return _move(h, State.DOWN, reason, now, link_ok=False, good_rounds=0, failed_rounds=0)
    if not h.link_ok:
        # Back, but unproven: stay DOWN until up_after good rounds say otherwise.
        return replace(h, link_ok=True, reason=f"{reason}; waiting for good rounds", good_rounds=0, failed_rounds=0), []
    return h, []


def on_admin(h: Health, disabled: bool, now: float) -> tuple[Health, list[Transition]]:
    """The admin's disable/enable. Enabling starts afresh from INIT (or DOWN, if the link is gone:
    coming back must still be earned by ``up_after`` good rounds)."""
    if disabled:
        return _move(h, State.DISABLED, "disabled by admin", now)
    if h.state != State.DISABLED:
        return h, []
    h, trans = _move(h, State.INIT, "enabled by admin", now, good_rounds=0, failed_rounds=0, quality_bad=False,
                     bad_since=None, good_since=None, quality_since=now)
    if not h.link_ok:
        h, more = _move(h, State.DOWN, "enabled by admin; link still down", now)
        trans += more
    return h, trans
