"""One uplink as the engine core sees it: its config, the kernel's facts, its health, the probe
statistics and its counters. Pure: functions take an :class:`UplinkState` and data and return a
new one, plus the health transitions that happened.

The engine (:mod:`linkwatch.core.engine`) keeps one UplinkState per configured uplink and turns
the transitions into events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from linkwatch.config import UplinkConfig
from linkwatch.core import health as hm
from linkwatch.core.dampening import Penalty
from linkwatch.core.flows import flow_mark
from linkwatch.core import evidence as ev
from linkwatch.core.evidence import Traffic
from linkwatch.core.health import EMPTY_STATS, Health, HealthParams, Sample, Stats, Tally, Transition, window_stats
from linkwatch.core.inputs import LinkCounters, LinkFacts, ProbeResult, ProbeSpec
from linkwatch.core.policy import UplinkView
from linkwatch.core.routing import UplinkRoute
from linkwatch.core.states import PENDING, USABLE, State

TRAFFIC_WINDOW = 60.0  # seconds of probe traffic the bytes/day estimate is based on


def health_params(cfg: UplinkConfig) -> HealthParams:
    h = cfg.health
    return HealthParams(
        down_after=h.down_after, up_after=h.up_after, min_targets=h.min_targets,
        quality_window=h.quality_window, loss_degraded=h.loss_degraded, loss_recovered=h.loss_recovered,
        rtt_degraded=h.rtt_degraded, rtt_recovered=h.rtt_recovered, quality_hold=h.quality_hold,
    )


def gateway_of(cfg: UplinkConfig, facts: LinkFacts | None) -> str | None:
    """The configured gateway, else the one the kernel's main table has via the interface."""
    if cfg.gateway is not None:
        return cfg.gateway
    return facts.gateway if facts else None


IPV6_ONLY = "IPv6 only: no IPv4 probe targets"  # the IPv4 side of an uplink whose probes are all IPv6


def link_verdict(cfg: UplinkConfig, facts: LinkFacts | None) -> tuple[bool, str]:
    """Can this uplink carry traffic at all, as far as the kernel says? (ok, reason)

    An uplink with no probes of this family (IPv4's side of an IPv6-only uplink; the IPv6 side
    exists only with IPv6 probes) never carries this family's traffic, whatever its addresses."""
    if not cfg.probes:
        return False, IPV6_ONLY
    if facts is None or facts.ifindex is None:
        return False, f"interface {cfg.interface} missing"
    if not facts.carrier:
        return False, "carrier lost"
    ip = "IPv6" if facts.family == 6 else "IPv4"
    if facts.address is None:
        return False, f"no {ip} address on {cfg.interface}"
    if gateway_of(cfg, facts) is None and not facts.pointopoint:
        return False, f"no gateway (no {ip} default route via {cfg.interface} in the main table)"
    return True, "link up"


@dataclass(frozen=True)
class ProbePlan:
    """How the shell should probe one uplink now: bind to ``source`` (None: there is no address to
    probe from) and to the interface ``device`` (index ``ifindex``), run a round every ``interval``
    while ``running``.

    Bound to the device, a probe can only leave through its uplink: while the policy rule of
    ``source`` is missing (the interface was renamed away, linkwatch is starting, someone flushed
    the rules) it would otherwise leave through the active uplink with a foreign source, and that
    uplink's NAT would bind the probe's conntrack entry to its own address for as long as the
    probes keep it alive, so the uplink could never be proven to work again."""

    source: str | None
    specs: tuple[ProbeSpec, ...]
    running: bool
    interval: float
    timeout: float
    attempts: int
    rotate: bool = False  # one target per round, in turn (a standby uplink on a data budget)
    burst: int = 0  # a new number asks for one burst round at once (a suspicion to confirm)
    burst_timeout: float = 0.12
    counter_interval: float = 1.0  # how often to read the interface counters
    late_window: float = 3.0  # a reply this late is still heard (slow, not dead)
    device: str | None = None  # the interface the probe sockets are bound to (SO_BINDTODEVICE)
    ifindex: int | None = None  # a new interface under the same name gets new sockets

    @property
    def packet_rate(self) -> float:
        """Probe packets a second while the targets answer (one each; retries only on a miss)."""
        if not self.running or not self.specs:
            return 0.0
        return (1 if self.rotate else len(self.specs)) / self.interval


