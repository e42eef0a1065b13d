"""The IPv6 side of dual-stack uplinks (issue 12): its own health and its own active set. Pure.

An uplink with IPv6 probe targets (``UplinkConfig.probes6``) has a second :class:`UplinkState`,
judged only by its IPv6 probes (rounds fed with ``family=6``) and the interface's IPv6 facts (its
global address and the IPv6 default route via it). So an uplink whose IPv6 is broken while its
IPv4 works is DOWN for IPv6 only, and the other way round; an IPv4-only config has no IPv6 side.

What the two families share: the interface (carrier loss or a vanished interface is DOWN for
both, each from its own facts), the admin's disable and force (the IPv4 side's, followed here),
and the policy's rules (priority, failback hold, dampening: each side keeps its own penalty).
What they do not: the interface counters count both families together, so a silence or traffic
in them proves nothing about IPv6 alone; the IPv6 side is judged by its probes (late replies
still make it slow, not dead) and probed at ``interval`` while it carries traffic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from linkwatch.config import Config, UplinkConfig
from linkwatch.config.matchers import parse_ipv6_prefixes
from linkwatch.core import dampening as damp
from linkwatch.core.dampening import flap_penalty
from linkwatch.core.events import Ipv6ActiveChanged, Ipv6StateChanged, UplinkSamples
from linkwatch.core.health import Tally
from linkwatch.core.inputs import (
    AdminRequest,
    FactsChanged,
    Input,
    LanPrefixes,
    LinkFacts,
    Now,
    PeriodEnd,
    ProbeTrouble,
    Reload,
    RoundDone,
    Start,
    Tick,
)
from linkwatch.core.plans import plans
from linkwatch.core.policy import Decision, PolicyParams, decide
from linkwatch.core.routing import RouteSet, RoutingError, plan6, routing_params
from linkwatch.core.states import USABLE, State
from linkwatch.core.uplink import (
    ProbePlan,
    UplinkState,
    burst_timeout,
    counted,
    new_uplink,
    route_of,
    same_uplink,
    view_of,
    with_admin,
    with_facts,
    with_round,
)


@dataclass(frozen=True)
class Family6:
    """The IPv6 side: a state per uplink that has IPv6 probes, and the uplinks IPv6 goes through."""

    uplinks: tuple[UplinkState, ...] = ()
    active: tuple[str, ...] = ()
    decision: Decision | None = None
    active_changes: int = 0
    routing: RouteSet | None = None  # the IPv6 objects for the current decision and facts
    shared: tuple[tuple[str, float], ...] = ()  # (uplink, the IPv4 suspicion its IPv6 side took up)
    learned: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (uplink, LAN prefixes set at run time, not the config's)

    def uplink(self, name: str) -> UplinkState | None:
        return next((u for u in self.uplinks if u.name == name), None)


@dataclass(frozen=True)
class Step6:
    """What one step did on the IPv6 side, for the engine to pass on."""

    side: Family6
    log: tuple[tuple[str, str], ...] = ()
    recheck_at: float | None = None
    flushes: tuple[tuple[str, str], ...] = ()  # (uplink, IPv6 address): reset the flows NATed to it
    events: tuple[Ipv6StateChanged | Ipv6ActiveChanged | UplinkSamples, ...] = ()
    neighbours: tuple[tuple[int, str], ...] = ()  # (ifindex, IPv6 gateway): forget a stale entry
    reply: dict | None = None  # the answer to a LanPrefixes request


def side_config(cfg: UplinkConfig) -> UplinkConfig:
    """The uplink as its IPv6 side sees it: its IPv6 probes; its IPv6 gateway (``gateway6``; by
    default the kernel's); no suspicion of its own from the interface counters (see above)."""
    return replace(cfg, probes=cfg.probes6, probes6=(), gateway=cfg.gateway6,
                   health=replace(cfg.health, suspect_after=None))


def facts6(f: LinkFacts | None) -> LinkFacts | None:
    """The interface's facts as the IPv6 side reads them: address6 and gateway6 in their place."""
    if f is None:
        return None
    return replace(f, address=f.address6, prefixlen=f.prefixlen6, gateway=f.gateway6,
                   address6=None, prefixlen6=None, gateway6=None, family=6)


def step6(side: Family6, inp: Input, now: Now, config: Config, v4: tuple[UplinkState, ...],
          forced: str | None) -> Step6:
    """Feed ``inp`` (already applied to the IPv4 side, ``v4``) to the IPv6 side."""
    if isinstance(inp, LanPrefixes):
        return _lan_prefixes(side, inp, config)
    if not side.uplinks and not isinstance(inp, (Start, Reload)):
        return Step6(side)  # IPv4 only: nothing to do, at every counter read
    log: list[tuple[str, str]] = []
    events: list = []  # Ipv6StateChanged, then Ipv6ActiveChanged
    flushes: list[tuple[str, str]] = []
    neighbours: list[tuple[int, str]] = []
    changed = isinstance(inp, (Start, Reload, Tick, AdminRequest))
    if isinstance(inp, (Start, Reload)):
        side = _with_learned(_rebuilt(side, config, inp.facts, now, events))
        if isinstance(inp, Start):  # a restart changes nothing: adopt what the kernel routes IPv6 through
            through = {i for _, i in inp.kernel_active6}
            side = replace(side, active=tuple(u.name for u in side.uplinks if u.facts and u.facts.ifindex in through))
    elif isinstance(inp, RoundDone) and inp.family == 6:
        u = side.uplink(inp.uplink)
        if u is not None:
            # A burst is judged by the interface's counters (both families): only if nothing at all
            # came in, IPv6 included, is its unanswered burst proof of death.
            four = next((x for x in v4 if x.name == u.name), None)
            judged = replace(u, counters=four.counters) if inp.burst and four is not None else u
            new, transitions = with_round(judged, tuple(inp.results), inp.seq, now.mono, inp.started, inp.burst)
            new = replace(new, counters=u.counters)
            side, changed = _put(side, new, transitions, now, config, events), bool(transitions)
    elif isinstance(inp, FactsChanged):
        for u in side.uplinks:
            f = facts6(inp.facts.get(u.cfg.interface))
            if f != u.facts:
                outcome = with_facts(u, f, now.mono)
                if outcome.stale_nat:  # a new prefix: flows NATed to the old address cannot go on
                    flushes.append((u.name, outcome.stale_nat))
                if outcome.forget_neighbour:  # carrier is back: a stale FAILED entry would delay it
                    neighbours.append(outcome.forget_neighbour)
                side, changed = _put(side, outcome.uplink, outcome.transitions, now, config, events), True
    elif isinstance(inp, ProbeTrouble) and inp.family == 6:
        u = side.uplink(inp.uplink)
        if u is not None and u.probe_error != inp.error:
            side = _store(side, replace(u, probe_error=inp.error))
    elif isinstance(inp, PeriodEnd):
        side = _period_end(side, inp, now, events)
    if isinstance(inp, Tick):
        params = damp.params_of(config.policy)
        for u in side.uplinks:
            settled = damp.settle(u.penalty, now.mono, params)
            if settled != u.penalty:
                side = _store(side, replace(u, penalty=settled))
    side = _share_suspicion(side, v4, now)
    side, admin = _follow_admin(side, v4, now, config, events)
    if changed or admin:
        before = side.active
        side = _planned(_decide(side, config, now, forced, events), config, log)
        # no flow marks for IPv6 (yet): a flow NATed to an uplink IPv6 left would go on through the
        # new one with the old source and hang, so its entries go, as IPv4's without sticky flows
        for name in (n for n in before if n not in side.active):
            u = side.uplink(name)
            if u is not None and u.nat_address:
                flushes.append((name, u.nat_address))
    return Step6(side, tuple(log), recheck_at(side, config), tuple(flushes), tuple(events), tuple(neighbours))


MAX_LAN_PREFIXES = 16


def _lan_prefixes(side: Family6, inp: LanPrefixes, config: Config) -> Step6:
    """A DHCPv6 client's hook says which LAN prefixes an uplink delegates now (prefix delegation
    renumbers them without a restart): its ``from <prefix>`` rules follow at once."""
    def refused(why: str) -> Step6:
        return Step6(side, reply={"ok": False, "error": why})

    if not isinstance(inp.source, str) or not inp.source.isprintable() or not 0 < len(inp.source) <= 64:
        return refused("source: expected a printable string of 1..64 characters")
    names = [u.name for u in side.uplinks]
    if not isinstance(inp.uplink, str) or inp.uplink not in names:
        return refused(f"unknown uplink {str(inp.uplink)[:40]!r}; expected one with IPv6 probe targets: "
                       f"{', '.join(names) or 'none has any'}")
    if inp.prefixes is None:
        prefixes = None
    else:
        if not isinstance(inp.prefixes, list) or len(inp.prefixes) > MAX_LAN_PREFIXES:
            return refused(f"prefixes: expected a list of at most {MAX_LAN_PREFIXES} IPv6 prefixes a provider "
                           "delegates, or null")
        try:
            prefixes = parse_ipv6_prefixes(inp.prefixes)
        except ValueError as e:
            return refused(f"prefixes: got {str(inp.prefixes)[:200]}, expected {e}")
        clash = _clash(side, inp.uplink, prefixes)
        if clash:
            return refused(f"prefixes: {clash}: its from-rule would send that uplink's own traffic through "
                           f"{inp.uplink}")
    learned = tuple((n, p) for n, p in side.learned if n != inp.uplink)
    if prefixes is not None:
        learned += ((inp.uplink, prefixes),)
    side = _with_learned(replace(side, learned=learned), config)
    u = side.uplink(inp.uplink)
    assert u is not None
    log: list[tuple[str, str]] = []
    side = _planned(side, config, log)
    now_ = ", ".join(u.cfg.ipv6_prefixes) or "none"
    what = "from the config" if prefixes is None else f"from {inp.source}"
    log.insert(0, ("info", f"{inp.uplink}: LAN prefixes {now_} ({what})"))
    return Step6(side, tuple(log), recheck_at(side, config),
                 reply={"ok": True, "message": f"{inp.uplink}: LAN prefixes {now_} ({what})",
                        "prefixes": list(u.cfg.ipv6_prefixes)})


def _clash(side: Family6, name: str, prefixes: tuple[str, ...]) -> str | None:
    """Why ``prefixes`` cannot be ``name``'s: they hold another uplink's address or prefix."""
    for p in map(ipaddress.IPv6Network, prefixes):
        for u in side.uplinks:
            if u.name == name:
                continue
            if u.facts and u.facts.address and ipaddress.IPv6Address(u.facts.address) in p:
                return f"{p} holds {u.name}'s address {u.facts.address}"
            theirs = next((t for t in u.cfg.ipv6_prefixes if p.overlaps(ipaddress.IPv6Network(t))), None)
            if theirs:
                return f"{p} overlaps {u.name}'s prefix {theirs}"
    return None


def _with_learned(side: Family6, config: Config | None = None) -> Family6:
    """Each uplink's LAN prefixes: those set at run time, else its config's."""
    learned = dict(side.learned)
    by_name = {c.name: c for c in config.uplinks} if config is not None else {}
    uplinks = []
    for u in side.uplinks:
        base = by_name[u.name].ipv6_prefixes if u.name in by_name else u.cfg.ipv6_prefixes
        want = learned.get(u.name, base)
        uplinks.append(u if u.cfg.ipv6_prefixes == want else replace(u, cfg=replace(u.cfg, ipv6_prefixes=want)))
    return replace(side, uplinks=tuple(uplinks), learned=tuple((n, p) for n, p in side.learned
                                                               if any(u.name == n for u in uplinks)))


def _period_end(side: Family6, inp: PeriodEnd, now: Now, events: list) -> Family6:
    """What the IPv6 probes saw this history period, a row per uplink beside IPv4's (family 6)."""
    for u in side.uplinks:
        p = u.period.summary()
        events.append(UplinkSamples(
            at=inp.end, mono=now.mono, uplink=u.name, start=inp.start, sent=p.sent, lost=p.lost,
            loss_pct=p.loss_pct, rtt_avg_ms=p.rtt_avg_ms, rtt_min_ms=p.rtt_min_ms, rtt_max_ms=p.rtt_max_ms,
            jitter_ms=p.jitter_ms, family=6))
    return replace(side, uplinks=tuple(replace(u, period=Tally()) for u in side.uplinks))


def _rebuilt(side: Family6, config: Config, facts: Mapping[str, LinkFacts], now: Now, events: list) -> Family6:
    """Start, or a reload: an uplink whose IPv6 side is unchanged keeps its state."""
    uplinks = []
    for cfg in config.uplinks:
        if not cfg.probes6:
            continue
        wanted = side_config(cfg)
        prev = side.uplink(cfg.name)
        if prev is not None and same_uplink(prev.cfg, wanted):
            uplinks.append(replace(prev, cfg=wanted))
            continue
        fresh = new_uplink(wanted, now.mono, now.wall)
        outcome = with_facts(fresh, facts6(facts.get(cfg.interface)), now.mono, initial=True)
        u = counted(outcome.uplink, outcome.transitions, now.mono, now.wall)
        events.extend(_state_event(u, t, now) for t in outcome.transitions)
        uplinks.append(u)
    names = {u.name for u in uplinks}
    return replace(side, uplinks=tuple(uplinks), active=tuple(n for n in side.active if n in names))


def _store(side: Family6, u: UplinkState) -> Family6:
    return replace(side, uplinks=tuple(u if x.name == u.name else x for x in side.uplinks))


def _state_event(u: UplinkState, t, now: Now) -> Ipv6StateChanged:
    s = u.stats
    return Ipv6StateChanged(at=now.wall, mono=now.mono, uplink=u.name, interface=u.cfg.interface, old=t.old.value,
                            new=t.new.value, reason=t.reason, loss_pct=s.loss_pct, rtt_ms=s.rtt_ms, jitter_ms=s.jitter_ms)


def _put(side: Family6, u: UplinkState, transitions, now: Now, config: Config, events: list) -> Family6:
    """Store ``u`` with its transitions counted, made events and charged to its flap penalty."""
    u = counted(u, transitions, now.mono, now.wall)
    params = damp.params_of(config.policy)
    for t in transitions:
        events.append(_state_event(u, t, now))
        amount = flap_penalty(t.old, t.new)
        if amount:
            u = replace(u, penalty=damp.add(u.penalty, amount, now.mono, params))
    return _store(side, u)


def _share_suspicion(side: Family6, v4: tuple[UplinkState, ...], now: Now) -> Family6:
    """The interface fell silent while the LAN sent through it (its IPv4 side is suspect): that
    silence is IPv6's too, so an IPv6 side that carries traffic sends a burst at once (and is DOWN
    when it gets no answer while still nothing comes in), as soon as IPv4's, not rounds later."""
    shared = dict(side.shared)
    for four in v4:
        u = side.uplink(four.name)
        if u is None:
            continue
        # IPv4's suspicion proved false (its burst was answered, or traffic came in), or IPv6's burst
        # result was lost: the suspicion ends. Not when IPv4 was found dead: IPv6's burst decides.
        if u.suspect_since is not None and ((four.suspect_since is None and four.health.state in USABLE)
                                            or now.mono - u.suspect_since > burst_timeout(u) + 1.0):
            u = replace(u, suspect_since=None)
            side = _store(side, u)
        if u.false_alarms and not four.false_alarms:  # two-way traffic reset IPv4's back-off: shared evidence
            u = replace(u, false_alarms=0, quiet_until=0.0)
            side = _store(side, u)
        since = four.suspect_since
        if (since is None or shared.get(u.name) == since or u.suspect_since is not None
                or u.name not in side.active or u.health.state not in USABLE or now.mono < u.quiet_until):
            continue
        shared[u.name] = since
        side = _store(side, replace(u, suspect_since=since, bursts=u.bursts + 1))
    return replace(side, shared=tuple(shared.items())) if shared != dict(side.shared) else side


def _follow_admin(side: Family6, v4: tuple[UplinkState, ...], now: Now, config: Config,
                  events: list) -> tuple[Family6, bool]:
    """An uplink the admin disabled (or enabled) is so for IPv6 too."""
    disabled = {u.name for u in v4 if u.health.state == State.DISABLED}
    moved = False
    for u in side.uplinks:
        want = u.name in disabled
        if want != (u.health.state == State.DISABLED):
            side = _put(side, *with_admin(u, want, now.mono), now, config, events)
            moved = True
    return side, moved


def _decide(side: Family6, config: Config, now: Now, forced: str | None, events: list) -> Family6:
    p = config.policy
    views = [view_of(u) for u in side.uplinks]
    names = {v.name for v in views}
    d = decide(views, PolicyParams(p.mode, p.failback_hold), side.active, now.mono,
               forced if forced in names else None)
    side = replace(side, decision=d)
    if d.active != side.active:
        events.append(Ipv6ActiveChanged(now.wall, now.mono, side.active, d.active, d.reason))
        side = replace(side, active=d.active, active_changes=side.active_changes + 1)
    return side


def _planned(side: Family6, config: Config, log: list[tuple[str, str]]) -> Family6:
    """The IPv6 routing for the side's decision and facts (None: no uplink has an IPv6 side)."""
    if not side.uplinks:
        return replace(side, routing=None)
    d = side.decision
    try:
        routing = plan6([route_of(u) for u in side.uplinks], d.weights if d else (), routing_params(config))
    except RoutingError as e:  # inconsistent facts from the kernel: leave the IPv6 routes as they are
        log.append(("error", f"ipv6 routing plan refused, kernel left unchanged: {e}"))
        return side
    return replace(side, routing=routing)


def recheck_at(side: Family6, config: Config) -> float | None:
    """The next Tick the IPv6 side needs (a held failback, a dampening that ends)."""
    params = damp.params_of(config.policy)
    times = [t for u in side.uplinks if (t := damp.reuse_at(u.penalty, params)) is not None]
    if side.decision is not None and side.decision.recheck_at is not None:
        times.append(side.decision.recheck_at)
    return min(times) if times else None


def probe_plans6(side: Family6, config: Config) -> dict[str, ProbePlan]:
    """How to probe each uplink's IPv6 targets now: as for IPv4, with the doubt of the IPv6 side."""
    doubt = any(u.health.state in (State.FALLING, State.DOWN) for u in side.uplinks if u.name in side.active)
    return plans(side.uplinks, side.active, side.active.__contains__, doubt, config.policy.mode == "balance", 6)
