"""The engine's decisions as one pure step: ``step(state, input, now) -> (state, outputs)``.

No sockets, no clock, no asyncio: the I/O shell (:mod:`linkwatch.daemon.engine`) reads the
kernel, runs the probes and the timers, feeds each happening to :func:`step` as a value
(:mod:`linkwatch.core.inputs`) with the time of its one clock, and carries out the outputs: it
applies :attr:`Outputs.routing` to the kernel, then publishes :attr:`Outputs.events` to the sinks,
then flushes the conntrack entries of :attr:`Outputs.flushes`.

The flow inside one step is the data flow of DESIGN.md, one way::

    input -> each uplink's state (facts, rounds, admin)  -> health transitions -> events
          -> policy (decide)                             -> active set         -> ActiveChanged
          -> routing plan (core.routing.plan)            -> Outputs.routing, flushes
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from linkwatch.config import Config, UplinkConfig
from linkwatch.core import dampening as damp
from linkwatch.core.dampening import DampeningParams, flap_penalty
from linkwatch.core.events import (
    ActiveChanged,
    AdminAction,
    EngineEvent,
    Event,
    QuotaReached,
    UplinkDampened,
    UplinkSamples,
    UplinkStateChanged,
)
from linkwatch.core.evidence import Traffic, month_of, take_period
from linkwatch.core.family6 import Family6, probe_plans6, step6
from linkwatch.core.flows import flow_mark
from linkwatch.core.health import Tally, Transition
from linkwatch.core.inputs import (
    AdminRequest,
    Counters,
    FactsChanged,
    Input,
    LanPrefixes,
    LinkFacts,
    Now,
    PeriodEnd,
    ProbeTrouble,
    Reload,
    ReloadFailed,
    RoundDone,
    Start,
    Stop,
    Tick,
)
from linkwatch.core.plans import plans
from linkwatch.core.policy import Decision, PolicyParams, decide, rule_choice
from linkwatch.core.routing import (
    RouteSet,
    RoutingError,
    merged,
    plan,
    routing_params,
    rule_home,
    rule_target,
)
from linkwatch.core.states import ADMIN_ACTIONS, State
from linkwatch.core.uplink import (
    ProbePlan,
    UplinkState,
    carried_over,
    counted,
    new_uplink,
    passed_thresholds,
    round_interval,
    route_of,
    same_uplink,
    stops_working,
    working,
    view_of,
    with_admin,
    with_facts,
    with_counters,
    with_round,
)

MAX_SOURCE = 100  # characters of an admin action's source


@dataclass(frozen=True)
class EngineState:
    """Everything the core knows. Immutable: :func:`step` returns a new one."""

    config: Config
    uplinks: tuple[UplinkState, ...]
    active: tuple[str, ...] = ()
    previous_active: tuple[str, ...] = ()  # what carried traffic before the last change
    forced: str | None = None
    decision: Decision | None = None
    routing: RouteSet | None = None  # the plan for the current decision and facts (None: none yet)
    carrying: tuple[str, ...] = ()  # the active uplinks and those policy rules send flows to now
    hosting: tuple[str, ...] = ()  # the active uplinks and the rules' fallbacks now (movable flows go there)
    rule_choices: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (rule name, its uplinks now): policy.rule_choice
    active_changes: int = 0  # since the engine started (the first choice counts)
    started: float = 0.0  # wall clock
    v6: Family6 = Family6()  # the IPv6 side of the uplinks that have IPv6 probes

    def uplink(self, name: str) -> UplinkState | None:
        return next((u for u in self.uplinks if u.name == name), None)

    def carries(self, name: str) -> bool:
        """LAN traffic goes through uplink ``name``: it is active, or a policy rule sends flows to it."""
        return name in self.active or name in self.carrying

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.uplinks)


def initial_state(config: Config) -> EngineState:
    """The state before :class:`Start`: the configured uplinks, nothing known about them."""
    return EngineState(config, tuple(new_uplink(u, 0.0, 0.0) for u in config.uplinks))


@dataclass(frozen=True)
class Flush:
    """Reset the flows of an uplink: with sticky flows, every flow with its flow ``mark`` (one
    kernel operation), or only its movable ones (``movable``: see :func:`linkwatch.core.flows.ruleset`);
    else (``mark`` None) every flow NATed to ``address`` (entry by entry)."""

    uplink: str
    address: str
    mark: int | None = None
    movable: bool = False


@dataclass(frozen=True)
class Outputs:
    """What the shell must do after a step, in this order: forget ``forget_neighbours``, make the
    kernel's routing equal ``routing``, publish ``events`` (in order), flush ``flushes``."""

    routing: RouteSet | None  # the routing the kernel should have now (None: no plan yet)
    probes: Mapping[str, ProbePlan]  # how to probe each uplink now (interval, source, running)
    probes6: Mapping[str, ProbePlan] = field(default_factory=dict)  # ... its IPv6 targets
    events: tuple[Event, ...] = ()
    flushes: tuple[Flush, ...] = ()  # the flows to reset (their conntrack entries)
    forget_neighbours: tuple[tuple[int, str], ...] = ()  # (ifindex, gateway) neighbour entries
    recheck_at: float | None = None  # monotonic time at which a Tick is due (None: no timer)
    reply: Mapping[str, object] | None = None  # the answer to an AdminRequest
    log: tuple[tuple[str, str], ...] = ()  # (level, message) lines for the engine's log