@dataclass(frozen=True)
class UplinkState:
    """Everything the core knows about one uplink. Immutable: functions return new ones."""

    cfg: UplinkConfig
    params: HealthParams
    health: Health = field(default_factory=Health)
    facts: LinkFacts | None = None
    samples: tuple[Sample, ...] = ()  # the quality window
    stats: Stats = EMPTY_STATS
    last_results: tuple[ProbeResult, ...] = ()  # the latest result of each probe
    probe_traffic: tuple[tuple[float, int], ...] = ()  # (mono, probe bytes) of each round, last TRAFFIC_WINDOW
    counters: Traffic = field(default_factory=Traffic)  # the interface's own traffic (evidence, month)
    last_reply_at: float | None = None  # the last probe reply, in time or late
    last_late_at: float | None = None  # the last late reply: the uplink has been slow
    last_prompt_at: float | None = None  # the last round a reply came back within a burst's timeout
    slow_rounds: int = 0  # rounds that timed out while the uplink showed it was alive
    suspect_since: float | None = None  # LAN packets leaving with nothing coming back since
    quiet_until: float = 0.0  # no new suspicion before this (a burst just answered)
    false_alarms: int = 0  # answered bursts in a row (one-way traffic): each doubles the quiet time
    alarm_at: float = 0.0  # the last of them
    eager_rounds: int = 0  # rounds still to run at fast_interval: the link just came back
    bursts: int = 0  # bursts asked for
    path_rtt: float = 0.0  # median RTT of replies in time over the quality window (seconds; 0: unknown)
    penalty: Penalty = field(default_factory=Penalty)  # flap dampening
    quota_warned: tuple[int, ...] = ()  # quota thresholds already raised this month
    working_since: float = 0.0  # when it last became working (the failback hold counts from here)
    wall_since: float = 0.0  # wall-clock time of the last state change
    nat_address: str | None = None  # last address seen: NAT entries to flush even after it is gone
    left_at: float | None = None  # traffic moved away while it worked; its flows stayed (sticky flows)
    probe_error: str | None = None  # why the shell cannot open its probes
    rounds: int = 0
    downs: int = 0  # times it went DOWN since the engine started
    transitions: int = 0  # state changes since the engine started
    applied_seq: int = 0  # the newest round whose result stepped the health
    period: Tally = field(default_factory=Tally)  # what the probes saw in this history period

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def state(self) -> State:
        return self.health.state


def new_uplink(cfg: UplinkConfig, mono: float, wall: float) -> UplinkState:
    """An uplink not probed yet: INIT since ``mono`` (the policy's start-up grace counts from it).
    An IPv6-only uplink's IPv4 side is DOWN from the start (no INIT -> DOWN event: nothing failed)."""
    if not cfg.probes:
        return UplinkState(cfg, health_params(cfg), health=Health(State.DOWN, mono, IPV6_ONLY, link_ok=False),
                           wall_since=wall)
    return UplinkState(cfg, health_params(cfg), health=Health(since=mono), wall_since=wall)


def counted(u: UplinkState, transitions: list[Transition], mono: float, wall: float) -> UplinkState:
    """``u`` with its counters and clocks moved on by ``transitions``."""
    for t in transitions:
        if (t.new in (State.UP, State.DEGRADED) and t.old not in USABLE) or (
                t.old in (State.DEGRADED, State.FALLING) and t.new == State.UP):
            u = replace(u, working_since=mono)  # a FALLING dip restarts the failback hold too
        u = replace(u, downs=u.downs + (t.new == State.DOWN), transitions=u.transitions + 1, wall_since=wall)
    return u


