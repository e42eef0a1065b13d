"""Policy: uplink states + config -> which uplinks carry traffic. Pure: no clock, no I/O.

Rules, in order:

1. An admin-forced uplink carries all traffic while it can (usable and routable); if it cannot,
   the automatic choice below applies and the reason says so (never a router with no way out).
2. Healthy uplinks (UP, or FALLING: not yet proven down) beat DEGRADED ones; among them, the lowest
   ``priority`` tier wins (``failover``), or every one of them carries traffic (``balance``).
3. Failback: an uplink that recovered less than ``failback_hold`` ago does not take traffic from a
   current active set that still works. If the current set no longer works, the best uplink takes
   over at once, recovered or not.
4. While an uplink that would be preferred is still INIT (the engine just started), keep what the
   kernel already has: a restart never causes a failover. An uplink of the current set that is
   still INIT (adopted from the kernel at a restart, rebuilt by a reload) is presumed to work for
   ``init_grace`` at most: the current set stays until its uplinks have been probed.
5. Flap dampening: an uplink that kept failing (its penalty past ``flap_suppress``) takes no
   traffic back while another uplink works, until its penalty has decayed.
6. If no uplink works, keep the current active set if it can still be routed (fail-static: the
   probes may be wrong, the kernel route may not), else every routable uplink of the best tier;
   when nothing is routable, the active table is empty and the main table's default remains.
   When nothing has been probed yet (start-up), the reason says so: it is not an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from linkwatch.core.states import HEALTHY, USABLE, State


@dataclass(frozen=True)
class UplinkView:
    name: str
    state: State
    priority: int
    weight: int = 1
    routable: bool = True  # carrier + address + gateway: a route through it can exist
    working_since: float = 0.0  # when it last became working (or recovered from DEGRADED)
    degraded: bool = False  # quality is bad (DEGRADED, or FALLING/RISING from DEGRADED)
    since: float = 0.0  # when it entered its current state
    dampened: bool = False  # it kept failing: it takes no traffic back until its penalty decays


@dataclass(frozen=True)
class PolicyParams:
    mode: str = "failover"  # or "balance"
    failback_hold: float = 10.0
    init_grace: float = 5.0  # at most this long after a (re)start, wait for a preferred INIT uplink


@dataclass(frozen=True)
class Decision:
    active: tuple[str, ...]
    weights: tuple[tuple[str, int], ...]
    reason: str
    recheck_at: float | None = None  # a held failback, or a start-up grace, ends then: decide again


def _healthy(v: UplinkView) -> bool:
    return v.state in HEALTHY and not v.degraded


def _rank(v: UplinkView) -> tuple[int, int]:
    """Lower is better. An INIT uplink only gets here when presumed to work: ranked as healthy."""
    return (0 if _healthy(v) or v.state == State.INIT else 1, v.priority)


def _decision(chosen: Sequence[UplinkView], reason: str, recheck_at: float | None = None) -> Decision:
    chosen = sorted(chosen, key=lambda v: (v.priority, v.name))
    return Decision(tuple(v.name for v in chosen), tuple((v.name, v.weight) for v in chosen), reason, recheck_at)


def _presumed(v: UplinkView, now: float, params: PolicyParams) -> bool:
    return v.state == State.INIT and v.routable and now - v.since < params.init_grace


def _best_set(candidates: Sequence[UplinkView], mode: str) -> list[UplinkView]:
    best = min(_rank(v) for v in candidates)
    if mode == "balance":
        return [v for v in candidates if _rank(v)[0] == best[0]]
    return [v for v in candidates if _rank(v) == best]


def decide(
    uplinks: Sequence[UplinkView],
    params: PolicyParams,
    current: Sequence[str],
    now: float,
    forced: str | None = None,
) -> Decision:
    by_name = {v.name: v for v in uplinks}
    working = [v for v in uplinks if v.state in USABLE and v.routable]
    note = ""

    if forced is not None:
        f = by_name.get(forced)
        if f is not None and f in working:
            return _decision([f], f"forced by admin to {forced}")
        note = f"forced uplink {forced} is not usable ({f.state if f else 'unknown'}); "

    cur = [by_name[n] for n in current if n in by_name]
    if not working:
        return _none_working(uplinks, cur, note)
    # A flapping uplink does not take traffic back while another works (it keeps what it has).
    dampened = [v for v in working if v.dampened and v.name not in current]
    if dampened and len(dampened) < len(working):
        working = [v for v in working if v not in dampened]
        if any(_rank(v) <= min(_rank(w) for w in working) for v in dampened):
            note += f"{_names(dampened)} dampened (flapping); "

    # A restart must not fail over: while a better-or-equal uplink is still INIT, keep the kernel's choice.
    best_known = min(_rank(v) for v in working)
    undecided = [v for v in uplinks if v.state == State.INIT and v.routable and (0, v.priority) < best_known
                 and now - v.since < params.init_grace]
    if undecided and all(v.state == State.INIT or v in working for v in cur):
        keep = [v for v in cur if v.routable]
        if keep:  # with nothing to keep, waiting would leave working uplinks unused
            names = ", ".join(v.name for v in undecided)
            return _decision(keep, note + f"waiting for {names} to be probed",
                             recheck_at=min(v.since for v in undecided) + params.init_grace)

    # An uplink of the current set not probed yet (adopted from the kernel at a restart, rebuilt by
    # a reload) is presumed to work until its rounds say otherwise, for init_grace at most: a
    # restart does not move traffic.
    presumed = [v for v in cur if _presumed(v, now, params)]
    if presumed and all(v in working or v in presumed for v in cur):
        return _decision(cur, note + f"{_names(presumed)} not probed yet: keeping {_names(cur)}",
                         recheck_at=min(v.since for v in presumed) + params.init_grace)
    d = _choose(working + presumed, cur, params, now, note)
    if presumed:
        end = min(v.since for v in presumed) + params.init_grace
        d = replace(d, recheck_at=end if d.recheck_at is None else min(d.recheck_at, end))
    return d


def rule_choice(uplinks: Sequence[UplinkView], balance: bool, params: PolicyParams, current: Sequence[str],
                now: float) -> Decision:
    """Where a policy rule sends its new flows: ``uplinks`` in the rule's order of preference,
    chosen the way the active set is (healthy before DEGRADED, a flapping uplink kept out while
    another works, a recovered earlier choice waiting out ``failback_hold``); all of the best of
    them with ``balance``. Nothing when none of them works (the rule's fallback decides). At
    start-up (no choice yet) an earlier choice not probed yet is chosen for ``init_grace`` at most:
    the caller sends the flows on to the next one that works meanwhile, and the first choice
    working then is no failback to hold. Once the rule has a choice, an uplink rebuilt by a reload
    is judged like any recovered one (hold, dampening)."""
    ranked = [replace(v, priority=i) for i, v in enumerate(uplinks)]
    best = min((v.priority for v in ranked if v.state in USABLE and v.routable), default=len(ranked))
    pending = [v for v in ranked[:best] if _presumed(v, now, params)]
    if pending and not current:
        return Decision((pending[0].name,), ((pending[0].name, pending[0].weight),),
                        f"waiting for {pending[0].name} to be probed", recheck_at=pending[0].since + params.init_grace)
    if not any(v.state in USABLE and v.routable for v in ranked):
        return Decision((), (), "none of its uplinks works")
    mode = "balance" if balance else "failover"
    return decide(ranked, replace(params, mode=mode), [n for n in current if n in {v.name for v in ranked}], now)


def _choose(pool: Sequence[UplinkView], cur: Sequence[UplinkView], params: PolicyParams, now: float,
            note: str) -> Decision:
    """The best of ``pool`` (uplinks that work, or are presumed to), unless failback_hold says wait."""
    target = _best_set(pool, params.mode)
    cur_working = [v for v in cur if v in pool]
    if cur_working and set(v.name for v in target) != set(v.name for v in cur_working):
        # A change is due. Recovered uplinks wait out failback_hold while the current set still works.
        held = [v for v in target if v not in cur_working and now - v.working_since < params.failback_hold]
        cur_rank = min(_rank(v) for v in cur_working)
        if held and len(cur_working) == len(cur):
            due = min(v.working_since + params.failback_hold for v in held)
            if params.mode == "balance":
                ready = [v for v in target if v not in held]
                if ready:
                    return _decision(ready, note + f"failback of {_names(held)} held until stable",
                                     recheck_at=due)
            elif cur_rank[0] == 0 or _rank(held[0])[0] != 0:
                # The current uplink is healthy (or the newcomer is no better in kind): wait out the hold.
                return _decision(cur_working, note + f"failback to {_names(held)} in {due - now:.1f}s",
                                 recheck_at=due)
    return _decision(target, note + _why(target))


def _names(vs: Sequence[UplinkView]) -> str:
    return ",".join(v.name for v in vs)


def _why(target: Sequence[UplinkView]) -> str:
    unprobed = [v for v in target if v.state == State.INIT]
    kind = "healthy" if _rank(target[0])[0] == 0 else "degraded (no healthy uplink)"
    more = f" ({_names(unprobed)} not probed yet, presumed to work)" if unprobed else ""
    return f"{_names(target)} {kind}, priority {target[0].priority}{more}"


def _none_working(uplinks: Sequence[UplinkView], cur: Sequence[UplinkView], note: str) -> Decision:
    """No uplink is known to work: keep a way out (fail-static), and say whether that is because
    nothing was probed yet (start-up) or because every probed uplink failed."""
    candidates = [v for v in uplinks if v.routable and v.state != State.DISABLED]
    unprobed = [v for v in candidates if v.state == State.INIT]
    starting = bool(candidates) and len(unprobed) == len(candidates)
    if starting:
        why = "not probed yet; "
    else:
        why = "no uplink works" + (f" ({_names(unprobed)} not probed yet)" if unprobed else "") + "; "
    keep = [v for v in cur if v in candidates]
    if keep:
        rest = f"keeping {_names(keep)} until the probes answer" if starting else f"keeping {_names(keep)} (fail-static)"
        return _decision(keep, note + why + rest)
    if candidates:
        best = min(v.priority for v in candidates)
        tier = [v for v in candidates if v.priority == best]
        rest = (f"{_names(tier)} (priority {best}) until the probes answer" if starting
                else f"last resort {_names(tier)}")
        return _decision(tier, note + why + rest)
    return _decision([], note + "no uplink works or can be routed; main table default remains")