@dataclass
class _Step:
    """The outputs of one step as they accumulate (private to :func:`step`)."""

    state: EngineState
    now: Now
    events: list[Event] = field(default_factory=list)
    flushes: list[Flush] = field(default_factory=list)
    neighbours: list[tuple[int, str]] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    moves: list[Event] = field(default_factory=list)  # ActiveChanged: after every other event of the step
    reply: dict | None = None
    decide: bool = False  # something the policy depends on changed
    reason_prefix: str = ""

    def put(self, u: UplinkState, transitions: list[Transition] = ()) -> None:
        """Store ``u`` and turn its transitions into events (and flap penalties)."""
        stored = self.state.uplink(u.name)
        was = stored.penalty.dampened if stored is not None else u.penalty.dampened  # as the world saw it
        # (an address that went away, a DHCP rebind: its flows are reset by address when the new one comes)
        if (self.state.config.policy.sticky_flows and stored is not None and stops_working(stored, u)
                and (u.nat_address or stored.health.state == State.INIT)):
            # its flows lose their route (fwmark rule): reset, not stranded; all of them by their mark
            self.flush(u.name, u.nat_address or stored.nat_address or "", flow_mark(u.cfg.table))
            u = replace(u, left_at=None)  # nothing left behind to move later
        u = counted(u, transitions, self.now.mono, self.now.wall)
        params = dampening_params(self.state.config)
        for t in transitions:
            s = u.stats
            self.events.append(UplinkStateChanged(
                at=self.now.wall, mono=self.now.mono, uplink=u.name, interface=u.cfg.interface, old=t.old.value,
                new=t.new.value, reason=t.reason, loss_pct=s.loss_pct, rtt_ms=s.rtt_ms, jitter_ms=s.jitter_ms))
            amount = flap_penalty(t.old, t.new)
            if amount:
                u = replace(u, penalty=damp.add(u.penalty, amount, self.now.mono, params))
        if u.penalty.dampened != was:
            self.dampened(u)
        self.state = replace(self.state, uplinks=tuple(u if x.name == u.name else x for x in self.state.uplinks))
        if transitions:
            self.decide = True

    def store(self, u: UplinkState) -> None:
        """Store ``u`` (no transitions: nothing the policy depends on changed)."""
        self.state = replace(self.state, uplinks=tuple(u if x.name == u.name else x for x in self.state.uplinks))

    def dampened(self, u: UplinkState) -> None:
        p = damp.current(u.penalty, self.now.mono, dampening_params(self.state.config))
        self.events.append(UplinkDampened(self.now.wall, self.now.mono, u.name, u.penalty.dampened, round(p, 2)))
        self.decide = True

    def facts(self, u: UplinkState, facts: LinkFacts | None, initial: bool = False) -> None:
        outcome = with_facts(u, facts, self.now.mono, initial)
        if outcome.stale_nat:
            self.flush(u.name, outcome.stale_nat)
        if outcome.forget_neighbour:
            self.neighbours.append(outcome.forget_neighbour)
        self.put(outcome.uplink, outcome.transitions)
        self.decide = True  # routes follow addresses and gateways even without a state change

    def flush(self, name: str, address: str, mark: int | None = None, movable: bool = False) -> None:
        if self.state.config.policy.flush_conntrack:
            self.flushes.append(Flush(name, address, mark, movable))

    def engine_event(self, what: str, detail: str = "") -> None:
        self.events.append(EngineEvent(self.now.wall, self.now.mono, what, detail))