@dataclass(frozen=True)
class FactsOutcome:
    """What new facts did to an uplink: the transitions, and the kernel chores they call for."""

    uplink: UplinkState
    transitions: list[Transition]
    stale_nat: str | None = None  # an old address whose NAT entries are dead (renumbered)
    forget_neighbour: tuple[int, str] | None = None  # (ifindex, gateway): carrier came back


def with_facts(u: UplinkState, facts: LinkFacts | None, mono: float, initial: bool = False) -> FactsOutcome:
    """Apply the kernel's facts: a link that cannot carry traffic is DOWN at once."""
    old = u.facts
    u = replace(u, facts=facts)
    if facts is None or not facts.ifindex or (old is not None and old.ifindex != facts.ifindex):
        u = replace(u, counters=ev.forget(u.counters))  # gone or re-created: the next read is a new baseline
    ok, reason = link_verdict(u.cfg, facts)
    if not ok:  # no rounds run while the link is gone: stale statistics would mislead
        u = replace(u, stats=EMPTY_STATS, samples=(), last_results=())
    came_back = ok and not u.health.link_ok
    health, transitions = hm.on_link(u.health, ok, reason, mono)
    u = replace(u, health=health, eager_rounds=EAGER_ROUNDS if came_back else u.eager_rounds)
    stale = None
    if facts is not None and facts.address:
        if u.nat_address and facts.address != u.nat_address:
            stale = u.nat_address
        u = replace(u, nat_address=facts.address)
    forget = None
    if not initial and old is not None and facts is not None and facts.carrier and not old.carrier:
        gateway = gateway_of(u.cfg, facts)
        if gateway and facts.ifindex:  # a stale FAILED neighbour entry would delay failback
            forget = (facts.ifindex, gateway)
    return FactsOutcome(u, transitions, stale, forget)


def with_round(u: UplinkState, results: tuple[ProbeResult, ...], seq: int | None, mono: float,
               started: float | None = None, burst: bool = False) -> tuple[UplinkState, list[Transition]]:
    """Feed a finished round. Rounds overlap (timeout > fast_interval): one that started before a
    round already applied adds its samples to the statistics but does not step the state.

    A round that timed out is *slow*, not failed, when the uplink shows it is alive: replies to
    earlier rounds came late, the interface kept receiving while the round ran, or replies have
    been late lately (only silence is death). An explicit refusal (ICMP unreachable) is a failure.
    A burst round (to confirm a suspicion) that gets no answer while nothing comes in at all
    takes the uplink DOWN at once."""
    if not u.health.link_ok:
        return u, []  # the link went away while the round was in flight
    new = tuple(Sample(mono, r.target, r.sent, r.lost, r.rtt if r.ok else r.late_rtt, r.late) for r in results)
    horizon = mono - max(u.params.quality_window, ev.PROVEN_WINDOW)
    samples = tuple(s for s in u.samples if s.at >= horizon) + new
    period = u.period
    for s in new:
        period = period.add(s)
    latest = {(r.kind, r.target): r for r in u.last_results}
    latest.update({(r.kind, r.target): r for r in results})
    nbytes = sum(r.bytes_sent + r.bytes_received for r in results)
    probe_traffic = tuple(t for t in u.probe_traffic if mono - t[0] <= TRAFFIC_WINDOW) + ((mono, nbytes),)
    stats = window_stats(samples, mono, u.params.quality_window, u.health.quality_since)
    path_rtt = _path_rtt(samples, mono - u.params.quality_window)
    answered = sum(1 for r in results if r.ok)
    late = sum(r.late for r in results)
    prompt = any(r.ok and r.rtt is not None and r.rtt <= burst_timeout(u) for r in results)
    u = replace(u, rounds=u.rounds + 1, samples=samples, period=period, last_results=tuple(latest.values()),
                eager_rounds=max(u.eager_rounds - 1, 0),
                probe_traffic=probe_traffic, stats=stats, path_rtt=path_rtt,
                last_reply_at=mono if answered or late else u.last_reply_at,
                last_late_at=mono if late else u.last_late_at,
                last_prompt_at=mono if prompt else u.last_prompt_at)
    if seq is not None and seq < u.applied_seq:
        return u, []
    judged, total = answered, len(results)
    if 0 < len(results) < len(u.cfg.probes):  # a rotating round (one target): judge the latest of each
        judged, total = sum(1 for r in latest.values() if r.ok), len(latest)
    good = bool(results) and judged >= min(u.params.min_targets, total)
    if burst:
        why = None if good else _dead_by_burst(u, results, mono)
        u = replace(u, suspect_since=None)
        if good:  # a false alarm (one-way traffic): back off, so an upload does not cost a burst a second
            alarms = u.false_alarms + 1
            return replace(u, false_alarms=alarms, alarm_at=mono,
                           quiet_until=mono + min(QUIET_AFTER_BURST * 2 ** min(alarms - 1, 16), MAX_QUIET)), []
        if why is None:
            return u, []  # no answer, but no proof of death either: the rounds decide
        health, transitions = hm.on_dead(u.health, why, u.params, mono)
        return replace(u, health=health, false_alarms=0, applied_seq=max(u.applied_seq, seq or 0)), transitions
    if seq is not None:
        u = replace(u, applied_seq=seq)
    slow = None if good else _slow(u, results, started, mono)
    health, transitions = hm.on_round(u.health, judged, total, stats, u.params, mono, slow,
                                      late_now=any(r.late for r in results))
    return replace(u, health=health, slow_rounds=u.slow_rounds + (slow is not None)), transitions