# ---- the step ------------------------------------------------------------------------------------


def step(state: EngineState, inp: Input, now: Now) -> tuple[EngineState, Outputs]:
    """Feed one input; return the new state and what the shell must do."""
    s = _Step(state, now)
    if type(inp) not in _HANDLERS:
        raise TypeError(f"not an engine input: {inp!r}")
    _HANDLERS[type(inp)](s, inp)
    return _finish(s, inp)


def _on_start(s: _Step, inp: Start) -> None:
    month = month_of(s.now.wall)
    s.state = replace(s.state, started=s.now.wall, uplinks=tuple(
        replace(new_uplink(u.cfg, s.now.mono, s.now.wall),
                counters=Traffic(month=month, month_bytes=inp.month_bytes.get(u.name, 0)),
                # thresholds the month had passed before the restart were raised then
                quota_warned=passed_thresholds(u.cfg, inp.month_bytes.get(u.name, 0)))
        for u in s.state.uplinks))
    s.engine_event("started", inp.detail)
    for u in s.state.uplinks:
        s.facts(u, inp.facts.get(u.cfg.interface), initial=True)
    # Restart safety: adopt what the kernel already routes through, so a restart changes nothing.
    by_ifindex = {u.facts.ifindex: u.name for u in s.state.uplinks if u.facts and u.facts.ifindex}
    adopted = tuple(dict.fromkeys(by_ifindex[i] for _, i in inp.kernel_active if i in by_ifindex))
    if adopted:
        s.log.append(("info", f"adopting active uplinks from the kernel: {','.join(adopted)}"))
    s.state = replace(s.state, active=adopted)
    s.reason_prefix = "start: "
    _flush_foreign_marks(s, inp.flow_marks)


def _flush_foreign_marks(s: _Step, before: Mapping[str, int]) -> None:
    """A restart with another config: flows marked by the previous run (its table stays in the
    kernel with the routes) whose mark no longer routes them through their interface's uplink are
    reset, as a reload would (see :func:`_flush_stranded`)."""
    for ifname, mark in sorted(before.items()):
        if mark and not _mark_holds(s, ifname, mark):
            u = next((u for u in s.state.uplinks if u.cfg.interface == ifname), None)
            s.log.append(("info", f"start: flows marked 0x{mark:x} for {ifname} by the previous run are reset"))
            s.flush(u.name if u is not None else ifname, "", mark)


def _mark_holds(s: _Step, interface: str, mark: int) -> bool:
    """Flows that left through ``interface`` with flow mark ``mark`` are still routed through it:
    an uplink on that interface has that mark (tables are numbered in file order: an uplink added
    above renumbers those below, and an old mark would route another uplink's flows), or, with
    sticky flows off, the uplink carries the traffic."""
    u = next((u for u in s.state.uplinks if u.cfg.interface == interface), None)
    if u is None:
        return False
    return flow_mark(u.cfg.table) == mark if s.state.config.policy.sticky_flows else u.name in s.state.active


def _on_round(s: _Step, inp: RoundDone) -> None:
    u = s.state.uplink(inp.uplink)
    if u is None or inp.family != 4:
        return  # a round of an uplink a reload removed, or of its IPv6 side (family6)
    u, transitions = with_round(u, tuple(inp.results), inp.seq, s.now.mono, inp.started, inp.burst)
    s.put(u, transitions)


def _on_counters(s: _Step, inp: Counters) -> None:
    month = month_of(s.now.wall)
    doubt = in_doubt(s.state)
    for u in s.state.uplinks:
        c = inp.by_interface.get(u.cfg.interface)
        if c is None:
            continue
        active = s.state.carries(u.name)
        interval = round_interval(u, active, doubt) if active else u.cfg.health.standby_interval
        new = with_counters(u, c, s.now.mono, month, active, interval)
        if new.suspect_since is not None and u.suspect_since is None:
            s.log.append(("info", f"uplink={u.name} suspect: LAN packets leave, nothing comes back; probe burst"))
        s.store(new)
        _quota(s, new)


def _quota(s: _Step, u: UplinkState) -> None:
    """Raise each quota threshold once a month."""
    quota = u.cfg.quota
    if not quota:
        return
    used = u.counters.month_bytes
    due = [p for p in u.cfg.quota_warn if used >= quota * p / 100 and p not in u.quota_warned]
    if not due:
        return
    s.store(replace(u, quota_warned=u.quota_warned + tuple(due)))
    for p in due:
        s.events.append(QuotaReached(s.now.wall, s.now.mono, u.name, p, used, quota))


def _on_facts(s: _Step, inp: FactsChanged) -> None:
    for u in s.state.uplinks:
        f = inp.facts.get(u.cfg.interface)
        if f != u.facts:
            s.facts(u, f)


def _on_admin(s: _Step, inp: AdminRequest) -> None:
    name, action, source = inp.uplink, inp.action, inp.source
    names = s.state.names
    if not isinstance(source, str) or not source.isprintable() or not 0 < len(source) <= MAX_SOURCE:
        s.reply = {"ok": False, "error": f"source: expected a printable string of 1..{MAX_SOURCE} characters"}
        return
    if not isinstance(name, str) or name not in names:
        s.reply = {"ok": False, "error": f"unknown uplink {name!r}; expected one of {', '.join(names)}"}
        return
    if action not in ADMIN_ACTIONS:
        s.reply = {"ok": False, "error": f"unknown action {action!r}; expected one of {', '.join(ADMIN_ACTIONS)}"}
        return
    u = s.state.uplink(name)
    assert u is not None
    message = f"{action} {name}"
    if action in ("disable", "enable"):
        s.put(*with_admin(u, action == "disable", s.now.mono))
    elif action == "force":
        s.state = replace(s.state, forced=name)
    else:  # auto: back to automatic choice, whichever uplink was forced
        forced = s.state.forced
        message = f"auto: force on {forced} cleared" if forced else "auto: no uplink was forced"
        s.state = replace(s.state, forced=None)
    s.log.append(("info", f"admin: {action} {name} (from {source})"))
    s.decide = True
    s.reason_prefix = f"admin {action} {name}: "
    _decide(s)  # now, so the AdminAction event can say what is active (its ActiveChanged comes after it)
    active = s.state.active
    s.events.append(AdminAction(s.now.wall, s.now.mono, action, name, source,
                                f"{message}; active: {','.join(active) or '-'}"))
    s.reply = {"ok": True, "message": message, "active": list(active)}


def _on_tick(s: _Step, inp: Tick) -> None:
    s.decide = True  # a held failback or the start-up grace may be due
    params = dampening_params(s.state.config)
    for u in s.state.uplinks:
        settled = damp.settle(u.penalty, s.now.mono, params)
        if settled != u.penalty:
            s.put(replace(u, penalty=settled))
    for u in s.state.uplinks:
        due = flows_move_at(u)
        if due is not None and s.now.mono >= due:
            s.store(replace(u, left_at=None))
            if working(u) and u.nat_address:  # one that stopped working had its flows reset then
                s.log.append(("info", f"uplink={u.name} its flows move to the active uplink: "
                                      f"{u.cfg.move_flows_after:g}s after traffic left it (move_flows_after)"))
                s.flush(u.name, u.nat_address, flow_mark(u.cfg.table), movable=True)