EAGER_ROUNDS = 5  # a link that comes back (carrier, interface, address) is probed this many rounds fast
QUIET_AFTER_BURST = 1.0  # a suspicion the burst disproved is not raised again before this ...
MAX_QUIET = 60.0  # ... doubling with each false alarm in a row, up to this (reset by two-way traffic)


def _recently_slow(u: UplinkState, mono: float) -> bool:
    """Replies came late within the late window, and none has come back promptly since: a queue
    may still hold the answers. A prompt reply after the late ones shows the queue drained, and
    silence after it counts again (a blackhole 1.5 s after a busy spell waited out the late window)."""
    if u.last_late_at is None or mono - u.last_late_at > u.cfg.health.late_window:
        return False
    return u.last_prompt_at is None or u.last_prompt_at <= u.last_late_at


def _draining(u: UplinkState) -> bool:
    """Replies have been late and none has come back promptly since: the rounds go on at
    ``interval`` (not ``proven_interval``) until one does, so that a queue that drained is known
    to have drained before the next silence (which is then death, not a queue)."""
    return bool(u.samples) and _recently_slow(u, u.samples[-1].at)


def _slow(u: UplinkState, results: tuple[ProbeResult, ...], started: float | None, mono: float) -> str | None:
    """Why a round that got no answer in time is not a failure (None: it is one)."""
    if any(r.refused for r in results):
        return None  # an explicit "no" from the network
    late = [r for r in results if r.late]
    if late:
        rtt = max((r.late_rtt or 0.0) for r in late)
        return f"{sum(r.late for r in late)} late repl{'y' if sum(r.late for r in late) == 1 else 'ies'} " \
               f"(RTT {rtt * 1000:.0f}ms)"
    recent_reply = u.last_reply_at is not None and mono - u.last_reply_at <= u.cfg.health.late_window
    came = ev.rx_after(u.counters, started) if started is not None else 0
    # what the LAN sent meanwhile: beyond the probes of this round and of the rounds that overlapped
    # it (the samples since it started, this round's included)
    lan_sent = ev.tx_after(u.counters, started) - probe_packets(u, started)[0] if started is not None else 0
    if recent_reply and came >= ev.PROOF_MIN_RX and lan_sent >= ev.SUSPECT_EXTRA_TX and not u.cfg.probes6:
        return f"{came} packets came in meanwhile"  # while the LAN sent: replies, not noise
    if _recently_slow(u, mono):
        return "replies have been late lately"
    return None