def flows_move_at(u: UplinkState) -> float | None:
    """When the flows left behind on ``u`` are reset (None: never, or none were left)."""
    after = u.cfg.move_flows_after
    return u.left_at + after if u.left_at is not None and after is not None else None


def _on_probe_trouble(s: _Step, inp: ProbeTrouble) -> None:
    u = s.state.uplink(inp.uplink)
    if u is not None and u.probe_error != inp.error and inp.family == 4:
        s.state = replace(s.state, uplinks=tuple(replace(x, probe_error=inp.error) if x is u else x
                                                 for x in s.state.uplinks))


def _on_period_end(s: _Step, inp: PeriodEnd) -> None:
    uplinks = []
    for u in s.state.uplinks:
        p = u.period.summary()
        counters, rx_bytes, tx_bytes = take_period(u.counters)
        s.events.append(UplinkSamples(
            at=inp.end, mono=s.now.mono, uplink=u.name, start=inp.start, sent=p.sent, lost=p.lost,
            loss_pct=p.loss_pct, rtt_avg_ms=p.rtt_avg_ms, rtt_min_ms=p.rtt_min_ms, rtt_max_ms=p.rtt_max_ms,
            jitter_ms=p.jitter_ms, rx_bytes=rx_bytes, tx_bytes=tx_bytes))
        uplinks.append(replace(u, period=Tally(), counters=counters))
    s.state = replace(s.state, uplinks=tuple(uplinks))


def _on_stop(s: _Step, inp: Stop) -> None:
    s.engine_event("stopped")


def _on_reload_failed(s: _Step, inp: ReloadFailed) -> None:
    s.log.append(("error", f"reload refused, keeping the running config: {inp.why}"))
    s.engine_event("reload_failed", inp.why)


def reload_refusal(old: Config, new: Config) -> str | None:
    """Why ``new`` cannot replace ``old`` without a restart (None: it can)."""
    if new.control != old.control or new.routing != old.routing:
        return "[control] and [routing] changes need a restart"
    return None


def _on_reload(s: _Step, inp: Reload) -> None:
    """Unchanged uplinks keep their state: a reload never fails over."""
    old, new = s.state.config, inp.config
    why = reload_refusal(old, new)
    if why:
        return _on_reload_failed(s, ReloadFailed(why))
    previous = {u.name: u for u in s.state.uplinks}
    kept, rebuilt, uplinks = [], [], []
    for cfg in new.uplinks:
        prev = previous.get(cfg.name)
        if prev is not None and same_uplink(prev.cfg, cfg):
            uplinks.append(replace(prev, cfg=cfg))  # table / rule priority may move; the state stays
            kept.append(cfg.name)
        else:
            uplinks.append(carried_over(prev, new_uplink(cfg, s.now.mono, s.now.wall)))
            rebuilt.append(cfg.name)
    if new.history != old.history:
        uplinks = [replace(u, period=Tally()) for u in uplinks]
    names = {u.name for u in uplinks}
    gone = [n for n in s.state.active if n not in names]
    s.state = replace(s.state, config=new, uplinks=tuple(uplinks),
                      forced=s.state.forced if s.state.forced in names else None,
                      active=tuple(n for n in s.state.active if n in names))
    if not old.policy.sticky_flows:
        for n in gone:
            if previous[n].nat_address:
                s.flush(n, previous[n].nat_address)
    params = dampening_params(new)
    for u in s.state.uplinks:  # dampening switched off, or milder: released now, with its event
        settled = damp.settle(u.penalty, s.now.mono, params)
        if settled.dampened != u.penalty.dampened:
            s.put(replace(u, penalty=settled))
    for name in rebuilt:
        u = s.state.uplink(name)
        assert u is not None
        s.facts(u, inp.facts.get(u.cfg.interface), initial=True)
    s.decide = True
    s.reason_prefix = "reload: "
    _decide(s)
    if old.policy.sticky_flows:
        _flush_stranded(s, previous)
    s.log.append(("info", f"config reloaded: kept {','.join(kept) or '-'}, rebuilt {','.join(rebuilt) or '-'}"))
    s.engine_event("reloaded", f"kept={kept} rebuilt={rebuilt}")