def _dead_by_burst(u: UplinkState, results: tuple[ProbeResult, ...], mono: float) -> str | None:
    """Why a burst that got no answer proves the uplink dead (None: it does not)."""
    if u.suspect_since is None or _recently_slow(u, mono) or any(r.late or r.ok for r in results):
        return None  # no suspicion to confirm, a queue may hold the answers, or one came
    if ev.rx_since(u.counters, u.suspect_since) > 0:
        return None  # something came in after all
    packets = sum(r.sent for r in results)
    quiet_since = ev.last_rx(u.counters)
    quiet = f"for {(mono - quiet_since) * 1000:.0f}ms" if quiet_since is not None else f"for over {ev.KEEP:.0f}s"
    return f"nothing came in {quiet} while the LAN sent, and a burst of {packets} probes got no answer"


def with_counters(u: UplinkState, c: LinkCounters, mono: float, month: str, active: bool,
                  interval: float) -> UplinkState:
    """New interface counters. A working uplink that carries traffic (``active``), or still holds
    flows left on it (:func:`watched`), whose packets leave with nothing coming back becomes
    suspect (the shell sends a burst at once); traffic coming in clears that."""
    counters = ev.observe(u.counters, c, mono, month)
    if u.quota_warned and counters.month != u.counters.month:
        u = replace(u, quota_warned=())  # a new month
    u = replace(u, counters=counters)
    h = u.cfg.health
    if u.false_alarms and is_proven(u, mono) and _came_since(u, u.alarm_at) >= ev.PROVEN_MIN_RX:
        u = replace(u, false_alarms=0, quiet_until=0.0)  # two-way traffic again: a silence is worth a burst at once
    if u.suspect_since is not None:
        if ev.rx_since(counters, u.suspect_since) > 0 or mono - u.suspect_since > burst_timeout(u) + 1.0:
            u = replace(u, suspect_since=None)
        return u
    if not watched(u, active) or h.suspect_after is None or u.health.state not in USABLE or mono < u.quiet_until:
        return u
    window = max(h.suspect_after, RTT_MARGIN * u.path_rtt)  # on a long path replies take longer to be missed
    probe_packets = len(u.cfg.probes) * h.attempts * max(1, math.ceil(window / interval))
    if ev.silent(counters, mono, window, probe_packets):
        u = replace(u, suspect_since=mono, bursts=u.bursts + 1)
    return u


def with_admin(u: UplinkState, disable: bool, mono: float) -> tuple[UplinkState, list[Transition]]:
    health, transitions = hm.on_admin(u.health, disable, mono)
    if not u.cfg.probes and health.state == State.DOWN:  # enabled again: still IPv6-only
        health = replace(health, reason=IPV6_ONLY)
    return replace(u, health=health), transitions


def bytes_per_day(u: UplinkState, mono: float) -> float | None:
    """Probe traffic extrapolated from the last minute's rounds (None: too little to tell)."""
    recent = [(t, b) for t, b in u.probe_traffic if mono - t <= TRAFFIC_WINDOW]
    if len(recent) < 2:
        return None
    span = max(mono - recent[0][0], 1e-3)
    return sum(b for _, b in recent) / span * 86400.0


def route_of(u: UplinkState, sticky: bool = False) -> UplinkRoute:
    """What the routing plan needs to know about the uplink (``sticky``: flows keep their uplink)."""
    f = u.facts
    ok, _ = link_verdict(u.cfg, f)
    return UplinkRoute(
        name=u.name, ifindex=f.ifindex if f else None, address=f.address if f else None,
        prefixlen=f.prefixlen if f else None, gateway=gateway_of(u.cfg, f), table=u.cfg.table,
        rule_priority=u.cfg.rule_priority, usable=ok, interface=u.cfg.interface,
        flow_mark=flow_mark(u.cfg.table) if sticky else None, working=working(u), weight=u.cfg.weight,
        pointopoint=bool(f and f.pointopoint), prefixes=u.cfg.ipv6_prefixes,
    )