def _flush_stranded(s: _Step, previous: Mapping[str, UplinkState]) -> None:
    """After a reload, reset the flows whose flow mark no longer routes them through their own
    uplink (it is gone, renumbered, on another interface, or no longer carries the traffic with
    sticky flows off: see :func:`_mark_holds`)."""
    for name, prev in previous.items():
        mark = flow_mark(prev.cfg.table)
        if mark and not _mark_holds(s, prev.cfg.interface, mark):
            s.flush(name, prev.nat_address or "", mark)


_HANDLERS = {
    Start: _on_start, RoundDone: _on_round, FactsChanged: _on_facts, AdminRequest: _on_admin, Tick: _on_tick,
    ProbeTrouble: _on_probe_trouble, PeriodEnd: _on_period_end, Stop: _on_stop, ReloadFailed: _on_reload_failed,
    Reload: _on_reload, Counters: _on_counters, LanPrefixes: lambda s, inp: None,  # the IPv6 side's (family6)
}


# ---- deciding and planning ---------------------------------------------------------------------


def _decide(s: _Step) -> None:
    """Run the policy if anything it depends on changed; record a change of the active set."""
    if not s.decide:
        return
    s.decide = False
    st = s.state
    p = st.config.policy
    params = PolicyParams(p.mode, p.failback_hold)
    views = {u.name: view_of(u) for u in st.uplinks}
    d = decide(list(views.values()), params, st.active, s.now.mono, st.forced)
    # each policy rule chooses among its uplinks the same way (hold, dampening, healthy first)
    before, choices = dict(st.rule_choices), []
    for r in st.config.rules if p.sticky_flows else ():
        c = rule_choice([views[n] for n in r.uplinks if n in views], r.balance, params, before.get(r.name, ()),
                        s.now.mono)
        choices.append((r.name, c.active))
        if c.recheck_at is not None:
            d = replace(d, recheck_at=c.recheck_at if d.recheck_at is None else min(d.recheck_at, c.recheck_at))
    s.state = replace(st, decision=d, rule_choices=tuple(choices))
    if d.active != st.active:
        s.state = replace(s.state, active=d.active, previous_active=st.active, active_changes=st.active_changes + 1)
        s.moves.append(ActiveChanged(s.now.wall, s.now.mono, st.active, d.active, s.reason_prefix + d.reason))
        for name in st.active:
            u = st.uplink(name)
            # Without sticky flows, a flow NATed to an uplink that no longer carries traffic would
            # leave through the new one with the old source and hang: its entries go, working uplink
            # or not. With them, a working uplink keeps its flows (their fwmark rule routes them);
            # one that stopped working has its flows reset when it stops (see put()).
            if name not in d.active and u is not None and u.nat_address and not p.sticky_flows:
                s.flush(name, u.nat_address)
            elif name not in d.active and u is not None and p.sticky_flows and not working(u) and all(
                    f.mark != flow_mark(u.cfg.table) for f in s.flushes):  # a dead last resort: flows begun on it since
                s.flush(name, u.nat_address or "", flow_mark(u.cfg.table))  # its reset carry its mark (soak, issue 14)
    _activate(s)