def working(u: UplinkState) -> bool:
    """Healthy enough to keep the flows it carries (with sticky flows)."""
    return u.health.state in USABLE


def view_of(u: UplinkState) -> UplinkView:
    """What the policy needs to know about the uplink."""
    return UplinkView(u.name, u.health.state, u.cfg.priority, u.cfg.weight, link_verdict(u.cfg, u.facts)[0],
                      u.working_since, u.health.quality_bad, u.health.since, u.penalty.dampened)


RTT_MARGIN = 2.5  # the burst waits this many of the uplink's RTTs at least, and so does a suspicion


def _path_rtt(samples: tuple[Sample, ...], since: float) -> float:
    """The path's usual RTT: the median of the replies that came in time. Late replies measure a
    queue that has been full, not the path: after a busy spell they must not stretch the window in
    which silence is suspicious (a mean of 94 ms did, 7 s after a 400 ms queue drained)."""
    rtts = sorted(s.rtt for s in samples if s.rtt is not None and s.lost < s.sent and s.at >= since)
    return rtts[len(rtts) // 2] if rtts else 0.0


def burst_timeout(u: UplinkState) -> float:
    """The confirming burst's timeout: burst_timeout, longer on a long path (an LTE link with an
    80 ms RTT gets 200 ms): a burst must not fail just because replies take their usual time."""
    return min(max(u.cfg.health.burst_timeout, RTT_MARGIN * u.path_rtt), u.cfg.health.late_window)


def probe_packets(u: UplinkState, since: float) -> tuple[int, int]:
    """(sent, answered) probe packets of the rounds that ended after ``since`` (what the
    interface counters carried for the probes themselves)."""
    sent = answered = 0
    for s in u.samples:
        if s.at > since:
            sent += s.sent
            answered += s.sent - s.lost + s.late
    return sent, answered


def _came_since(u: UplinkState, t: float) -> int:
    """Packets that came in since ``t`` beyond the probes' replies."""
    return ev.rx_since(u.counters, t) - probe_packets(u, t)[1]


def is_proven(u: UplinkState, mono: float) -> bool:
    """The LAN's own traffic (beyond the probes') proves the uplink works."""
    tx, rx = probe_packets(u, mono - ev.PROVEN_WINDOW)
    return ev.proven(u.counters, mono, tx, rx)


def watched(u: UplinkState, carries: bool) -> bool:
    """Is the LAN's traffic through ``u`` evidence to watch (fast counter reads, suspicion)? While
    it carries traffic, and while flows left on it after traffic moved away (sticky flows) may
    still send: a silence there strands them as surely as on the active uplink. Its probing stays
    at its own pace (a metered backup pays for every probe); the LAN's packets are free."""
    return carries or u.left_at is not None


def _counter_interval(u: UplinkState, active: bool, other_probes: float) -> float:
    """Fast reads while the LAN sends through the active uplink (a silence must show within
    suspect_after); slower while it is idle (nothing to watch: the probes decide); standby uplinks
    only for their month's traffic. ``other_probes``: packets a second the other family's probes
    send through the same interface (the counters do not tell the families apart)."""
    h = u.cfg.health
    if not active:
        return max(1.0, min(h.standby_interval, 10.0))
    if h.suspect_after is not None:
        at = u.counters.last_at or 0.0
        # the probes' own packets are not the LAN sending: 24 a second with 3 targets per family
        # would keep a dual-stack uplink's counters read 17 times a second for nothing
        own = probe_packets(u, at - 1.0)[0] + math.floor(other_probes)
        if ev.sending(u.counters, at, own):
            return h.counter_interval
    return max(h.counter_interval, ev.IDLE_READ)


def _eager(u: UplinkState) -> bool:
    return u.eager_rounds > 0 and u.health.state == State.DOWN  # the kernel says the link is back: is it?


def round_interval(u: UplinkState, active: bool, doubt: bool, better: bool = False) -> float:
    """Seconds between probe rounds on ``u`` now (see :func:`probe_plan`)."""
    h = u.cfg.health
    state = u.health.state
    if state in PENDING or state == State.INIT or (doubt and not active) or _eager(u):
        return h.fast_interval
    if active:
        # the counters count both families: on a dual-stack uplink the LAN's IPv6 could hide a dead IPv4
        proven = is_proven(u, u.counters.last_at or 0.0) and not _draining(u) and not u.cfg.probes6
        return h.proven_interval if proven else h.interval
    return h.interval if better else h.standby_interval


def probe_plan(u: UplinkState, active: bool, doubt: bool, better: bool = False,
               other_probes: float = 0.0) -> ProbePlan:
    """How to probe ``u`` now. ``doubt``: an active uplink is suspect or failing, so every uplink is
    probed at full rate and the failover decision rests on fresh evidence. ``better``: ``u`` would
    take traffic back once it works (a better priority than the active uplinks'): its recovery is
    watched at ``interval``, not at the standby interval of a backup on a data budget.
    ``other_probes``: what the other family's probes send through the interface (packets a second)."""
    h = u.cfg.health
    source = u.facts.address if u.facts else None
    state = u.health.state
    standby = not active and not better
    eager = _eager(u)
    return ProbePlan(
        source=source,
        specs=tuple(ProbeSpec(p.type, p.target, p.query) for p in u.cfg.probes),
        running=state != State.DISABLED and u.health.link_ok and source is not None,
        interval=round_interval(u, active, doubt, better),
        timeout=h.timeout,
        attempts=h.attempts,
        rotate=standby and not doubt and not eager and state not in PENDING and state != State.INIT,
        burst=u.bursts,
        burst_timeout=burst_timeout(u),
        counter_interval=_counter_interval(u, watched(u, active), other_probes),
        late_window=h.late_window,
        device=u.facts.ifname if u.facts and u.facts.ifindex is not None else None,
        ifindex=u.facts.ifindex if u.facts else None,
    )


def stops_working(was: UplinkState, now: UplinkState) -> bool:
    """``now`` cannot keep its flows any more: it worked, or it is judged for the first time (INIT:
    flows from before a restart or a reload carry its mark, and it may be dead now)."""
    return not working(now) and (working(was) or (was.health.state == State.INIT and now.health.state != State.INIT))


def passed_thresholds(cfg: UplinkConfig, used: int) -> tuple[int, ...]:
    return tuple(p for p in cfg.quota_warn if cfg.quota and used >= cfg.quota * p / 100)


def same_uplink(a: UplinkConfig, b: UplinkConfig) -> bool:
    """Equal but for the numbers derived from the uplink's position in the file, and for its IPv6
    keys (its IPv6 side's business: core.family6)."""
    return replace(a, table=b.table, rule_priority=b.rule_priority, probes6=b.probes6, gateway6=b.gateway6,
                   ipv6_prefixes=b.ipv6_prefixes) == b


def carried_over(prev: UplinkState | None, fresh: UplinkState) -> UplinkState:
    """A rebuilt uplink keeps what is not about its health: the month's traffic and the quota
    thresholds it passed (a quota is not reset by a reload), its flap penalty (a reload does not
    pardon a flapping uplink) and when flows were left behind on it. A new interface starts its counters afresh, the month kept."""
    if prev is None:
        return fresh
    counters = prev.counters if prev.cfg.interface == fresh.cfg.interface else ev.forget(prev.counters)
    # thresholds already passed under the new quota (a changed quota or quota_warn is judged afresh)
    # flows left behind on it stay left behind (move_flows_after counts on, under the new setting)
    left_at = prev.left_at if prev.cfg.interface == fresh.cfg.interface else None
    return replace(fresh, counters=counters, quota_warned=passed_thresholds(fresh.cfg, counters.month_bytes),
                   penalty=prev.penalty, left_at=left_at)