def _activate(s: _Step) -> None:
    """Plan the kernel's routing for the current decision and facts."""
    st = s.state
    weights = st.decision.weights if st.decision is not None else ()
    try:
        sticky = st.config.policy.sticky_flows
        routes = [route_of(u, sticky) for u in st.uplinks]
        rules = st.config.rules if sticky else ()
        chosen = dict(st.rule_choices)
        routing = plan(routes, weights, routing_params(st.config), rules, chosen)
    except RoutingError as e:  # inconsistent facts from the kernel: leave the routes as they are
        s.log.append(("error", f"routing plan refused, kernel left unchanged: {e}"))
        return
    by_name = {r.name: r for r in routes}
    targets = [(r, rule_target(r, by_name, chosen.get(r.name))) for r in rules]
    # An uplink a rule sends flows to carries LAN traffic like an active one: watched as closely
    # (counters, suspicion, probe rate), or a dead rule uplink would be noticed at its standby pace.
    carrying = tuple(dict.fromkeys((*st.active, *(n for _, ns in targets for n in ns))))
    # Where movable flows go now: the active uplinks and the rules' fallbacks (flows.MOVABLE).
    hosting = tuple(dict.fromkeys((*st.active, *(n for r, ns in targets for n in ns if n not in rule_home(r)))))
    s.state = replace(st, routing=routing, carrying=carrying, hosting=hosting)
    if hosting != st.hosting:
        _left_behind(s, st.hosting, hosting)


def _left_behind(s: _Step, before: tuple[str, ...], now: tuple[str, ...]) -> None:
    """Note when movable flows were left behind on an uplink that still works (``move_flows_after``
    counts from then): traffic moved away from it (failback, DEGRADED) or a rule that fell back to
    it has its first choice again. One that gets such traffic again has its flows where they belong."""
    sticky = s.state.config.policy.sticky_flows
    for u in s.state.uplinks:
        if u.name in now:
            left = None
        elif u.name in before:
            left = s.now.mono if sticky and working(u) else None
        else:
            continue
        if left != u.left_at:
            s.store(replace(u, left_at=left))


def in_doubt(state: EngineState) -> bool:
    """An active uplink is suspect, FALLING or DOWN: every uplink is probed at full rate. Not when
    it is DEGRADED, starting or RISING (with nothing better, for a while): a standby on a data
    budget would pay for that at 10 rounds a second."""
    return any(u.suspect_since is not None or u.health.state in (State.FALLING, State.DOWN) for u in state.uplinks
               if state.carries(u.name))


def probe_plans(state: EngineState, plans6: dict[str, ProbePlan] | None = None) -> dict[str, ProbePlan]:
    """The IPv4 plans (``plans6``: the IPv6 side's, made here unless given: they share the counters)."""
    return plans(state.uplinks, state.active, state.carries, in_doubt(state), state.config.policy.mode == "balance",
                 others=probe_plans6(state.v6, state.config) if plans6 is None else plans6)


def dampening_params(config: Config) -> DampeningParams:
    return damp.params_of(config.policy)


def _recheck_at(st: EngineState) -> float | None:
    """The next Tick the core needs: a held failback, a start-up grace, a dampening that ends."""
    params = dampening_params(st.config)
    times = [t for u in st.uplinks for t in (damp.reuse_at(u.penalty, params), flows_move_at(u)) if t is not None]
    if st.decision is not None and st.decision.recheck_at is not None:
        times.append(st.decision.recheck_at)
    return min(times) if times else None


def routing_of(state: EngineState) -> RouteSet | None:
    """The routing the kernel should have now: the IPv4 plan and the IPv6 side's, together."""
    return merged(state.routing, state.v6.routing)


def _finish(s: _Step, inp: Input) -> tuple[EngineState, Outputs]:
    _decide(s)
    six = step6(s.state.v6, inp, s.now, s.state.config, s.state.uplinks, s.state.forced)
    if six.side is not s.state.v6:
        s.state = replace(s.state, v6=six.side)
    st = s.state
    for name, address in six.flushes:
        s.flush(name, address)
    s.events.extend(six.events)
    s.neighbours.extend(six.neighbours)
    recheck = min((t for t in (_recheck_at(st), six.recheck_at) if t is not None), default=None)
    plans6 = probe_plans6(st.v6, st.config)
    return st, Outputs(
        routing=routing_of(st), probes=probe_plans(st, plans6), probes6=plans6,
        events=tuple(s.events + s.moves), flushes=tuple(s.flushes), forget_neighbours=tuple(s.neighbours),
        recheck_at=recheck, reply=s.reply or six.reply, log=tuple(s.log) + six.log)
